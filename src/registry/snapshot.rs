//! [`KeySnapshot`]: the keys of one moment, with their JWKS bytes and ETag
//! built once.

use std::fmt;

use bytes::Bytes;
use http::HeaderValue;

use super::published::PublishedKey;
use crate::b64;
use crate::keys::KeyState;

/// An immutable view of the registry at one moment.
///
/// The active key, when there is one, is always among the published keys,
/// and [`jwks_bytes`](Self::jwks_bytes) is the serialised JWK Set of exactly
/// these keys.
pub struct KeySnapshot {
    version: u64,
    keys: Vec<PublishedKey>,
    jwks: Bytes,
    etag: HeaderValue,
}

impl KeySnapshot {
    /// Builds the snapshot of `keys`: sorts them, serialises the JWK Set and
    /// hashes it into the ETag.
    pub(super) fn build(version: u64, mut keys: Vec<PublishedKey>) -> Self {
        // Active first, then next keys, then retiring ones: a stable,
        // readable order.
        keys.sort_by_key(|key| match key.state() {
            KeyState::Active => 0,
            KeyState::Next => 1,
            KeyState::Retiring => 2,
        });
        let (jwks, etag) = jwk_set(&keys);
        KeySnapshot {
            version,
            keys,
            jwks,
            etag,
        }
    }

    /// A number that grows with every change of the registry.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The key that signs, if any.
    pub fn active(&self) -> Option<&PublishedKey> {
        self.keys.iter().find(|k| k.state() == KeyState::Active)
    }

    /// Every published key: active first, then next, then retiring.
    pub fn keys(&self) -> &[PublishedKey] {
        &self.keys
    }

    /// The published key with this kid.
    pub fn get(&self, kid: &str) -> Option<&PublishedKey> {
        self.keys.iter().find(|k| k.kid().as_str() == kid)
    }

    /// The JWK Set (`{"keys":[...]}`) of the published keys, serialised once
    /// when the snapshot was built.
    pub fn jwks_bytes(&self) -> &Bytes {
        &self.jwks
    }

    /// A strong ETag of [`jwks_bytes`](Self::jwks_bytes), quoted, ready for
    /// an `ETag` header.
    pub fn etag(&self) -> &HeaderValue {
        &self.etag
    }
}

/// The JWK Set (`{"keys":[...]}`) of `keys`, in their order, and its strong
/// ETag: what a snapshot, and a set merged from several registries
/// ([`JwksSource::merged`](crate::jwks::JwksSource::merged)), serve.
pub(crate) fn jwk_set(keys: &[PublishedKey]) -> (Bytes, HeaderValue) {
    let jwks = serde_json::to_vec(&serde_json::json!({
        "keys": keys.iter().map(|k| k.public_jwk()).collect::<Vec<_>>(),
    }))
    .expect("public JWKs always serialise");
    let etag = strong_etag(&jwks);
    (Bytes::from(jwks), etag)
}

/// A strong ETag of `bytes`: 144 bits of their SHA-256, base64url, quoted.
pub(crate) fn strong_etag(bytes: &[u8]) -> HeaderValue {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let etag = format!("\"{}\"", b64::encode(&digest.as_ref()[..18]));
    HeaderValue::from_str(&etag).expect("base64url is a valid header value")
}

impl fmt::Debug for KeySnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySnapshot")
            .field("version", &self.version)
            .field("keys", &self.keys)
            .field("etag", &self.etag)
            .finish_non_exhaustive()
    }
}

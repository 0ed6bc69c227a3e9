//! A key as Redis holds it: its public metadata in the clear, its private
//! JWK sealed under a [`Kek`] with AES-256-GCM.
//!
//! ```json
//! {"v":1,"kid":"…","alg":"ES256","state":"active","created_at":1767225600,
//!  "activated_at":1767225600,"activates_at":null,"retires_at":null,
//!  "kek":"5f0c…","nonce":"…","ciphertext":"…"}
//! ```
//!
//! The associated data binds the ciphertext to the fleet's prefix, the kid,
//! the KEK id and every metadata field: a record copied under another kid
//! or into another fleet, or whose state or times were edited in Redis,
//! does not decrypt.
//!
//! A key kept in a device (a PKCS#11 token) is stored as a record of format
//! 2, the same members with `"v":2`: what is sealed is its
//! [`KeyReference`] (where the key is, and its public key) instead of a
//! private JWK. Nothing in it is secret; sealing it keeps the records of
//! both kinds bound to their metadata the same way, so a reference edited
//! in Redis (pointed at another key of the token) does not open either.
//! Records of format 1 read as before.
//!
//! A certificate-backed key is a record of format 3: format 1 whose sealed
//! private JWK also holds the key's X.509 chain (`x5c`, `x5t#S256`). The
//! chain is public, but it travels inside the ciphertext, so it is bound to
//! the key and its metadata like the rest: it cannot be swapped for another
//! in Redis. A build older than chains refuses the record (its version)
//! instead of loading the key without its chain.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::aead::NONCE_LEN;
use serde_json::{Map, Value};

use super::kek::Kek;
use crate::b64;
use crate::clock::unix_seconds;
use crate::keys::{Algorithm, KeyReference, KeyState, SigningKey};
use crate::store::{StoreError, StoredKey};

/// The record format of a private key (read and written).
const FORMAT_VERSION: u64 = 1;
/// The record format of a reference to a key kept in a device (read and
/// written).
const REFERENCE_FORMAT_VERSION: u64 = 2;
/// The record format of a private key with its certificate chain (read and
/// written).
const CHAIN_FORMAT_VERSION: u64 = 3;
/// No record is larger (an RSA-8192 private JWK, the largest key, is about
/// 10 KiB before encryption).
pub(super) const MAX_RECORD_LEN: usize = 256 * 1024;

/// The record's metadata, as the associated data covers it.
struct Meta<'a> {
    version: u64,
    kid: &'a str,
    alg: Algorithm,
    state: KeyState,
    created_at: u64,
    activated_at: Option<u64>,
    activates_at: Option<u64>,
    retires_at: Option<u64>,
    kek: &'a str,
}

impl Meta<'_> {
    /// One line per field, in a fixed order: nothing in a field can pass
    /// for another (a prefix, a kid and a KEK id hold no newline).
    fn associated_data(&self, prefix: &str) -> Vec<u8> {
        let time = |at: Option<u64>| at.map_or_else(|| "-".to_owned(), |at| at.to_string());
        format!(
            "tower-jwt-signer redis record v{}\n{prefix}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}",
            self.version,
            self.kid,
            self.kek,
            self.alg,
            self.state.as_str(),
            self.created_at,
            time(self.activated_at),
            time(self.activates_at),
            time(self.retires_at),
        )
        .into_bytes()
    }
}

/// Encrypts `key` under `kek` as a record of the fleet `prefix`.
pub(super) fn seal(prefix: &str, key: &StoredKey, kek: &Kek) -> Result<Vec<u8>, StoreError> {
    let (version, plaintext) = match (key.key(), key.reference()) {
        (Some(private), _) => (
            if private.certificate_chain().is_some() {
                CHAIN_FORMAT_VERSION
            } else {
                FORMAT_VERSION
            },
            private.to_private_jwk().map_err(|err| {
                StoreError::Other(format!("key {:?} cannot be exported: {err}", key.kid()).into())
            })?,
        ),
        (None, Some(reference)) => (REFERENCE_FORMAT_VERSION, reference.to_json().to_string()),
        (None, None) => unreachable!("a stored key holds a private key or a reference"),
    };
    let meta = Meta {
        version,
        kid: key.kid().as_str(),
        alg: key.algorithm(),
        state: key.state(),
        created_at: unix_seconds(key.created_at()),
        activated_at: key.activated_at().map(unix_seconds),
        activates_at: key.activates_at().map(unix_seconds),
        retires_at: key.retires_at().map(unix_seconds),
        kek: kek.id(),
    };
    let (nonce, ciphertext) = kek.seal(&meta.associated_data(prefix), plaintext.as_bytes());
    let record = serde_json::json!({
        "v": meta.version,
        "kid": meta.kid,
        "alg": meta.alg.as_str(),
        "state": meta.state.as_str(),
        "created_at": meta.created_at,
        "activated_at": meta.activated_at,
        "activates_at": meta.activates_at,
        "retires_at": meta.retires_at,
        "kek": meta.kek,
        "nonce": b64::encode(nonce),
        "ciphertext": b64::encode(ciphertext),
    });
    Ok(serde_json::to_vec(&record).expect("a JSON value serialises"))
}

/// What a record says about itself without decrypting it.
#[derive(Debug)]
pub(super) struct Opened {
    pub(super) key: StoredKey,
    /// The id of the KEK it is encrypted under.
    pub(super) kek: String,
}

/// Parses and decrypts the record stored under `field`. Errors name the
/// kid (the field) and never quote a value that could be key material.
pub(super) fn open(
    prefix: &str,
    field: &[u8],
    bytes: &[u8],
    keks: &[Kek],
    store: &str,
) -> Result<Opened, StoreError> {
    let field_kid: String = String::from_utf8_lossy(field).chars().take(64).collect();
    let corrupt = |reason: String| StoreError::CorruptRecord {
        store: store.to_owned(),
        kid: field_kid.clone(),
        reason,
    };
    if bytes.len() > MAX_RECORD_LEN {
        return Err(corrupt(format!(
            "is larger than {} KiB",
            MAX_RECORD_LEN / 1024
        )));
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|err| {
        corrupt(format!(
            "is not valid JSON (line {} column {})",
            err.line(),
            err.column()
        ))
    })?;
    let Value::Object(map) = value else {
        return Err(corrupt("is not a JSON object".to_owned()));
    };
    let mut members = Members {
        map,
        corrupt: &corrupt,
    };
    let version = match members.take("v")?.as_u64() {
        Some(version @ (FORMAT_VERSION | REFERENCE_FORMAT_VERSION | CHAIN_FORMAT_VERSION)) => {
            version
        }
        _ => {
            return Err(corrupt(format!(
                "has a \"v\" other than {FORMAT_VERSION} (a private key), {REFERENCE_FORMAT_VERSION} (a reference to a key in a device) or {CHAIN_FORMAT_VERSION} (a private key with its certificate chain), the record formats this build reads"
            )));
        }
    };
    let kid = members.string("kid")?;
    if kid.as_bytes() != field {
        return Err(corrupt(format!(
            "says kid {:?}: it was moved from another kid",
            kid.chars().take(64).collect::<String>()
        )));
    }
    let alg: Algorithm = members
        .string("alg")?
        .parse()
        .map_err(|_| corrupt("has an \"alg\" this build does not know".to_owned()))?;
    let state = match members.string("state")?.as_str() {
        "next" => KeyState::Next,
        "active" => KeyState::Active,
        "retiring" => KeyState::Retiring,
        _ => {
            return Err(corrupt(
                "has a \"state\" other than \"next\", \"active\" or \"retiring\"".to_owned(),
            ));
        }
    };
    let created_at = members.time("created_at")?;
    let activated_at = members.optional_time("activated_at")?;
    let activates_at = members.optional_time("activates_at")?;
    let retires_at = members.optional_time("retires_at")?;
    let kek_id = members.string("kek")?;
    let nonce: [u8; NONCE_LEN] = b64::decode(members.string("nonce")?)
        .ok()
        .and_then(|nonce| nonce.try_into().ok())
        .ok_or_else(|| corrupt("has a \"nonce\" that is not 12 bytes of base64url".to_owned()))?;
    let ciphertext = b64::decode(members.string("ciphertext")?)
        .map_err(|_| corrupt("has a \"ciphertext\" that is not base64url".to_owned()))?;
    if let Some(extra) = members.map.keys().next() {
        return Err(corrupt(format!(
            "has an unknown member {:?}",
            extra.chars().take(64).collect::<String>()
        )));
    }
    let Some(kek) = keks.iter().find(|kek| kek.id() == kek_id) else {
        let configured: Vec<&str> = keks.iter().map(Kek::id).collect();
        return Err(corrupt(format!(
            "is encrypted under key-encryption key {:?}, which is not configured here (configured: {configured:?}): a wrong KEK",
            kek_id.chars().take(64).collect::<String>()
        )));
    };
    let meta = Meta {
        version,
        kid: &kid,
        alg,
        state,
        created_at: unix_seconds(created_at),
        activated_at: activated_at.map(unix_seconds),
        activates_at: activates_at.map(unix_seconds),
        retires_at: retires_at.map(unix_seconds),
        kek: &kek_id,
    };
    let plain = kek
        .open(nonce, &meta.associated_data(prefix), &ciphertext)
        .ok_or_else(|| {
            corrupt(format!(
                "does not decrypt under key-encryption key {kek_id}: it was altered in Redis, or copied from another kid or another fleet (prefix)"
            ))
        })?;
    let stored = if version == REFERENCE_FORMAT_VERSION {
        let value: Value = serde_json::from_slice(&plain)
            .map_err(|_| corrupt("decrypts to something that is not a key reference".to_owned()))?;
        let kid = crate::keys::Kid::new(&kid)
            .map_err(|err| corrupt(format!("has a kid that is refused: {err}")))?;
        let reference = KeyReference::from_json(value, alg, &kid)
            .map_err(|reason| corrupt(format!("holds a reference that was refused: {reason}")))?;
        StoredKey::from_reference(reference, state, created_at)
    } else {
        let jwk = std::str::from_utf8(&plain)
            .map_err(|_| corrupt("decrypts to something that is not a JWK".to_owned()))?;
        let key = SigningKey::from_jwk(jwk, Some(alg))
            .map_err(|err| corrupt(format!("holds a key that was refused: {err}")))?;
        if key.kid().as_str() != kid {
            return Err(corrupt(format!(
                "holds a key whose kid is {:?}",
                key.kid().as_str()
            )));
        }
        if (version == CHAIN_FORMAT_VERSION) != key.certificate_chain().is_some() {
            return Err(corrupt(format!(
                "is of format {version} but its key {} a certificate chain",
                if key.certificate_chain().is_some() {
                    "has"
                } else {
                    "has no"
                }
            )));
        }
        StoredKey::new(key, state, created_at)
    };
    Ok(Opened {
        key: stored
            .with_activated_at(activated_at)
            .with_activates_at(activates_at)
            .with_retires_at(retires_at),
        kek: kek_id,
    })
}

/// The members of a record, taken one by one.
struct Members<'a, F: Fn(String) -> StoreError> {
    map: Map<String, Value>,
    corrupt: &'a F,
}

impl<F: Fn(String) -> StoreError> Members<'_, F> {
    fn take(&mut self, name: &str) -> Result<Value, StoreError> {
        self.map
            .remove(name)
            .ok_or_else(|| (self.corrupt)(format!("has no \"{name}\"")))
    }

    fn string(&mut self, name: &str) -> Result<String, StoreError> {
        match self.take(name)? {
            Value::String(text) => Ok(text),
            _ => Err((self.corrupt)(format!(
                "has a \"{name}\" that is not a string"
            ))),
        }
    }

    fn time(&mut self, name: &str) -> Result<SystemTime, StoreError> {
        let value = self.take(name)?;
        self.to_time(name, &value)
    }

    fn optional_time(&mut self, name: &str) -> Result<Option<SystemTime>, StoreError> {
        match self.map.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => self.to_time(name, &value).map(Some),
        }
    }

    fn to_time(&self, name: &str, value: &Value) -> Result<SystemTime, StoreError> {
        value
            .as_u64()
            .and_then(|secs| UNIX_EPOCH.checked_add(Duration::from_secs(secs)))
            .ok_or_else(|| {
                (self.corrupt)(format!(
                    "has a \"{name}\" that is not a time in whole seconds since 1970"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> StoredKey {
        StoredKey::new(
            SigningKey::generate(Algorithm::ES256).unwrap(),
            KeyState::Active,
            SystemTime::now(),
        )
        .with_activated_at(Some(SystemTime::now()))
    }

    fn reason(err: StoreError) -> String {
        match err {
            StoreError::CorruptRecord { reason, .. } => reason,
            other => panic!("not a corrupt record: {other}"),
        }
    }

    /// A key with a self-signed certificate made with rcgen.
    fn certified() -> StoredKey {
        let rc_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["gateway.test".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2090, 1, 1);
        let chain = params.self_signed(&rc_key).unwrap().pem();
        let key = SigningKey::from_pem_with_certificate_chain(
            rc_key.serialize_pem(),
            chain,
            Algorithm::ES256,
        )
        .unwrap();
        StoredKey::new(key, KeyState::Active, SystemTime::now())
    }

    #[test]
    fn a_key_with_its_chain_is_a_record_of_format_3_whose_chain_is_sealed() {
        let kek = Kek::generate();
        let key = certified();
        let kid = key.kid().as_str().as_bytes().to_vec();
        let sealed = seal("fleet", &key, &kek).unwrap();
        let record: Value = serde_json::from_slice(&sealed).unwrap();
        assert_eq!(record["v"], 3);
        // The chain is inside the ciphertext, not beside it.
        let x5t = key.public_jwk().certificate_chain().unwrap().x5t_s256();
        let text = String::from_utf8(sealed.clone()).unwrap();
        assert!(!text.contains(x5t), "{text}");
        let opened = open("fleet", &kid, &sealed, std::slice::from_ref(&kek), "s").unwrap();
        assert_eq!(opened.key, key);
        assert_eq!(
            opened.key.key().unwrap().certificate_chain(),
            key.key().unwrap().certificate_chain()
        );
        // Relabelled as format 1 (an older build's format): the associated
        // data says 3, so it does not decrypt.
        let relabelled = text.replace("\"v\":3", "\"v\":1");
        let err = reason(
            open(
                "fleet",
                &kid,
                relabelled.as_bytes(),
                std::slice::from_ref(&kek),
                "s",
            )
            .unwrap_err(),
        );
        assert!(err.contains("does not decrypt"), "{err}");
    }

    #[test]
    fn a_record_opens_under_its_prefix_kid_and_kek_only() {
        let (kek, other) = (Kek::generate(), Kek::generate());
        let key = key();
        let kid = key.kid().as_str().as_bytes().to_vec();
        let sealed = seal("fleet", &key, &kek).unwrap();
        let opened = open("fleet", &kid, &sealed, &[other.clone(), kek.clone()], "s").unwrap();
        assert_eq!(opened.key, key);
        assert_eq!(opened.kek, kek.id());

        let text = String::from_utf8(sealed.clone()).unwrap();
        let jwk: Value =
            serde_json::from_str(&key.key().unwrap().to_private_jwk().unwrap()).unwrap();
        assert!(!text.contains(jwk["d"].as_str().unwrap()), "{text}");

        let wrong = reason(open("fleet", &kid, &sealed, &[other], "s").unwrap_err());
        assert!(wrong.contains("not configured here"), "{wrong}");
        let fleet =
            reason(open("other", &kid, &sealed, std::slice::from_ref(&kek), "s").unwrap_err());
        assert!(fleet.contains("does not decrypt"), "{fleet}");
        let moved = reason(
            open(
                "fleet",
                b"another-kid",
                &sealed,
                std::slice::from_ref(&kek),
                "s",
            )
            .unwrap_err(),
        );
        assert!(moved.contains("moved from another kid"), "{moved}");

        // The kid edited to match the field it was moved to: the
        // associated data still says the old kid.
        let forged = text.replace(key.kid().as_str(), "another-kid");
        let forged = reason(
            open(
                "fleet",
                b"another-kid",
                forged.as_bytes(),
                std::slice::from_ref(&kek),
                "s",
            )
            .unwrap_err(),
        );
        assert!(forged.contains("does not decrypt"), "{forged}");
        // The state edited in Redis: refused too.
        let edited = text.replace("\"active\"", "\"retiring\"");
        let edited = reason(
            open(
                "fleet",
                &kid,
                edited.as_bytes(),
                std::slice::from_ref(&kek),
                "s",
            )
            .unwrap_err(),
        );
        assert!(edited.contains("does not decrypt"), "{edited}");
        let garbage = reason(open("fleet", &kid, b"{not json", &[kek], "s").unwrap_err());
        assert!(garbage.contains("not valid JSON"), "{garbage}");
    }

    #[test]
    fn a_reference_is_a_record_of_format_2_that_holds_no_key_material_and_is_bound_like_v1() {
        let key = SigningKey::generate(Algorithm::EdDSA).unwrap();
        let x = crate::b64::decode(key.public_jwk().to_value()["x"].as_str().unwrap()).unwrap();
        let reference = KeyReference::new(
            "pkcs11",
            [("token", "gateway"), ("label", "k")],
            &crate::keys::spki::ed25519(&x),
            Algorithm::EdDSA,
            None,
        )
        .unwrap();
        let stored = StoredKey::from_reference(reference, KeyState::Next, SystemTime::now());
        let kek = Kek::generate();
        let kid = stored.kid().as_str().as_bytes().to_vec();
        let sealed = seal("fleet", &stored, &kek).unwrap();
        let record: Value = serde_json::from_slice(&sealed).unwrap();
        assert_eq!(record["v"], 2);
        let opened = open("fleet", &kid, &sealed, std::slice::from_ref(&kek), "s").unwrap();
        assert_eq!(opened.key, stored);
        assert!(opened.key.key().is_none());
        // Edited in Redis (its state, or passed off as format 1): refused.
        let text = String::from_utf8(sealed).unwrap();
        for edited in [
            text.replace("\"next\"", "\"active\""),
            text.replace("\"v\":2", "\"v\":1"),
        ] {
            let err = reason(
                open(
                    "fleet",
                    &kid,
                    edited.as_bytes(),
                    std::slice::from_ref(&kek),
                    "s",
                )
                .unwrap_err(),
            );
            assert!(err.contains("does not decrypt"), "{err}");
        }
    }
}

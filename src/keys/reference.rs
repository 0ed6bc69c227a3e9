//! [`KeyReference`]: where a key that never leaves its device is kept.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

use super::{Algorithm, KeyError, Kid, PublicJwk};
use crate::b64;

/// The most attributes a reference holds.
const MAX_ATTRIBUTES: usize = 16;
/// The longest provider or attribute name, in bytes.
const MAX_NAME_LEN: usize = 32;
/// The longest attribute value, in bytes.
const MAX_VALUE_LEN: usize = 1024;
/// The longest public key (DER SubjectPublicKeyInfo) a reference holds: an
/// RSA-16384 key is about 2 KiB.
const MAX_PUBLIC_KEY_LEN: usize = 4096;

/// Where a private key that never leaves its device is kept (a PKCS#11
/// token, a KMS), with its public key: what a
/// [`KeyStore`](crate::store::KeyStore) keeps of such a key instead of key
/// material.
///
/// A reference names its `provider` (`"pkcs11"`) and holds the
/// provider's attributes (for PKCS#11: the module, the token label, the key
/// label and id), all public. It also holds the key's public key, checked
/// like [`PublicJwk::from_spki_der`] checks one, so that a store can publish
/// its kid and algorithm, and so that the key found again after a restart
/// can be checked to be the very key that was stored: a
/// [`KeyFactory`](super::KeyFactory) opens it, and the registry refuses a
/// key whose public key differs.
///
/// ```
/// use tower_jwt_signer::keys::KeyReference;
/// use tower_jwt_signer::Algorithm;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // The public key the device gives, as a DER SubjectPublicKeyInfo (here
/// // the Ed25519 key of RFC 8032's first test vector).
/// let spki_der = [
///     &[0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00][..],
///     &[0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7, 0xd5, 0x4b, 0xfe, 0xd3, 0xc9, 0x64,
///       0x07, 0x3a, 0x0e, 0xe1, 0x72, 0xf3, 0xda, 0xa6, 0x23, 0x25, 0xaf, 0x02, 0x1a, 0x68,
///       0xf7, 0x07, 0x51, 0x1a],
/// ]
/// .concat();
/// let reference = KeyReference::new(
///     "pkcs11",
///     [("token", "gateway"), ("label", "signing-key")],
///     &spki_der,
///     Algorithm::EdDSA,
///     None,
/// )?;
/// assert_eq!(reference.provider(), "pkcs11");
/// assert_eq!(reference.attribute("token"), Some("gateway"));
/// assert_eq!(reference.kid().as_str(), reference.public_jwk().thumbprint());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct KeyReference {
    provider: String,
    attributes: BTreeMap<String, String>,
    public_key: Vec<u8>,
    public: PublicJwk,
}

impl KeyReference {
    /// A reference to a key of `provider`, described by `attributes`, whose
    /// public key is `public_key_der` (a DER SubjectPublicKeyInfo) for
    /// `algorithm`. With no `kid`, the key's RFC 7638 thumbprint is used.
    ///
    /// # Errors
    ///
    /// [`KeyError::Malformed`] for a provider or attribute name that is not
    /// 1 to 32 characters of `a-z 0-9 _ -`, a value longer than 1024 bytes
    /// or holding a control character, more than 16 attributes; and every
    /// error of [`PublicJwk::from_spki_der`] for the public key.
    pub fn new<N, V>(
        provider: &str,
        attributes: impl IntoIterator<Item = (N, V)>,
        public_key_der: &[u8],
        algorithm: Algorithm,
        kid: Option<Kid>,
    ) -> Result<Self, KeyError>
    where
        N: Into<String>,
        V: Into<String>,
    {
        check_name("provider", provider)?;
        let mut map = BTreeMap::new();
        for (name, value) in attributes {
            let (name, value) = (name.into(), value.into());
            check_name("attribute", &name)?;
            check_value(&name, &value)?;
            map.insert(name, value);
        }
        if map.len() > MAX_ATTRIBUTES {
            return Err(malformed(format!("more than {MAX_ATTRIBUTES} attributes")));
        }
        if public_key_der.len() > MAX_PUBLIC_KEY_LEN {
            return Err(malformed(format!(
                "a public key longer than {MAX_PUBLIC_KEY_LEN} bytes"
            )));
        }
        let public = PublicJwk::from_spki_der(public_key_der, algorithm, kid)?;
        Ok(KeyReference {
            provider: provider.to_owned(),
            attributes: map,
            public_key: public_key_der.to_vec(),
            public,
        })
    }

    /// The provider (`"pkcs11"`).
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// The value of one attribute.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes.get(name).map(String::as_str)
    }

    /// Every attribute, by name.
    pub fn attributes(&self) -> impl Iterator<Item = (&str, &str)> {
        self.attributes
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }

    /// The public key, as a DER SubjectPublicKeyInfo.
    pub fn public_key_der(&self) -> &[u8] {
        &self.public_key
    }

    /// The public JWK, with the kid and algorithm.
    pub fn public_jwk(&self) -> &PublicJwk {
        &self.public
    }

    /// The key id.
    pub fn kid(&self) -> &Kid {
        self.public.kid()
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.public.algorithm()
    }

    /// The reference as stores write it, without kid and algorithm (the
    /// record holds them): `{"provider":..,"attributes":{..},"public_key":..}`.
    pub(crate) fn to_json(&self) -> Value {
        serde_json::json!({
            "provider": self.provider,
            "attributes": self.attributes,
            "public_key": b64::encode(&self.public_key),
        })
    }

    /// Reads what [`to_json`](Self::to_json) wrote, for the record's kid
    /// and algorithm. The error says what is wrong, in words.
    pub(crate) fn from_json(value: Value, algorithm: Algorithm, kid: &Kid) -> Result<Self, String> {
        let Value::Object(mut map) = value else {
            return Err("\"reference\" is not a JSON object".to_owned());
        };
        let string = |map: &mut Map<String, Value>, name: &str| match map.remove(name) {
            Some(Value::String(text)) => Ok(text),
            Some(_) => Err(format!("\"reference.{name}\" is not a string")),
            None => Err(format!("\"reference.{name}\" is missing")),
        };
        let provider = string(&mut map, "provider")?;
        let public_key = b64::decode(string(&mut map, "public_key")?)
            .map_err(|_| "\"reference.public_key\" is not base64url".to_owned())?;
        let attributes = match map.remove("attributes") {
            Some(Value::Object(attributes)) => attributes,
            Some(_) => return Err("\"reference.attributes\" is not a JSON object".to_owned()),
            None => return Err("\"reference.attributes\" is missing".to_owned()),
        };
        if let Some(extra) = map.keys().next() {
            return Err(format!(
                "unknown member \"reference.{}\"",
                extra.chars().take(64).collect::<String>()
            ));
        }
        let mut pairs = Vec::with_capacity(attributes.len());
        for (name, value) in attributes {
            let Value::String(value) = value else {
                return Err(format!(
                    "attribute {:?} of the reference is not a string",
                    name.chars().take(64).collect::<String>()
                ));
            };
            pairs.push((name, value));
        }
        let reference =
            KeyReference::new(&provider, pairs, &public_key, algorithm, Some(kid.clone()))
                .map_err(|err| format!("the reference was refused: {err}"))?;
        Ok(reference)
    }
}

impl fmt::Display for KeyReference {
    /// `pkcs11 key (label=..., token=...)`: the provider and the attributes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} key (", self.provider)?;
        for (i, (name, value)) in self.attributes.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{name}={value:?}")?;
        }
        f.write_str(")")
    }
}

impl fmt::Debug for KeyReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyReference")
            .field("provider", &self.provider)
            .field("attributes", &self.attributes)
            .field("kid", self.kid())
            .field("alg", &self.algorithm())
            .finish_non_exhaustive()
    }
}

fn malformed(reason: String) -> KeyError {
    KeyError::Malformed {
        format: "key reference",
        reason,
    }
}

fn check_name(what: &str, name: &str) -> Result<(), KeyError> {
    let fits = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if fits {
        Ok(())
    } else {
        Err(malformed(format!(
            "the {what} name {:?} is not 1 to {MAX_NAME_LEN} characters of a-z 0-9 _ -",
            name.chars().take(64).collect::<String>()
        )))
    }
}

fn check_value(name: &str, value: &str) -> Result<(), KeyError> {
    if value.len() > MAX_VALUE_LEN {
        return Err(malformed(format!(
            "attribute {name:?} is longer than {MAX_VALUE_LEN} bytes"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(malformed(format!(
            "attribute {name:?} holds a control character"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SigningKey;

    fn spki(key: &SigningKey) -> Vec<u8> {
        let jwk = key.public_jwk().to_value();
        let coordinate = |name: &str| crate::b64::decode(jwk[name].as_str().unwrap()).unwrap();
        match key.algorithm() {
            Algorithm::EdDSA => crate::keys::spki::ed25519(&coordinate("x")),
            _ => crate::keys::spki::ec(
                crate::keys::EcCurve::P256,
                &[vec![4], coordinate("x"), coordinate("y")].concat(),
            ),
        }
    }

    #[test]
    fn a_reference_has_the_kid_of_the_same_key_in_process_and_round_trips() {
        let key = SigningKey::generate(Algorithm::EdDSA).unwrap();
        let reference = KeyReference::new(
            "pkcs11",
            [("token", "t"), ("label", "k")],
            &spki(&key),
            Algorithm::EdDSA,
            None,
        )
        .unwrap();
        assert_eq!(reference.kid(), key.kid());
        assert_eq!(reference.public_jwk(), key.public_jwk());
        let again =
            KeyReference::from_json(reference.to_json(), Algorithm::EdDSA, key.kid()).unwrap();
        assert_eq!(again, reference);
        assert_eq!(
            reference.to_string(),
            r#"pkcs11 key (label="k", token="t")"#
        );
    }

    #[test]
    fn names_values_and_public_keys_are_checked() {
        let key = SigningKey::generate(Algorithm::ES256).unwrap();
        let der = spki(&key);
        let attempt = |provider: &str, name: &str, value: &str, alg| {
            KeyReference::new(provider, [(name, value)], &der, alg, None).map(|_| ())
        };
        assert!(attempt("pkcs11", "label", "ok", Algorithm::ES256).is_ok());
        for (provider, name, value) in [
            ("PKCS11", "label", "x"),
            ("", "label", "x"),
            ("pkcs11", "Label", "x"),
            ("pkcs11", "label", "a\nb"),
        ] {
            let err = attempt(provider, name, value, Algorithm::ES256).unwrap_err();
            assert!(matches!(err, KeyError::Malformed { .. }), "{err}");
        }
        assert!(matches!(
            attempt("pkcs11", "label", "x", Algorithm::ES384).unwrap_err(),
            KeyError::WrongKeyType { .. }
        ));
        let other = KeyReference::from_json(
            KeyReference::new("pkcs11", [("a", "b")], &der, Algorithm::ES256, None)
                .unwrap()
                .to_json(),
            Algorithm::ES256,
            &Kid::new("another-kid").unwrap(),
        )
        .unwrap();
        assert_eq!(other.kid().as_str(), "another-kid", "the record's kid");
    }
}

//! The JWS algorithms this crate signs with.

use std::fmt;
use std::str::FromStr;

/// An asymmetric JWS signature algorithm (RFC 7518 section 3, RFC 8037).
///
/// Only asymmetric algorithms exist here: `none` and the HMAC family
/// (`HS256`, ...) do not parse, so a configuration or a token can never
/// select them.
///
/// ```
/// use tower_jwt_signer::Algorithm;
///
/// let alg: Algorithm = "ES256".parse().unwrap();
/// assert_eq!(alg, Algorithm::ES256);
/// assert_eq!(alg.to_string(), "ES256");
/// assert!("none".parse::<Algorithm>().is_err());
/// assert!("HS256".parse::<Algorithm>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256 and MGF1 with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384 and MGF1 with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512 and MGF1 with SHA-512.
    PS512,
    /// ECDSA on P-256 with SHA-256. The default: small keys, small
    /// signatures, fast to sign and verify, supported everywhere.
    #[default]
    ES256,
    /// ECDSA on P-384 with SHA-384.
    ES384,
    /// ECDSA on P-521 with SHA-512.
    ES512,
    /// EdDSA with Ed25519 (RFC 8037). Ed448 is not supported.
    EdDSA,
}

/// The family of key an [`Algorithm`] needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyKind {
    /// An RSA key (`kty: "RSA"`) of at least 2048 bits.
    Rsa,
    /// An EC key on the named curve (`kty: "EC"`, `crv`).
    Ec(EcCurve),
    /// An Ed25519 key (`kty: "OKP"`, `crv: "Ed25519"`).
    Ed25519,
}

/// The NIST curves used by the ES* algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EcCurve {
    /// P-256 (secp256r1), for ES256.
    P256,
    /// P-384 (secp384r1), for ES384.
    P384,
    /// P-521 (secp521r1), for ES512.
    P521,
}

impl EcCurve {
    /// The JWK `crv` name.
    pub fn name(self) -> &'static str {
        match self {
            EcCurve::P256 => "P-256",
            EcCurve::P384 => "P-384",
            EcCurve::P521 => "P-521",
        }
    }

    /// The length in bytes of one coordinate (and of the private scalar).
    pub fn coordinate_len(self) -> usize {
        match self {
            EcCurve::P256 => 32,
            EcCurve::P384 => 48,
            EcCurve::P521 => 66,
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<Self> {
        match name {
            "P-256" => Some(EcCurve::P256),
            "P-384" => Some(EcCurve::P384),
            "P-521" => Some(EcCurve::P521),
            _ => None,
        }
    }
}

impl fmt::Display for EcCurve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Algorithm {
    /// Every supported algorithm, in a stable order.
    pub const ALL: [Algorithm; 10] = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::ES512,
        Algorithm::EdDSA,
    ];

    /// The JOSE name (`alg` header value).
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::ES512 => "ES512",
            Algorithm::EdDSA => "EdDSA",
        }
    }

    /// The kind of key this algorithm signs with.
    pub fn key_kind(self) -> KeyKind {
        match self {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => KeyKind::Rsa,
            Algorithm::ES256 => KeyKind::Ec(EcCurve::P256),
            Algorithm::ES384 => KeyKind::Ec(EcCurve::P384),
            Algorithm::ES512 => KeyKind::Ec(EcCurve::P521),
            Algorithm::EdDSA => KeyKind::Ed25519,
        }
    }

    /// Whether this algorithm uses an RSA key (RS* and PS*).
    pub fn is_rsa(self) -> bool {
        self.key_kind() == KeyKind::Rsa
    }

    /// The JWK `kty` of keys for this algorithm.
    pub fn key_type(self) -> &'static str {
        match self.key_kind() {
            KeyKind::Rsa => "RSA",
            KeyKind::Ec(_) => "EC",
            KeyKind::Ed25519 => "OKP",
        }
    }

    /// Whether a signature with this algorithm is slow enough that it
    /// should not run on an async worker thread: more than 100 µs on one
    /// core (tokio asks for at most 10 to 100 µs between two `.await`s).
    ///
    /// Measured with aws-lc-rs on the project's machine (`BENCHMARKS.md`):
    /// RS* and PS* (2048 bits) about 760 µs, ES512 about 215 µs and ES384
    /// about 110 µs are slow; ES256 (about 20 µs) and EdDSA (about 12 µs)
    /// are not.
    pub fn is_slow(self) -> bool {
        !matches!(self, Algorithm::ES256 | Algorithm::EdDSA)
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error returned when a string is not one of the supported algorithms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownAlgorithm {
    name: String,
}

impl UnknownAlgorithm {
    /// The name that did not parse (truncated to 64 characters).
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for UnknownAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unsupported JWS algorithm {:?}: expected one of RS256, RS384, RS512, PS256, PS384, \
             PS512, ES256, ES384, ES512, EdDSA (symmetric algorithms and \"none\" are never accepted)",
            self.name
        )
    }
}

impl std::error::Error for UnknownAlgorithm {}

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    /// Parses the exact, case-sensitive JOSE name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::ALL
            .into_iter()
            .find(|alg| alg.as_str() == s)
            .ok_or_else(|| UnknownAlgorithm {
                name: s.chars().take(64).collect(),
            })
    }
}

impl serde::Serialize for Algorithm {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Algorithm {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_name() {
        for alg in Algorithm::ALL {
            assert_eq!(alg.to_string().parse::<Algorithm>(), Ok(alg));
        }
    }

    #[test]
    fn refuses_symmetric_none_and_wrong_case() {
        for name in [
            "none", "None", "NONE", "HS256", "HS384", "HS512", "es256", "EDDSA", "Ed25519", "",
            "RS1", "ES256K", "Ed448",
        ] {
            assert!(name.parse::<Algorithm>().is_err(), "{name} parsed");
        }
    }

    #[test]
    fn default_is_es256() {
        assert_eq!(Algorithm::default(), Algorithm::ES256);
    }

    #[test]
    fn unknown_name_is_truncated() {
        let err = "x".repeat(10_000).parse::<Algorithm>().unwrap_err();
        assert_eq!(err.name().len(), 64);
    }
}

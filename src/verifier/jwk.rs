//! Public JWKs and JWK Sets (RFC 7517), parsed once for verification.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use aws_lc_rs::signature::{self as sig, ParsedPublicKey, RsaPublicKeyComponents};
use serde_json::{Map, Value};

use crate::b64;
use crate::keys::{
    Algorithm, Budget, EcCurve, KeyKind, NoLimit, OutOfTime, PublicJwk, Until, WeakKey,
    check_ed25519, check_rsa_modulus,
};

/// The longest `kid` a verifying key may have, in bytes: 256. Keys with a
/// longer kid are skipped; tokens with a longer kid are refused without a
/// lookup.
pub(crate) const MAX_VERIFY_KID_LEN: usize = 256;

/// The smallest RSA modulus accepted for verification, in bits.
const MIN_RSA_BITS: usize = 2048;
/// The largest RSA modulus accepted, in bits: aws-lc-rs verifies RSA
/// signatures with moduli of 2048 to 8192 bits.
const MAX_RSA_BITS: usize = 8192;
/// The longest RSA public exponent accepted, in bits: AWS-LC refuses
/// longer ones (a denial-of-service guard; real keys use 65537).
const MAX_RSA_EXPONENT_BITS: usize = 33;

/// JWK members that only private or symmetric keys have. A set that holds
/// any of them is refused whole: a server that publishes them has leaked a
/// secret, and nothing it serves can be trusted.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// A set of public keys ready to verify signatures.
///
/// Every key is parsed once, when the set is built; verification reuses the
/// key as aws-lc-rs parsed it. Keys that cannot be used are left out one by one and
/// listed by [`skipped`](Self::skipped); a set that holds private members
/// (`d`, `p`, `q`, `dp`, `dq`, `qi`, `oth`, `k`) or two keys with the same
/// `kid` is refused whole.
///
/// A key is used only if all of these hold:
///
/// * `kty` is `RSA`, `EC` or `OKP`; `use`, when present, is `sig`;
///   `key_ops`, when present, contains `verify`;
/// * `alg`, when present, is one of the ten [`Algorithm`]s and fits the key;
/// * RSA: `n` and `e` are strict base64url, the modulus has 2048 to 8192
///   bits, the exponent is odd, above 1 and at most 33 bits long;
/// * EC: `crv` is P-256, P-384 or P-521, `x` and `y` have exactly the
///   curve's length and the point is on the curve;
/// * OKP: `crv` is `Ed25519` and `x` has 32 bytes;
/// * anyone but its holder cannot forge signatures for it
///   ([`WeakKey`], logged at `warn` level when refused): not an Ed25519
///   small-order point (in any of its 14 encodings), not an RSA modulus
///   with a prime factor below 2^16, not a prime modulus (Miller-Rabin to
///   12 bases), not a modulus with the ROCA fingerprint (CVE-2017-15361).
///   The prime test costs one modular exponentiation per RSA key (about
///   7 ms for 2048 bits, 56 ms for 4096, 0.37 s for 8192), once per set;
/// * `kid`, when present, is a string of 1 to 256 bytes (a token with a
///   longer kid is refused without a lookup).
///
/// # Example
///
/// ```
/// use tower_jwt_signer::verifier::JwkSet;
/// use tower_jwt_signer::{Algorithm, KeyRegistry};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = KeyRegistry::generate(Algorithm::ES256)?;
/// let set = JwkSet::parse(registry.current().jwks_bytes())?;
/// assert_eq!(set.len(), 1);
///
/// // A set with a private member is refused whole.
/// let leaked = r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"a"}]}"#;
/// assert!(JwkSet::parse(leaked.as_bytes()).is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Default)]
pub struct JwkSet {
    keys: Vec<Arc<VerifyingKey>>,
    skipped: Vec<SkippedKey>,
}

impl JwkSet {
    /// Parses a JWK Set document (`{"keys": [...]}`).
    ///
    /// # Errors
    ///
    /// [`JwkSetError`] when the document is not a JSON object with a `keys`
    /// array, when a key holds a private member, or when two keys share a
    /// kid. Keys that merely cannot be used are skipped, not errors.
    pub fn parse(json: &[u8]) -> Result<Self, JwkSetError> {
        let value: Value =
            serde_json::from_slice(json).map_err(|err| JwkSetError::NotJson(err.to_string()))?;
        Self::from_value(&value)
    }

    /// [`parse`](Self::parse), giving up with [`OutOfTime`] once
    /// `deadline` has passed (checked before each key and each round of
    /// the RSA prime test): a fetched set is parsed within the fetch's time
    /// bound.
    pub(crate) fn parse_until(
        json: &[u8],
        deadline: Option<Instant>,
    ) -> Result<Result<Self, JwkSetError>, OutOfTime> {
        let value: Value = match serde_json::from_slice(json) {
            Ok(value) => value,
            Err(err) => return Ok(Err(JwkSetError::NotJson(err.to_string()))),
        };
        Self::from_value_within(&value, &Until(deadline))
    }

    /// Builds a set from a JWK Set already parsed as JSON; see
    /// [`parse`](Self::parse).
    ///
    /// # Errors
    ///
    /// As [`parse`](Self::parse).
    pub fn from_value(value: &Value) -> Result<Self, JwkSetError> {
        let Ok(result) = Self::from_value_within(value, &NoLimit);
        result
    }

    /// [`from_value`](Self::from_value) within a time budget (the outer
    /// `Err`), checked before each key.
    fn from_value_within<B: Budget>(
        value: &Value,
        budget: &B,
    ) -> Result<Result<Self, JwkSetError>, B::Exhausted> {
        let entries = match Self::check_set(value) {
            Ok(entries) => entries,
            Err(err) => return Ok(Err(err)),
        };
        let mut keys = Vec::with_capacity(entries.len());
        let mut skipped = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            budget.check()?;
            let kid = entry.get("kid").and_then(Value::as_str).map(printable);
            let result = match entry {
                Value::Object(jwk) => VerifyingKey::from_map(jwk, Origin::Foreign, budget)?,
                _ => Err(Skip::Unusable("the entry is not a JSON object".to_owned())),
            };
            match result {
                Ok(key) => keys.push(Arc::new(key)),
                Err(skip) => skipped.push(SkippedKey::new(index, kid, skip)),
            }
        }
        Ok(Ok(JwkSet { keys, skipped }))
    }

    /// The whole-set checks (a JSON object with a `keys` array, no private
    /// members, no duplicate kids); returns the entries.
    fn check_set(value: &Value) -> Result<&[Value], JwkSetError> {
        let Value::Object(set) = value else {
            return Err(JwkSetError::NotASet("the document is not a JSON object"));
        };
        let Some(entries) = set.get("keys") else {
            return Err(JwkSetError::NotASet("the \"keys\" member is missing"));
        };
        let Value::Array(entries) = entries else {
            return Err(JwkSetError::NotASet("the \"keys\" member is not an array"));
        };
        let mut kids = HashSet::new();
        for (index, entry) in entries.iter().enumerate() {
            let Value::Object(jwk) = entry else { continue };
            if let Some(member) = PRIVATE_MEMBERS.iter().find(|m| jwk.contains_key(**m)) {
                return Err(JwkSetError::PrivateMember { index, member });
            }
            if let Some(Value::String(kid)) = jwk.get("kid")
                && !kids.insert(kid.as_str())
            {
                return Err(JwkSetError::DuplicateKid(printable(kid)));
            }
        }
        Ok(entries)
    }

    /// Builds a set from our own public JWKs (for example a
    /// [`KeySnapshot`](crate::registry::KeySnapshot)'s keys).
    ///
    /// A [`PublicJwk`] was checked for [`WeakKey`]s when it was made, so the
    /// costly RSA modulus checks are not run again here.
    pub fn from_public_jwks<'a>(jwks: impl IntoIterator<Item = &'a PublicJwk>) -> Self {
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for (index, jwk) in jwks.into_iter().enumerate() {
            let map = match jwk.to_value() {
                Value::Object(map) => map,
                _ => continue,
            };
            let Ok(result) = VerifyingKey::from_map(&map, Origin::PublicJwk, &NoLimit);
            match result {
                Ok(key) => keys.push(Arc::new(key)),
                Err(skip) => {
                    skipped.push(SkippedKey::new(index, Some(jwk.kid().to_string()), skip))
                }
            }
        }
        JwkSet { keys, skipped }
    }

    /// The number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set holds no usable key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The usable keys, in the order of the document.
    pub fn keys(&self) -> &[Arc<VerifyingKey>] {
        &self.keys
    }

    /// The usable key with this kid.
    pub fn get(&self, kid: &str) -> Option<&Arc<VerifyingKey>> {
        self.keys.iter().find(|k| k.kid() == Some(kid))
    }

    /// The entries that were left out, with the reason.
    pub fn skipped(&self) -> &[SkippedKey] {
        &self.skipped
    }
}

impl fmt::Debug for JwkSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwkSet")
            .field("keys", &self.keys)
            .field("skipped", &self.skipped)
            .finish()
    }
}

/// A JWK Set entry that was left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedKey {
    index: usize,
    kid: Option<String>,
    reason: String,
    weak: Option<WeakKey>,
}

impl SkippedKey {
    fn new(index: usize, kid: Option<String>, skip: Skip) -> Self {
        let (reason, weak) = match skip {
            Skip::Unusable(reason) => (reason, None),
            Skip::Weak(weak) => {
                // Someone published a key anyone can sign with: say so
                // whatever the key source (a fetched, fixed or local set).
                tracing::warn!(
                    index,
                    kid = kid.as_deref().unwrap_or("(none)"),
                    reason = %weak,
                    "JWK refused: anyone can forge signatures for this key"
                );
                (weak.to_string(), Some(weak))
            }
        };
        SkippedKey {
            index,
            kid,
            reason,
            weak,
        }
    }

    /// Why the key was refused when it is well formed but anyone could
    /// forge signatures for it; `None` for other reasons.
    pub fn weakness(&self) -> Option<WeakKey> {
        self.weak
    }

    /// The position of the entry in the `keys` array.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The entry's kid, if it had one (escaped and truncated for display).
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// Why the entry cannot be used.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for SkippedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kid {
            Some(kid) => write!(f, "key #{} (kid {kid}): {}", self.index, self.reason),
            None => write!(f, "key #{} (no kid): {}", self.index, self.reason),
        }
    }
}

/// Why a JWK Set was refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JwkSetError {
    /// The document is not JSON.
    NotJson(String),
    /// The document is JSON but not a JWK Set.
    NotASet(&'static str),
    /// A key holds a private or symmetric member: the publisher leaked a
    /// secret, so nothing in the set is trusted.
    PrivateMember {
        /// The position of the key in the `keys` array.
        index: usize,
        /// The member found (`d`, `p`, `q`, `dp`, `dq`, `qi`, `oth` or `k`).
        member: &'static str,
    },
    /// Two keys share a kid, so a token's kid cannot pick one key.
    DuplicateKid(String),
}

impl fmt::Display for JwkSetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwkSetError::NotJson(err) => write!(f, "the JWK Set is not JSON: {err}"),
            JwkSetError::NotASet(reason) => write!(f, "not a JWK Set: {reason}"),
            JwkSetError::PrivateMember { index, member } => write!(
                f,
                "JWK Set refused: key #{index} holds the private member \"{member}\""
            ),
            JwkSetError::DuplicateKid(kid) => {
                write!(f, "JWK Set refused: several keys have the kid {kid}")
            }
        }
    }
}

impl std::error::Error for JwkSetError {}

/// Why one entry of a set is left out.
enum Skip {
    /// It cannot be used (malformed, too small, unsupported, ...).
    Unusable(String),
    /// It is well formed, but anyone can forge signatures for it.
    Weak(WeakKey),
}

/// Where a JWK comes from: the checks a [`PublicJwk`] passed when it was
/// made are not run again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// A JWK Set document: every check.
    Foreign,
    /// One of our own [`PublicJwk`]s.
    PublicJwk,
}

/// One public key, parsed once, that verifies JWS signatures.
///
/// Obtained from a [`JwkSet`]. `Debug` shows the kid, the key type and the
/// algorithm.
pub struct VerifyingKey {
    kid: Option<Arc<str>>,
    alg: Option<Algorithm>,
    material: Material,
}

enum Material {
    Rsa {
        /// The modulus, big-endian without leading zeros (for the weak-key
        /// checks).
        n: Box<[u8]>,
        /// The modulus length in bytes: every signature has exactly this
        /// length.
        len: usize,
        /// The key parsed once for each RSA algorithm it may verify: the
        /// JWK's `alg` alone, or all six when it has none.
        parsed: Vec<(Algorithm, ParsedPublicKey)>,
    },
    Ec {
        curve: EcCurve,
        key: ParsedPublicKey,
    },
    Ed25519 {
        x: [u8; 32],
        key: ParsedPublicKey,
    },
}

/// Why a signature did not verify (kept apart from the token errors so that
/// the reason can be tested; the verifier reports all of them alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SignatureError {
    /// The key does not fit the algorithm.
    KeyMismatch,
    /// The signature has the wrong length or out-of-range values.
    Malformed,
    /// The signature does not match.
    Invalid,
}

impl VerifyingKey {
    /// The key id, if the JWK had one.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The JWK's `alg`, if it had one.
    pub fn algorithm(&self) -> Option<Algorithm> {
        self.alg
    }

    /// The key type (`"RSA"`, `"EC"` or `"OKP"`).
    pub fn key_type(&self) -> &'static str {
        match self.material {
            Material::Rsa { .. } => "RSA",
            Material::Ec { .. } => "EC",
            Material::Ed25519 { .. } => "OKP",
        }
    }

    /// Whether this key may verify a signature made with `alg`: the key
    /// type and curve fit, and the JWK's `alg`, when present, is exactly
    /// `alg`.
    pub fn fits(&self, alg: Algorithm) -> bool {
        if self.alg.is_some_and(|own| own != alg) {
            return false;
        }
        match (&self.material, alg.key_kind()) {
            (Material::Rsa { .. }, KeyKind::Rsa) => true,
            (Material::Ec { curve, .. }, KeyKind::Ec(wanted)) => *curve == wanted,
            (Material::Ed25519 { .. }, KeyKind::Ed25519) => true,
            _ => false,
        }
    }

    /// Verifies a raw JWS signature (RFC 7518 encoding: ECDSA as `r || s`).
    pub(crate) fn verify(
        &self,
        alg: Algorithm,
        signing_input: &[u8],
        signature: &[u8],
    ) -> Result<(), SignatureError> {
        if !self.fits(alg) {
            return Err(SignatureError::KeyMismatch);
        }
        let verified = match &self.material {
            Material::Rsa { len, parsed, .. } => {
                if signature.len() != *len {
                    return Err(SignatureError::Malformed);
                }
                let Some((_, key)) = parsed.iter().find(|(own, _)| *own == alg) else {
                    return Err(SignatureError::KeyMismatch);
                };
                key.verify_sig(signing_input, signature)
            }
            Material::Ec { curve, key } => {
                check_ecdsa_shape(*curve, signature)?;
                key.verify_sig(signing_input, signature)
            }
            Material::Ed25519 { key, .. } => {
                if signature.len() != 64 {
                    return Err(SignatureError::Malformed);
                }
                key.verify_sig(signing_input, signature)
            }
        };
        verified.map_err(|_| SignatureError::Invalid)
    }

    /// The key, or why it is skipped; the outer `Err` is the budget
    /// running out.
    fn from_map<B: Budget>(
        jwk: &Map<String, Value>,
        origin: Origin,
        budget: &B,
    ) -> Result<Result<Self, Skip>, B::Exhausted> {
        let key = match Self::parse_map(jwk) {
            Ok(key) => key,
            Err(reason) => return Ok(Err(Skip::Unusable(reason))),
        };
        if origin == Origin::Foreign
            && let Some(weak) = key.material.weakness(budget)?
        {
            return Ok(Err(Skip::Weak(weak)));
        }
        Ok(Ok(key))
    }

    fn parse_map(jwk: &Map<String, Value>) -> Result<Self, String> {
        let kid = match jwk.get("kid") {
            None => None,
            Some(Value::String(kid)) if kid.is_empty() => return Err("the kid is empty".into()),
            Some(Value::String(kid)) if kid.len() > MAX_VERIFY_KID_LEN => {
                return Err(format!(
                    "the kid is {} bytes long, at most {MAX_VERIFY_KID_LEN} are accepted",
                    kid.len()
                ));
            }
            Some(Value::String(kid)) => Some(Arc::<str>::from(kid.as_str())),
            Some(_) => return Err("the kid is not a string".into()),
        };
        match jwk.get("use") {
            None => {}
            Some(Value::String(u)) if u == "sig" => {}
            Some(Value::String(u)) => {
                return Err(format!("\"use\" is {}, not \"sig\"", printable(u.as_str())));
            }
            Some(_) => return Err("\"use\" is not a string".into()),
        }
        match jwk.get("key_ops") {
            None => {}
            Some(Value::Array(ops)) if ops.iter().any(|op| op == "verify") => {}
            Some(Value::Array(_)) => {
                return Err("\"key_ops\" does not contain \"verify\"".into());
            }
            Some(_) => return Err("\"key_ops\" is not an array".into()),
        }
        let alg = match jwk.get("alg") {
            None => None,
            Some(Value::String(name)) => match name.parse::<Algorithm>() {
                Ok(alg) => Some(alg),
                Err(_) => {
                    return Err(format!(
                        "\"alg\" {} is not an asymmetric algorithm this verifier accepts",
                        printable(name.as_str())
                    ));
                }
            },
            Some(_) => return Err("\"alg\" is not a string".into()),
        };
        let kty = match jwk.get("kty") {
            Some(Value::String(kty)) => kty.as_str(),
            Some(_) => return Err("\"kty\" is not a string".into()),
            None => return Err("\"kty\" is missing".into()),
        };
        let material = match kty {
            "RSA" => rsa_material(jwk, alg.filter(|alg| alg.is_rsa()))?,
            "EC" => ec_material(jwk)?,
            "OKP" => okp_material(jwk)?,
            "oct" => return Err("a symmetric key (oct) cannot verify asymmetric tokens".into()),
            other => return Err(format!("unsupported kty {}", printable(other))),
        };
        let key = VerifyingKey { kid, alg, material };
        if let Some(alg) = alg
            && !key.fits(alg)
        {
            return Err(format!(
                "\"alg\" {alg} does not fit a {kty} key of this kind"
            ));
        }
        Ok(key)
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("VerifyingKey");
        s.field("kid", &self.kid)
            .field("kty", &self.key_type())
            .field("alg", &self.alg);
        match &self.material {
            Material::Rsa { n, .. } => s.field("bits", &bit_len(n)),
            Material::Ec { curve, .. } => s.field("crv", curve),
            Material::Ed25519 { .. } => s.field("crv", &"Ed25519"),
        };
        s.finish()
    }
}

impl Material {
    /// Why anyone could forge signatures for this key, if they could: an
    /// Ed25519 small-order point, an RSA modulus with a small factor, prime
    /// or with the ROCA fingerprint (see [`WeakKey`]).
    fn weakness<B: Budget>(&self, budget: &B) -> Result<Option<WeakKey>, B::Exhausted> {
        Ok(match self {
            Material::Rsa { n, .. } => check_rsa_modulus(n, budget)?.err(),
            Material::Ed25519 { x, .. } => check_ed25519(x).err(),
            Material::Ec { .. } => None,
        })
    }
}

/// The order of each curve's group, big-endian, as long as a coordinate
/// (SEC 1 section 2.2.2; FIPS 186-4 appendix D.1.2).
fn curve_order(curve: EcCurve) -> &'static [u8] {
    const P256: [u8; 32] = [
        0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63,
        0x25, 0x51,
    ];
    const P384: [u8; 48] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xc7, 0x63, 0x4d, 0x81, 0xf4, 0x37,
        0x2d, 0xdf, 0x58, 0x1a, 0x0d, 0xb2, 0x48, 0xb0, 0xa7, 0x7a, 0xec, 0xec, 0x19, 0x6a, 0xcc,
        0xc5, 0x29, 0x73,
    ];
    const P521: [u8; 66] = [
        0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xfa, 0x51, 0x86, 0x87, 0x83, 0xbf, 0x2f, 0x96, 0x6b, 0x7f, 0xcc, 0x01,
        0x48, 0xf7, 0x09, 0xa5, 0xd0, 0x3b, 0xb5, 0xc9, 0xb8, 0x89, 0x9c, 0x47, 0xae, 0xbb, 0x6f,
        0xb7, 0x1e, 0x91, 0x38, 0x64, 0x09,
    ];
    match curve {
        EcCurve::P256 => &P256,
        EcCurve::P384 => &P384,
        EcCurve::P521 => &P521,
    }
}

/// A JWS ECDSA signature is `r || s`, each exactly as long as a coordinate,
/// with 0 < r, s < n (SEC 1 section 4.1.4 step 1). AWS-LC checks the range
/// too, but this costs nothing and does not depend on its version.
fn check_ecdsa_shape(curve: EcCurve, signature: &[u8]) -> Result<(), SignatureError> {
    let len = curve.coordinate_len();
    if signature.len() != 2 * len {
        return Err(SignatureError::Malformed);
    }
    let order = curve_order(curve);
    for value in signature.chunks_exact(len) {
        // Same length, big-endian: the byte order is the numeric order.
        if value.iter().all(|&b| b == 0) || value >= order {
            return Err(SignatureError::Malformed);
        }
    }
    Ok(())
}

/// The verification algorithm aws-lc-rs uses for a JWS RSA algorithm.
fn rsa_parameters(alg: Algorithm) -> Option<&'static sig::RsaParameters> {
    Some(match alg {
        Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
        // RFC 7518 section 3.5: MGF1 with the same hash, a salt as long as
        // the hash (aws-lc-rs's default salt length).
        Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &sig::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

/// The number of bits of a big-endian number without leading zeros.
fn bit_len(bytes: &[u8]) -> usize {
    match bytes.first() {
        None => 0,
        Some(&top) => bytes.len() * 8 - top.leading_zeros() as usize,
    }
}

/// A big-endian number without its leading zero octets.
fn minimal(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

fn member_bytes(jwk: &Map<String, Value>, name: &str) -> Result<Vec<u8>, String> {
    match jwk.get(name) {
        Some(Value::String(text)) => {
            b64::decode(text).map_err(|_| format!("\"{name}\" is not strict base64url"))
        }
        Some(_) => Err(format!("\"{name}\" is not a string")),
        None => Err(format!("\"{name}\" is missing")),
    }
}

fn rsa_material(jwk: &Map<String, Value>, alg: Option<Algorithm>) -> Result<Material, String> {
    let n = member_bytes(jwk, "n")?;
    let e = member_bytes(jwk, "e")?;
    let (n, e) = (minimal(&n), minimal(&e));
    let bits = bit_len(n);
    if bits < MIN_RSA_BITS {
        return Err(format!(
            "an RSA modulus of {bits} bits is too small (at least {MIN_RSA_BITS})"
        ));
    }
    if bits > MAX_RSA_BITS {
        return Err(format!(
            "an RSA modulus of {bits} bits is too large (at most {MAX_RSA_BITS})"
        ));
    }
    if n[n.len() - 1] & 1 == 0 {
        return Err("the RSA modulus is even".into());
    }
    let e_bits = bit_len(e);
    if e_bits <= 1 || e[e.len() - 1] & 1 == 0 || e_bits > MAX_RSA_EXPONENT_BITS {
        return Err(format!(
            "the RSA public exponent is 1, even, or longer than {MAX_RSA_EXPONENT_BITS} bits"
        ));
    }
    let components = RsaPublicKeyComponents { n, e };
    let algorithms: Vec<Algorithm> = match alg {
        Some(alg) => vec![alg],
        None => Algorithm::ALL.into_iter().filter(|a| a.is_rsa()).collect(),
    };
    let mut parsed = Vec::with_capacity(algorithms.len());
    for alg in algorithms {
        // An `alg` that does not fit an RSA key is refused by the caller.
        let Some(params) = rsa_parameters(alg) else {
            continue;
        };
        let key = components
            .to_parsed_public_key(params)
            .map_err(|_| "invalid RSA key".to_owned())?;
        parsed.push((alg, key));
    }
    Ok(Material::Rsa {
        n: n.into(),
        len: bits.div_ceil(8),
        parsed,
    })
}

fn ec_material(jwk: &Map<String, Value>) -> Result<Material, String> {
    let curve = match jwk.get("crv") {
        Some(Value::String(crv)) => EcCurve::from_name(crv)
            .ok_or_else(|| format!("unsupported EC curve {}", printable(crv.as_str())))?,
        Some(_) => return Err("\"crv\" is not a string".into()),
        None => return Err("\"crv\" is missing".into()),
    };
    let len = curve.coordinate_len();
    let x = member_bytes(jwk, "x")?;
    let y = member_bytes(jwk, "y")?;
    if x.len() != len || y.len() != len {
        return Err(format!(
            "{curve} coordinates must be exactly {len} bytes each"
        ));
    }
    // The uncompressed point (SEC 1 section 2.3.3). aws-lc-rs checks that
    // the coordinates are in range and the point is on the curve (and not
    // the point at infinity).
    let mut point = Vec::with_capacity(1 + 2 * len);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    let algorithm = match curve {
        EcCurve::P256 => &sig::ECDSA_P256_SHA256_FIXED,
        EcCurve::P384 => &sig::ECDSA_P384_SHA384_FIXED,
        EcCurve::P521 => &sig::ECDSA_P521_SHA512_FIXED,
    };
    let key = ParsedPublicKey::new(algorithm, &point)
        .map_err(|_| format!("the point is not on {curve}"))?;
    Ok(Material::Ec { curve, key })
}

fn okp_material(jwk: &Map<String, Value>) -> Result<Material, String> {
    match jwk.get("crv") {
        Some(Value::String(crv)) if crv == "Ed25519" => {}
        Some(Value::String(crv)) => {
            return Err(format!(
                "unsupported OKP curve {} (only Ed25519)",
                printable(crv.as_str())
            ));
        }
        Some(_) => return Err("\"crv\" is not a string".into()),
        None => return Err("\"crv\" is missing".into()),
    }
    let x = member_bytes(jwk, "x")?;
    let x: [u8; 32] = x
        .try_into()
        .map_err(|_| "an Ed25519 \"x\" must be 32 bytes".to_owned())?;
    let key = ParsedPublicKey::new(&sig::ED25519, x)
        .map_err(|_| "invalid Ed25519 public key".to_owned())?;
    Ok(Material::Ed25519 { x, key })
}

/// A value from a JWK Set, quoted and truncated for logs and errors.
fn printable(text: &str) -> String {
    let short: String = text.chars().take(64).collect();
    format!("{short:?}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SigningKey;
    use openssl::bn::{BigNum, BigNumContext};
    use openssl::ec::EcGroup;
    use openssl::nid::Nid;

    fn set_of(keys: &[Value]) -> Result<JwkSet, JwkSetError> {
        JwkSet::from_value(&serde_json::json!({ "keys": keys }))
    }

    #[test]
    fn our_keys_parse_and_fit_only_their_algorithm() {
        for alg in Algorithm::ALL {
            let key = SigningKey::generate(alg).unwrap();
            let set = set_of(&[key.public_jwk().to_value()]).unwrap();
            assert_eq!(set.len(), 1, "{alg}");
            let parsed = set.get(key.kid()).unwrap();
            for other in Algorithm::ALL {
                assert_eq!(parsed.fits(other), other == alg, "{alg} vs {other}");
            }
            let input = b"header.payload";
            let signature = key.sign(input).unwrap();
            assert_eq!(parsed.verify(alg, input, &signature), Ok(()));
            assert_eq!(
                parsed.verify(alg, b"header.payloaD", &signature),
                Err(SignatureError::Invalid)
            );
        }
    }

    #[test]
    fn rsa_without_alg_fits_every_rsa_algorithm() {
        let key = SigningKey::generate(Algorithm::PS256).unwrap();
        let mut jwk = key.public_jwk().to_value();
        jwk.as_object_mut().unwrap().remove("alg");
        let set = set_of(&[jwk]).unwrap();
        let parsed = &set.keys()[0];
        for alg in Algorithm::ALL {
            assert_eq!(parsed.fits(alg), alg.is_rsa(), "{alg}");
        }
    }

    #[test]
    fn private_members_and_duplicate_kids_refuse_the_whole_set() {
        let key = SigningKey::generate(Algorithm::ES256).unwrap();
        let public = key.public_jwk().to_value();
        let private: Value = serde_json::from_str(&key.to_private_jwk().unwrap()).unwrap();
        assert!(matches!(
            set_of(&[public.clone(), private]),
            Err(JwkSetError::PrivateMember {
                index: 1,
                member: "d"
            })
        ));
        assert!(matches!(
            set_of(&[public.clone(), public]),
            Err(JwkSetError::DuplicateKid(_))
        ));
        assert!(matches!(JwkSet::parse(b"[]"), Err(JwkSetError::NotASet(_))));
        assert!(matches!(
            JwkSet::parse(b"{\"keys\":{}}"),
            Err(JwkSetError::NotASet(_))
        ));
        assert!(matches!(
            JwkSet::parse(b"nope"),
            Err(JwkSetError::NotJson(_))
        ));
    }

    #[test]
    fn bad_keys_are_skipped_one_by_one() {
        let good = SigningKey::generate(Algorithm::ES256).unwrap();
        let mut wrong_use = SigningKey::generate(Algorithm::ES256)
            .unwrap()
            .public_jwk()
            .to_value();
        wrong_use["use"] = "enc".into();
        let mut short_x = SigningKey::generate(Algorithm::ES256)
            .unwrap()
            .public_jwk()
            .to_value();
        short_x["x"] = b64::encode([1u8; 31]).into();
        let set = set_of(&[
            serde_json::json!(42),
            wrong_use,
            good.public_jwk().to_value(),
            serde_json::json!({"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "tiny"}),
            short_x,
            serde_json::json!({"kty": "EC", "crv": "P-256", "alg": "HS256", "x": "", "y": ""}),
            serde_json::json!({"kty": "OKP", "crv": "Ed448", "x": ""}),
        ])
        .unwrap();
        assert_eq!(set.len(), 1);
        assert!(set.get(good.kid()).is_some());
        let skipped: Vec<usize> = set.skipped().iter().map(SkippedKey::index).collect();
        assert_eq!(skipped, vec![0, 1, 3, 4, 5, 6]);
    }

    #[test]
    fn keys_anyone_can_forge_for_are_skipped_with_their_weakness() {
        let good = SigningKey::generate(Algorithm::ES256).unwrap();
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let prime = BigNum::get_rfc3526_prime_2048().unwrap();
        let mut three_q = BigNum::get_rfc3526_prime_2048().unwrap();
        three_q.mul_word(3).unwrap();
        let rsa = |n: &BigNum, kid: &str| serde_json::json!({"kty": "RSA", "n": b64::encode(n.to_vec()), "e": "AQAB", "kid": kid});
        let set = set_of(&[
            serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": b64::encode(identity), "kid": "id"}),
            rsa(&prime, "prime"),
            good.public_jwk().to_value(),
            rsa(&three_q, "three-q"),
        ])
        .unwrap();
        assert_eq!(set.len(), 1);
        assert!(set.get(good.kid()).is_some());
        let skipped: Vec<(usize, Option<WeakKey>)> = set
            .skipped()
            .iter()
            .map(|s| (s.index(), s.weakness()))
            .collect();
        assert_eq!(
            skipped,
            vec![
                (0, Some(WeakKey::Ed25519SmallOrder)),
                (1, Some(WeakKey::RsaPrimeModulus)),
                (3, Some(WeakKey::RsaSmallFactor { factor: 3 })),
            ]
        );
        assert!(set.skipped()[0].reason().contains("small-order"));
    }

    #[test]
    fn a_passed_deadline_stops_the_parse_between_keys() {
        let key = SigningKey::generate(Algorithm::ES256).unwrap();
        let json = serde_json::to_vec(&serde_json::json!({"keys": [key.public_jwk().to_value()]}))
            .unwrap();
        let now = Some(Instant::now());
        assert!(matches!(JwkSet::parse_until(&json, now), Err(OutOfTime)));
        // Whole-set refusals and an empty set need no key check.
        assert!(matches!(
            JwkSet::parse_until(b"[]", now),
            Ok(Err(JwkSetError::NotASet(_)))
        ));
        assert!(
            matches!(JwkSet::parse_until(br#"{"keys":[]}"#, now), Ok(Ok(set)) if set.is_empty())
        );
        let later = Instant::now().checked_add(std::time::Duration::from_secs(3600));
        for deadline in [None, later] {
            let Ok(Ok(set)) = JwkSet::parse_until(&json, deadline) else {
                panic!("the set parses");
            };
            assert_eq!(set.len(), 1);
        }
    }

    #[test]
    fn ecdsa_signature_shape_is_strict() {
        let key = SigningKey::generate(Algorithm::ES256).unwrap();
        let set = set_of(&[key.public_jwk().to_value()]).unwrap();
        let parsed = &set.keys()[0];
        let input = b"a.b";
        let good = key.sign(input).unwrap();
        assert_eq!(good.len(), 64);
        let mut long = good.clone();
        long.push(0);
        assert_eq!(
            parsed.verify(Algorithm::ES256, input, &long),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            parsed.verify(Algorithm::ES256, input, &good[..63]),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            parsed.verify(Algorithm::ES256, input, &[0u8; 64]),
            Err(SignatureError::Malformed)
        );
        let mut s_is_order = good[..32].to_vec();
        s_is_order.extend(hex_order_p256().iter().copied());
        assert_eq!(
            parsed.verify(Algorithm::ES256, input, &s_is_order),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn rsa_moduli_above_8192_bits_and_exponents_above_33_bits_are_skipped() {
        let key = SigningKey::generate(Algorithm::RS256).unwrap();
        let jwk = key.public_jwk().to_value();
        let with = |n: Vec<u8>, e: &[u8]| {
            let mut jwk = jwk.clone();
            jwk["kid"] = b64::encode(e).into();
            jwk["n"] = b64::encode(n).into();
            jwk["e"] = b64::encode(e).into();
            jwk
        };
        let n = b64::decode(jwk["n"].as_str().unwrap()).unwrap();
        let mut huge = vec![0xff; 1025];
        huge[0] = 1;
        let set = set_of(&[
            with(n.clone(), &[0x01, 0x00, 0x00, 0x00, 0x01]), // 2^32 + 1: 33 bits
            with(n.clone(), &[0x02, 0x00, 0x00, 0x00, 0x01]), // 2^33 + 1: 34 bits
            with(huge, &[0x01, 0x00, 0x01]),                  // 8193 bits
        ]);
        let set = set.unwrap();
        assert_eq!(set.len(), 1);
        let reasons: Vec<&str> = set.skipped().iter().map(SkippedKey::reason).collect();
        assert!(reasons[0].contains("longer than 33 bits"), "{reasons:?}");
        assert!(reasons[1].contains("8193 bits is too large"), "{reasons:?}");
    }

    /// The group order, as OpenSSL (an independent implementation) has it.
    fn openssl_order(nid: Nid) -> Vec<u8> {
        let group = EcGroup::from_curve_name(nid).unwrap();
        let mut order = BigNum::new().unwrap();
        group
            .order(&mut order, &mut BigNumContext::new().unwrap())
            .unwrap();
        order.to_vec_padded(66).unwrap()
    }

    fn hex_order_p256() -> Vec<u8> {
        openssl_order(Nid::X9_62_PRIME256V1)[34..].to_vec()
    }

    #[test]
    fn curve_orders_are_the_curves_own() {
        for (curve, nid) in [
            (EcCurve::P256, Nid::X9_62_PRIME256V1),
            (EcCurve::P384, Nid::SECP384R1),
            (EcCurve::P521, Nid::SECP521R1),
        ] {
            let order = openssl_order(nid);
            assert_eq!(curve_order(curve), &order[66 - curve.coordinate_len()..]);
        }
    }
}

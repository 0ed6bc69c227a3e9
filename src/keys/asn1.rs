//! The DER structures around keys: PKCS#8 `PrivateKeyInfo` (RFC 5208,
//! RFC 5958), X.509 `SubjectPublicKeyInfo` (RFC 5280), PKCS#1
//! `RSAPrivateKey` (RFC 8017) and SEC 1 `ECPrivateKey` (RFC 5915), and PEM.
//!
//! aws-lc-rs parses keys for itself, but says only "rejected" and never
//! hands back the members of a private key. These parsers (RustCrypto's
//! `pkcs8`, `spki`, `pkcs1` and `sec1`, which do no cryptography) say what
//! a key is, so that a refusal names the key it got (an RSA key of 1024
//! bits, an EC key on P-384, an Ed448 key), and give the private members
//! that a private JWK export needs.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use der::asn1::{ObjectIdentifier as Oid, OctetStringRef};
use der::{Decode, Encode, Tagged};
use spki::AlgorithmIdentifierRef;

use super::EcCurve;

const RSA_ENCRYPTION: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
const RSASSA_PSS: Oid = Oid::new_unwrap("1.2.840.113549.1.1.10");
const EC_PUBLIC_KEY: Oid = Oid::new_unwrap("1.2.840.10045.2.1");
const ED25519: Oid = Oid::new_unwrap("1.3.101.112");
const ED448: Oid = Oid::new_unwrap("1.3.101.113");
const X25519: Oid = Oid::new_unwrap("1.3.101.110");
const X448: Oid = Oid::new_unwrap("1.3.101.111");
const DSA: Oid = Oid::new_unwrap("1.2.840.10040.4.1");
const DH_PKCS3: Oid = Oid::new_unwrap("1.2.840.113549.1.3.1");
const DH_X942: Oid = Oid::new_unwrap("1.2.840.10046.2.1");
const P256: Oid = Oid::new_unwrap("1.2.840.10045.3.1.7");
const P384: Oid = Oid::new_unwrap("1.3.132.0.34");
const P521: Oid = Oid::new_unwrap("1.3.132.0.35");

impl EcCurve {
    fn oid(self) -> Oid {
        match self {
            EcCurve::P256 => P256,
            EcCurve::P384 => P384,
            EcCurve::P521 => P521,
        }
    }

    fn from_oid(oid: Oid) -> Option<Self> {
        [EcCurve::P256, EcCurve::P384, EcCurve::P521]
            .into_iter()
            .find(|curve| curve.oid() == oid)
    }
}

/// A private key as its PKCS#8 structure holds it.
pub(crate) enum PrivateParts<'a> {
    /// An `rsaEncryption` key.
    Rsa(pkcs1::RsaPrivateKey<'a>),
    /// An `id-ecPublicKey` key; `curve` is `None` for a curve we do not
    /// sign with.
    Ec {
        curve: Option<EcCurve>,
        /// The DER `ECPrivateKey`, for aws-lc-rs.
        sec1: &'a [u8],
    },
    /// An Ed25519 key: its 32-byte seed.
    Ed25519 { seed: &'a [u8] },
    /// Any other key, described for an error message.
    Other(String),
}

/// A public key as its `SubjectPublicKeyInfo` holds it.
pub(crate) enum PublicParts {
    /// `n` and `e`, big-endian without leading zeros.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// The uncompressed point `04 || x || y` (SEC 1 section 2.3.3) on a
    /// curve we sign with, checked to be on the curve; `None` for another
    /// curve.
    Ec {
        curve: Option<EcCurve>,
        point: Vec<u8>,
    },
    /// The 32-byte Ed25519 public key (RFC 8032 section 5.1.2).
    Ed25519 { x: Vec<u8> },
    /// Any other key, described for an error message.
    Other(String),
}

/// A DER decoding error as a short reason.
fn reason(err: der::Error) -> String {
    format!("malformed DER ({})", err.kind())
}

/// Parses a PKCS#8 `PrivateKeyInfo` (v1, or v2 with its public key).
pub(crate) fn parse_pkcs8(der: &[u8]) -> Result<PrivateParts<'_>, String> {
    let info = pkcs8::PrivateKeyInfo::from_der(der).map_err(reason)?;
    let algorithm = info.algorithm;
    Ok(match algorithm.oid {
        RSA_ENCRYPTION => PrivateParts::Rsa(
            pkcs1::RsaPrivateKey::from_der(info.private_key)
                .map_err(|err| format!("not a PKCS#1 RSAPrivateKey: {}", reason(err)))?,
        ),
        EC_PUBLIC_KEY => {
            let key = sec1::EcPrivateKey::from_der(info.private_key)
                .map_err(|err| format!("not a SEC 1 ECPrivateKey: {}", reason(err)))?;
            let named = key
                .parameters
                .map(|sec1::EcParameters::NamedCurve(oid)| oid);
            let curve = match (algorithm.parameters_oid().ok(), named) {
                (Some(outer), Some(inner)) if outer != inner => {
                    return Err("the curve of the key and of its algorithm differ".to_owned());
                }
                (Some(oid), _) | (None, Some(oid)) => EcCurve::from_oid(oid),
                (None, None) => None,
            };
            PrivateParts::Ec {
                curve,
                sec1: info.private_key,
            }
        }
        ED25519 => {
            // CurvePrivateKey ::= OCTET STRING, inside the privateKey octets.
            let seed = OctetStringRef::from_der(info.private_key)
                .map_err(|err| format!("not an Ed25519 CurvePrivateKey: {}", reason(err)))?
                .as_bytes();
            if seed.len() != 32 {
                return Err(format!("an Ed25519 seed of {} bytes", seed.len()));
            }
            PrivateParts::Ed25519 { seed }
        }
        _ => PrivateParts::Other(describe_other(&algorithm)),
    })
}

/// Parses an X.509 `SubjectPublicKeyInfo`.
pub(crate) fn parse_spki(der: &[u8]) -> Result<PublicParts, String> {
    let spki = spki::SubjectPublicKeyInfoRef::from_der(der).map_err(reason)?;
    let key = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| "the public key is not a whole number of bytes".to_owned())?;
    Ok(match spki.algorithm.oid {
        RSA_ENCRYPTION => {
            let rsa = pkcs1::RsaPublicKey::from_der(key)
                .map_err(|err| format!("not a PKCS#1 RSAPublicKey: {}", reason(err)))?;
            PublicParts::Rsa {
                n: rsa.modulus.as_bytes().to_vec(),
                e: rsa.public_exponent.as_bytes().to_vec(),
            }
        }
        EC_PUBLIC_KEY => {
            let curve = spki
                .algorithm
                .parameters_oid()
                .ok()
                .and_then(EcCurve::from_oid);
            let point = match curve {
                Some(curve) => uncompressed_point(curve, key)?,
                None => key.to_vec(),
            };
            PublicParts::Ec { curve, point }
        }
        ED25519 => PublicParts::Ed25519 { x: key.to_vec() },
        _ => PublicParts::Other(describe_other(&spki.algorithm)),
    })
}

/// The uncompressed form `04 || x || y` of a point on `curve`, given
/// uncompressed or compressed (SEC 1 section 2.3.3), checked to be on the
/// curve.
fn uncompressed_point(curve: EcCurve, point: &[u8]) -> Result<Vec<u8>, String> {
    use aws_lc_rs::signature as sig;
    let len = curve.coordinate_len();
    let point = match point.first() {
        Some(0x04) if point.len() == 1 + 2 * len => point.to_vec(),
        Some(&prefix @ (0x02 | 0x03)) if point.len() == 1 + len => {
            decompress(curve, &point[1..], prefix == 0x03)
                .ok_or_else(|| format!("the point is not on {curve}"))?
        }
        _ => return Err(format!("not an encoded {curve} point")),
    };
    let algorithm = match curve {
        EcCurve::P256 => &sig::ECDSA_P256_SHA256_FIXED,
        EcCurve::P384 => &sig::ECDSA_P384_SHA384_FIXED,
        EcCurve::P521 => &sig::ECDSA_P521_SHA512_FIXED,
    };
    sig::ParsedPublicKey::new(algorithm, &point)
        .map_err(|_| format!("the point is not on {curve}"))?;
    Ok(point)
}

/// The uncompressed point with x-coordinate `x` whose y is odd or even as
/// asked, `None` when no point has that x. aws-lc-rs reads compressed
/// points but only gives back the ones of its own keys, so the square root
/// is ours: on these curves (`y^2 = x^3 - 3x + b` over a prime `p` with
/// `p = 3 mod 4`) it is `(x^3 - 3x + b)^((p + 1) / 4)`, checked by squaring
/// it back.
fn decompress(curve: EcCurve, x: &[u8], odd: bool) -> Option<Vec<u8>> {
    use num_bigint::BigUint;
    let (p, b) = curve_params(curve);
    let (p, b) = (BigUint::from_bytes_be(&p), BigUint::from_bytes_be(&b));
    let x = BigUint::from_bytes_be(x);
    if x >= p {
        return None;
    }
    let three_x = (&x * 3u32) % &p;
    let rhs = ((&x * &x % &p * &x) + &p - three_x + b) % &p;
    let mut y = rhs.modpow(&((&p + 1u32) >> 2), &p);
    if (&y * &y) % &p != rhs {
        return None;
    }
    if y.bit(0) != odd {
        if y == BigUint::from(0u32) {
            return None;
        }
        y = &p - y;
    }
    let len = curve.coordinate_len();
    let mut point = vec![0x04];
    for value in [x, y] {
        let bytes = value.to_bytes_be();
        point.extend(std::iter::repeat_n(0, len - bytes.len()));
        point.extend(bytes);
    }
    Some(point)
}

/// The field prime `p` and the constant `b` of each curve (`a = -3` for all
/// three), big-endian (FIPS 186-4 appendix D.1.2).
fn curve_params(curve: EcCurve) -> (Vec<u8>, Vec<u8>) {
    let hex = |text: &str| -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap_or(0))
            .collect()
    };
    let (p, b) = match curve {
        EcCurve::P256 => (
            "ffffffff00000001000000000000000000000000ffffffffffffffffffffffff",
            "5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604b",
        ),
        EcCurve::P384 => (
            "fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffeffffffff0000000000000000ffffffff",
            "b3312fa7e23ee7e4988e056be3f82d19181d9c6efe8141120314088f5013875ac656398d8a2ed19d2a85c8edd3ec2aef",
        ),
        EcCurve::P521 => (
            "01ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            "0051953eb9618e1c9a1f929a21a0b68540eea2da725b99b315f3b8b489918ef109e156193951ec7e937b1652c0bd3bb1bf073573df883d2c34f1ef451fd46b503f00",
        ),
    };
    (hex(p), hex(b))
}

/// Whether `der` is a public key or a certificate rather than a private
/// key: a `SubjectPublicKeyInfo`, or the three parts of an X.509
/// `Certificate` (RFC 5280 section 4.1).
pub(crate) fn is_public(der: &[u8]) -> bool {
    if spki::SubjectPublicKeyInfoRef::from_der(der).is_ok() {
        return true;
    }
    #[derive(der::Sequence)]
    struct Certificate<'a> {
        tbs_certificate: der::asn1::AnyRef<'a>,
        signature_algorithm: AlgorithmIdentifierRef<'a>,
        signature: der::asn1::BitStringRef<'a>,
    }
    Certificate::from_der(der).is_ok_and(|cert| cert.tbs_certificate.tag() == der::Tag::Sequence)
}

/// A key of a type we never sign with, for an error message.
fn describe_other(algorithm: &AlgorithmIdentifierRef<'_>) -> String {
    match algorithm.oid {
        RSASSA_PSS => "an RSA-PSS restricted key (use a plain rsaEncryption key)".to_owned(),
        ED448 => "an Ed448 key (not supported)".to_owned(),
        X25519 | X448 => "a key-agreement key (X25519/X448), not a signing key".to_owned(),
        DSA => "a DSA key".to_owned(),
        DH_PKCS3 | DH_X942 => "a Diffie-Hellman key".to_owned(),
        oid => format!("a key of unsupported type (OID {oid})"),
    }
}

/// The curve a SEC 1 `ECPrivateKey` names in its parameters (`None` for
/// a key without parameters or on a curve we do not sign with).
pub(crate) fn sec1_curve(der: &[u8]) -> Result<Option<EcCurve>, String> {
    let key = sec1::EcPrivateKey::from_der(der)
        .map_err(|err| format!("not a SEC 1 ECPrivateKey: {}", reason(err)))?;
    Ok(key
        .parameters
        .and_then(|sec1::EcParameters::NamedCurve(oid)| EcCurve::from_oid(oid)))
}

/// The SEC 1 `ECPrivateKey` of the scalar `d` (fixed length) on `curve`,
/// without its public key: aws-lc-rs derives the public point from it.
pub(crate) fn sec1_private_key(curve: EcCurve, d: &[u8]) -> Result<Vec<u8>, String> {
    sec1::EcPrivateKey {
        private_key: d,
        parameters: Some(sec1::EcParameters::NamedCurve(curve.oid())),
        public_key: None,
    }
    .to_der()
    .map_err(reason)
}

/// The body of the first PEM block labelled `label` (RFC 7468), decoded.
/// Text before the block is ignored, as OpenSSL does.
pub(crate) fn pem_decode(pem: &[u8], label: &str) -> Result<Vec<u8>, String> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let find = |haystack: &[u8], needle: &str| {
        haystack
            .windows(needle.len())
            .position(|w| w == needle.as_bytes())
    };
    let start = find(pem, &begin).ok_or("no \"-----BEGIN ...-----\" line")? + begin.len();
    let body = &pem[start..];
    let stop = find(body, &end).ok_or_else(|| format!("no \"{end}\" line"))?;
    let body = &body[..stop];
    if body.contains(&b':') {
        return Err("PEM headers (a legacy encrypted key?) are not supported".to_owned());
    }
    let text: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if text.is_empty() {
        return Err("the PEM block is empty".to_owned());
    }
    STANDARD
        .decode(&text)
        .map_err(|_| "the PEM body is not base64".to_owned())
}

/// `der` as a PEM block labelled `label`, in lines of 64 characters.
pub(crate) fn pem_encode(der: &[u8], label: &str) -> String {
    let body = STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        // base64 is ASCII.
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trips_and_ignores_text_around_the_block() {
        let der: Vec<u8> = (0..=255).collect();
        let pem = pem_encode(&der, "PRIVATE KEY");
        assert!(pem.lines().all(|line| line.len() <= 64));
        assert_eq!(pem_decode(pem.as_bytes(), "PRIVATE KEY").unwrap(), der);
        let wrapped = format!("Bag Attributes\n  friendlyName: x\n{pem}trailing\n");
        assert_eq!(pem_decode(wrapped.as_bytes(), "PRIVATE KEY").unwrap(), der);
        let crlf = pem.replace('\n', "\r\n");
        assert_eq!(pem_decode(crlf.as_bytes(), "PRIVATE KEY").unwrap(), der);
        assert!(pem_decode(pem.as_bytes(), "PUBLIC KEY").is_err());
        assert!(pem_decode(&pem.as_bytes()[..pem.len() / 2], "PRIVATE KEY").is_err());
    }

    /// A compressed SPKI (OpenSSL writes it) gives the key its uncompressed
    /// SPKI gives, for both parities of y, on every curve; our curve
    /// constants are OpenSSL's.
    #[test]
    fn compressed_points_decompress_to_the_same_key() {
        use openssl::bn::{BigNum, BigNumContext};
        use openssl::ec::{EcGroup, EcKey, PointConversionForm};
        use openssl::nid::Nid;
        let mut ctx = BigNumContext::new().unwrap();
        for (curve, nid) in [
            (EcCurve::P256, Nid::X9_62_PRIME256V1),
            (EcCurve::P384, Nid::SECP384R1),
            (EcCurve::P521, Nid::SECP521R1),
        ] {
            let group = EcGroup::from_curve_name(nid).unwrap();
            let (mut p, mut a, mut b) = (
                BigNum::new().unwrap(),
                BigNum::new().unwrap(),
                BigNum::new().unwrap(),
            );
            group
                .components_gfp(&mut p, &mut a, &mut b, &mut ctx)
                .unwrap();
            let len = i32::try_from(curve.coordinate_len()).unwrap();
            let (our_p, our_b) = curve_params(curve);
            assert_eq!(our_p, p.to_vec_padded(len).unwrap(), "{curve} p");
            assert_eq!(our_b, b.to_vec_padded(len).unwrap(), "{curve} b");
            let mut parities = [false; 2];
            for _ in 0..16 {
                let key = EcKey::generate(&group).unwrap();
                let public = key.public_key();
                let uncompressed = public
                    .to_bytes(&group, PointConversionForm::UNCOMPRESSED, &mut ctx)
                    .unwrap();
                let compressed = public
                    .to_bytes(&group, PointConversionForm::COMPRESSED, &mut ctx)
                    .unwrap();
                parities[usize::from(compressed[0] == 0x03)] = true;
                assert_eq!(
                    uncompressed_point(curve, &compressed).unwrap(),
                    uncompressed
                );
                assert_eq!(
                    uncompressed_point(curve, &uncompressed).unwrap(),
                    uncompressed
                );
            }
            assert_eq!(parities, [true, true], "{curve}: both parities seen");
            // An x with no point on the curve, and one past p.
            let mut bad = vec![0x02];
            bad.extend(std::iter::repeat_n(0xff, curve.coordinate_len()));
            assert!(uncompressed_point(curve, &bad).is_err());
        }
    }

    #[test]
    fn a_spki_with_a_compressed_point_gives_the_same_public_jwk() {
        use crate::keys::{Algorithm, PublicJwk, SigningKey};
        for alg in [Algorithm::ES256, Algorithm::ES384, Algorithm::ES512] {
            let key = SigningKey::generate(alg).unwrap();
            let jwk = key.public_jwk().to_value();
            let coordinate = |name: &str| crate::b64::decode(jwk[name].as_str().unwrap()).unwrap();
            let (x, y) = (coordinate("x"), coordinate("y"));
            let mut compressed = vec![0x02 | (y[y.len() - 1] & 1)];
            compressed.extend(&x);
            let curve = match alg.key_kind() {
                crate::keys::KeyKind::Ec(curve) => curve,
                _ => unreachable!(),
            };
            let oid = curve.oid();
            let params = der::asn1::AnyRef::from(&oid);
            let spki = spki::SubjectPublicKeyInfoRef {
                algorithm: AlgorithmIdentifierRef {
                    oid: EC_PUBLIC_KEY,
                    parameters: Some(params),
                },
                subject_public_key: der::asn1::BitStringRef::from_bytes(&compressed).unwrap(),
            }
            .to_der()
            .unwrap();
            let from_compressed = PublicJwk::from_spki_der(&spki, alg, None).unwrap();
            assert_eq!(&from_compressed, key.public_jwk(), "{alg}");
        }
    }

    #[test]
    fn curve_oids_are_the_named_curves() {
        for curve in [EcCurve::P256, EcCurve::P384, EcCurve::P521] {
            assert_eq!(EcCurve::from_oid(curve.oid()), Some(curve));
        }
        assert_eq!(EcCurve::from_oid(Oid::new_unwrap("1.3.132.0.10")), None);
    }
}

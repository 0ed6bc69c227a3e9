//! DER SubjectPublicKeyInfo (RFC 5280) of a public key given by its parts:
//! an RSA modulus and exponent, an EC point, an Ed25519 point. A device
//! (a PKCS#11 token) hands out those parts; [`PublicJwk::from_spki_der`]
//! reads the result, so a key kept in a device gets its JWK and kid by the
//! same code, and the same checks, as a key held in this process.
//!
//! [`PublicJwk::from_spki_der`]: super::PublicJwk::from_spki_der

use super::EcCurve;

/// rsaEncryption, 1.2.840.113549.1.1.1.
const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// id-ecPublicKey, 1.2.840.10045.2.1.
const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// id-Ed25519, 1.3.101.112.
pub(crate) const ED25519: &[u8] = &[0x2b, 0x65, 0x70];

/// The OID (content octets) of a curve.
pub(crate) fn curve_oid(curve: EcCurve) -> &'static [u8] {
    match curve {
        // prime256v1, 1.2.840.10045.3.1.7
        EcCurve::P256 => &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
        // secp384r1, 1.3.132.0.34
        EcCurve::P384 => &[0x2b, 0x81, 0x04, 0x00, 0x22],
        // secp521r1, 1.3.132.0.35
        EcCurve::P521 => &[0x2b, 0x81, 0x04, 0x00, 0x23],
    }
}

/// The SPKI of an RSA key: `n` and `e` as big-endian unsigned integers.
pub(crate) fn rsa(n: &[u8], e: &[u8]) -> Vec<u8> {
    let key = tlv(0x30, &[integer(n), integer(e)].concat());
    spki(
        &tlv(0x30, &[oid(RSA_ENCRYPTION), tlv(0x05, &[])].concat()),
        &key,
    )
}

/// The SPKI of an EC key: `point` is the uncompressed point `04 || x || y`.
pub(crate) fn ec(curve: EcCurve, point: &[u8]) -> Vec<u8> {
    spki(
        &tlv(0x30, &[oid(EC_PUBLIC_KEY), oid(curve_oid(curve))].concat()),
        point,
    )
}

/// The SPKI of an Ed25519 key: its 32-byte point.
pub(crate) fn ed25519(x: &[u8]) -> Vec<u8> {
    spki(&tlv(0x30, &oid(ED25519)), x)
}

/// The PKCS#8 `PrivateKeyInfo` (v1) around a traditional private key: a
/// PKCS#1 `RSAPrivateKey` (`curve` `None`) or a SEC 1 `ECPrivateKey` on
/// `curve`. The key itself is checked by the PKCS#8 importer.
pub(crate) fn pkcs8_of_traditional(key: &[u8], curve: Option<EcCurve>) -> Vec<u8> {
    let algorithm = match curve {
        None => tlv(0x30, &[oid(RSA_ENCRYPTION), tlv(0x05, &[])].concat()),
        Some(curve) => tlv(0x30, &[oid(EC_PUBLIC_KEY), oid(curve_oid(curve))].concat()),
    };
    tlv(0x30, &[tlv(0x02, &[0]), algorithm, tlv(0x04, key)].concat())
}

/// `OBJECT IDENTIFIER` of the content octets `content`.
pub(crate) fn oid(content: &[u8]) -> Vec<u8> {
    tlv(0x06, content)
}

fn spki(algorithm: &[u8], key: &[u8]) -> Vec<u8> {
    let mut bits = Vec::with_capacity(key.len() + 1);
    bits.push(0); // no unused bits
    bits.extend_from_slice(key);
    tlv(0x30, &[algorithm.to_vec(), tlv(0x03, &bits)].concat())
}

/// A non-negative `INTEGER`: leading zeros dropped, one added when the
/// high bit is set.
fn integer(value: &[u8]) -> Vec<u8> {
    let start = value.iter().position(|&b| b != 0).unwrap_or(value.len());
    let value = &value[start..];
    let mut content = Vec::with_capacity(value.len() + 1);
    if value.first().is_none_or(|&b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(value);
    tlv(0x02, &content)
}

/// Tag, definite length, value.
pub(crate) fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 6);
    out.push(tag);
    let len = value.len();
    if len < 0x80 {
        out.push(u8::try_from(len).expect("below 0x80"));
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(bytes.len() - 1);
        out.push(0x80 | u8::try_from(bytes.len() - skip).expect("at most 8 length octets"));
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(value);
    out
}

/// The content of a DER `OCTET STRING` (`04 len value`), or `None` when
/// `der` is not exactly one.
pub(crate) fn octet_string(der: &[u8]) -> Option<&[u8]> {
    let (&tag, rest) = der.split_first()?;
    if tag != 0x04 {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b));
        (len, &rest[count..])
    };
    (rest.len() == len).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Algorithm, PublicJwk, SigningKey};

    fn member(key: &SigningKey, name: &str) -> Vec<u8> {
        let jwk = key.public_jwk().to_value();
        crate::b64::decode(jwk[name].as_str().unwrap()).unwrap()
    }

    #[test]
    fn the_spki_of_a_keys_parts_gives_the_same_jwk_and_kid() {
        for alg in [
            Algorithm::RS256,
            Algorithm::ES256,
            Algorithm::ES384,
            Algorithm::ES512,
            Algorithm::EdDSA,
        ] {
            let key = SigningKey::generate(alg).unwrap();
            let der = match alg.key_kind() {
                crate::keys::KeyKind::Rsa => rsa(&member(&key, "n"), &member(&key, "e")),
                crate::keys::KeyKind::Ec(curve) => {
                    let point = [vec![4], member(&key, "x"), member(&key, "y")].concat();
                    ec(curve, &point)
                }
                crate::keys::KeyKind::Ed25519 => ed25519(&member(&key, "x")),
            };
            let jwk = PublicJwk::from_spki_der(&der, alg, None).unwrap();
            assert_eq!(&jwk, key.public_jwk(), "{alg}");
        }
    }

    #[test]
    fn integers_and_lengths_are_minimal() {
        assert_eq!(integer(&[0, 0, 1]), vec![2, 1, 1]);
        assert_eq!(integer(&[0x80]), vec![2, 2, 0, 0x80]);
        assert_eq!(tlv(4, &[0; 200])[..3], [4, 0x81, 200]);
        assert_eq!(tlv(4, &[0; 300])[..4], [4, 0x82, 1, 44]);
        let wrapped = tlv(4, &[7; 300]);
        assert_eq!(octet_string(&wrapped), Some(&[7u8; 300][..]));
        assert_eq!(octet_string(&[4, 2, 1]), None);
        assert_eq!(octet_string(&[3, 1, 1]), None);
    }
}

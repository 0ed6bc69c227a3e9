//! Public keys that anyone can forge signatures for, though they are well
//! formed: refused on import (signer side) and skipped in a JWK Set
//! (verifier side), by the same checks.
//!
//! * **Ed25519 small-order points.** edwards25519 has eight points of
//!   order 1, 2, 4 or 8. With such a public key `A`, `[k]A` stays in that
//!   small subgroup whatever the hash `k`, so the signature `R || S` with
//!   `S = 0` and `R` one of the eight points verifies (`[S]B = R + [k]A`)
//!   for any message, without any private key. The eight points have
//!   fourteen encodings: the canonical ones, the two points with `x = 0`
//!   (the identity and the order-2 point) with the sign bit set, and the
//!   non-canonical `y >= p` (`y = p` for `y = 0`, `y = p + 1` for `y = 1`)
//!   with either sign bit. All fourteen are refused.
//! * **An RSA modulus with a small prime factor** (below 2^16, found by
//!   trial division): dividing it out factors the modulus.
//! * **An RSA modulus that is prime**: then `lambda(n) = n - 1` and the
//!   private exponent `d = e^-1 mod (n - 1)` is one modular inversion away.
//!   Found by a Miller-Rabin test to the twelve prime bases 2 to 37. Every
//!   prime passes it and is refused. A genuine RSA modulus (a product of two
//!   large primes) fails it at the first base except with a negligible
//!   probability, so it costs one modular exponentiation: about 3 ms for
//!   2048 bits, 35 ms for 4096, 2 s for 16384 on the project's (busy)
//!   machine. A composite that passes is refused too, which only hurts its
//!   own publisher.
//! * **The ROCA fingerprint** (CVE-2017-15361): a modulus from the flawed
//!   Infineon generator can be factored.
//!
//! These checks find the keys for which a forgery is *trivial*; they are
//! not a factoring attempt. A publisher who knows its key's factors can
//! always sign, and a modulus whose factors are close together or otherwise
//! special may still be factored by others.

use std::convert::Infallible;
use std::fmt;
use std::time::Instant;

use openssl::bn::{BigNum, BigNumContext, BigNumRef};

/// Why a well-formed public key is refused: anyone, not only its holder,
/// can make signatures that verify with it. Key imports refuse such keys
/// with [`KeyError::WeakKey`](super::KeyError::WeakKey); the verifier's JWK
/// Sets skip them (`SkippedKey::weakness`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WeakKey {
    /// An Ed25519 public key that encodes one of the eight small-order
    /// points of edwards25519 (in any of its fourteen encodings): a fixed
    /// signature verifies for every message.
    Ed25519SmallOrder,
    /// An RSA modulus divisible by a prime below 2^16.
    RsaSmallFactor {
        /// The smallest such prime.
        factor: u32,
    },
    /// An RSA modulus that is (probably) prime: the private exponent is
    /// `e^-1 mod (n - 1)`.
    RsaPrimeModulus,
    /// An RSA modulus with the ROCA fingerprint (CVE-2017-15361).
    RsaRocaFingerprint,
}

impl fmt::Display for WeakKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeakKey::Ed25519SmallOrder => f.write_str(
                "the Ed25519 public key is a small-order point: anyone can forge signatures for it",
            ),
            WeakKey::RsaSmallFactor { factor } => write!(
                f,
                "the RSA modulus has the small factor {factor}: anyone can factor it and sign"
            ),
            WeakKey::RsaPrimeModulus => f.write_str(
                "the RSA modulus is prime: anyone can compute its private exponent and sign",
            ),
            WeakKey::RsaRocaFingerprint => f.write_str(
                "the RSA modulus has the ROCA fingerprint (CVE-2017-15361): the key can be factored",
            ),
        }
    }
}

impl std::error::Error for WeakKey {}

/// The y coordinates (little endian, sign bit clear) of the small-order
/// points, canonical and not: 0 and p (the order-4 points), 1 and p + 1
/// (the identity), the y of the four order-8 points, p - 1 (order 2).
const SMALL_ORDER_Y: [[u8; 32]; 7] = [
    [0; 32],
    {
        let mut one = [0; 32];
        one[0] = 1;
        one
    },
    [
        0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98,
        0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53,
        0xfc, 0x05,
    ],
    [
        0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67,
        0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac,
        0x03, 0x7a,
    ],
    p_plus(-1),
    p_plus(0),
    p_plus(1),
];

/// p + delta = 2^255 - 19 + delta, little endian (|delta| small).
const fn p_plus(delta: i8) -> [u8; 32] {
    let mut bytes = [0xff; 32];
    bytes[0] = (0xed_i16 + delta as i16) as u8;
    bytes[31] = 0x7f;
    bytes
}

/// Refuses the fourteen encodings of the small-order points. `x` is the
/// 32-byte public key (RFC 8032 section 5.1.2); other lengths are left to
/// the caller's length check.
pub(crate) fn check_ed25519(x: &[u8]) -> Result<(), WeakKey> {
    let Ok(x) = <[u8; 32]>::try_from(x) else {
        return Ok(());
    };
    let mut y = x;
    y[31] &= 0x7f;
    if SMALL_ORDER_Y.contains(&y) {
        Err(WeakKey::Ed25519SmallOrder)
    } else {
        Ok(())
    }
}

/// Trial division bound: every prime factor below it is found.
const TRIAL_LIMIT: usize = 1 << 16;
/// The number of odd primes below 2^16.
const ODD_PRIMES_LEN: usize = 6541;
/// The odd primes below 2^16, by a sieve at compile time.
static ODD_PRIMES: [u16; ODD_PRIMES_LEN] = odd_primes();

const fn odd_primes() -> [u16; ODD_PRIMES_LEN] {
    let mut composite = [false; TRIAL_LIMIT];
    let mut primes = [0u16; ODD_PRIMES_LEN];
    let mut count = 0;
    let mut i = 3;
    while i < TRIAL_LIMIT {
        if !composite[i] {
            primes[count] = i as u16;
            count += 1;
            // i * i < 2^16 only for i < 256 (and never overflows).
            if i < 256 {
                let mut j = i * i;
                while j < TRIAL_LIMIT {
                    composite[j] = true;
                    j += 2 * i;
                }
            }
        }
        i += 2;
    }
    assert!(count == ODD_PRIMES_LEN);
    primes
}

/// The Miller-Rabin bases: the first twelve primes.
const MILLER_RABIN_BASES: [u32; 12] = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37];

/// How long a check may run: the prime test of a large modulus is the
/// costly part (about 2 s per base for 16384 bits), so a JWK Set fetched
/// under a time bound stops between two steps once its time is up.
pub(crate) trait Budget {
    /// What running out of time is ([`Infallible`] for [`NoLimit`]).
    type Exhausted;

    /// `Err` once the time is up.
    fn check(&self) -> Result<(), Self::Exhausted>;
}

/// No time bound: key import, and sets parsed by the caller.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NoLimit;

impl Budget for NoLimit {
    type Exhausted = Infallible;

    fn check(&self) -> Result<(), Infallible> {
        Ok(())
    }
}

/// Until this instant (`None`: no bound). Wall time of the thread that
/// checks: the checks run off the async runtime.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Until(pub(crate) Option<Instant>);

/// The time of an [`Until`] is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OutOfTime;

impl Budget for Until {
    type Exhausted = OutOfTime;

    fn check(&self) -> Result<(), OutOfTime> {
        match self.0 {
            Some(deadline) if Instant::now() >= deadline => Err(OutOfTime),
            _ => Ok(()),
        }
    }
}

/// Refuses an RSA modulus that anyone can factor or invert at once: a
/// prime factor below 2^16, the ROCA fingerprint, or a modulus that passes
/// a Miller-Rabin test (a prime). Meant for moduli of 2048 bits or more
/// (checked before). The outer `Err` is the budget running out.
pub(crate) fn check_rsa_modulus<B: Budget>(
    n: &BigNumRef,
    budget: &B,
) -> Result<Result<(), WeakKey>, B::Exhausted> {
    if let Some(factor) = small_factor(n) {
        return Ok(Err(WeakKey::RsaSmallFactor { factor }));
    }
    if has_roca_fingerprint(n) {
        return Ok(Err(WeakKey::RsaRocaFingerprint));
    }
    // An OpenSSL failure (memory) is not a verdict on the key: the caller
    // reports it when it builds the key from the same numbers.
    if is_probable_prime(n, budget)?.unwrap_or(false) {
        return Ok(Err(WeakKey::RsaPrimeModulus));
    }
    Ok(Ok(()))
}

/// The smallest prime factor of `n` below 2^16, if any (2 included).
fn small_factor(n: &BigNumRef) -> Option<u32> {
    if !n.is_bit_set(0) {
        return Some(2);
    }
    // Two primes below 2^16 multiply to less than 2^32: one division by
    // their product tests both.
    for pair in ODD_PRIMES.chunks(2) {
        let product = pair.iter().map(|&p| u32::from(p)).product::<u32>();
        let Ok(residue) = n.mod_word(product) else {
            continue;
        };
        if let Some(&p) = pair.iter().find(|&&p| residue % u64::from(p) == 0) {
            return Some(u32::from(p));
        }
    }
    None
}

/// Miller-Rabin to [`MILLER_RABIN_BASES`]: `Some(true)` when `n` (odd,
/// above the largest base) is a strong probable prime to every base,
/// `None` when OpenSSL fails; the budget is checked before each base.
fn is_probable_prime<B: Budget>(n: &BigNumRef, budget: &B) -> Result<Option<bool>, B::Exhausted> {
    let mut ctx = BigNumContext::new().ok();
    let one = BigNum::from_u32(1).ok();
    let (Some(ctx), Some(one)) = (ctx.as_mut(), one) else {
        return Ok(None);
    };
    let Ok(mut n_minus_1) = BigNum::new() else {
        return Ok(None);
    };
    if n_minus_1.checked_sub(n, &one).is_err() {
        return Ok(None);
    }
    // n - 1 = d * 2^s with d odd.
    let mut s = 0;
    while !n_minus_1.is_bit_set(s) {
        s += 1;
    }
    let Ok(mut d) = BigNum::new() else {
        return Ok(None);
    };
    if d.rshift(&n_minus_1, s).is_err() {
        return Ok(None);
    }
    for base in MILLER_RABIN_BASES {
        budget.check()?;
        match strong_probable_prime(n, &n_minus_1, &d, s, base, &one, ctx) {
            Ok(true) => {}
            Ok(false) => return Ok(Some(false)),
            Err(_) => return Ok(None),
        }
    }
    Ok(Some(true))
}

/// One Miller-Rabin round: whether `n` is a strong probable prime to
/// `base`, with `n - 1 = d * 2^s`.
fn strong_probable_prime(
    n: &BigNumRef,
    n_minus_1: &BigNumRef,
    d: &BigNumRef,
    s: i32,
    base: u32,
    one: &BigNumRef,
    ctx: &mut BigNumContext,
) -> Result<bool, openssl::error::ErrorStack> {
    let base = BigNum::from_u32(base)?;
    let mut x = BigNum::new()?;
    x.mod_exp(&base, d, n, ctx)?;
    if *x == *one || *x == *n_minus_1 {
        return Ok(true);
    }
    for _ in 1..s {
        let mut square = BigNum::new()?;
        square.mod_sqr(&x, n, ctx)?;
        x = square;
        if *x == *n_minus_1 {
            return Ok(true);
        }
    }
    // A witness: n is composite.
    Ok(false)
}

/// The small primes of the ROCA fingerprint test (Nemec et al., "The Return
/// of Coppersmith's Attack", CCS 2017): a modulus from the flawed generator
/// is, modulo each of them, a power of 65537.
const ROCA_PRIMES: [u32; 38] = [
    3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97,
    101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167,
];

/// Whether `n` modulo every prime above lies in the subgroup generated by
/// 65537. A random modulus passes all 38 tests with a probability far below
/// 2^-60; every modulus from the flawed generator passes them.
fn has_roca_fingerprint(n: &BigNumRef) -> bool {
    ROCA_PRIMES.iter().all(|&p| {
        let Ok(residue) = n.mod_word(p) else {
            return false;
        };
        let p = u64::from(p);
        let generator = 65_537 % p;
        let mut power = 1u64;
        loop {
            if power == residue {
                return true;
            }
            power = power * generator % p;
            if power == 1 {
                return false;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Algorithm, KeyError, PublicJwk, SigningKey};
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;

    #[test]
    fn the_sieve_finds_the_odd_primes_below_2_to_the_16() {
        assert_eq!(&ODD_PRIMES[..6], &[3, 5, 7, 11, 13, 17]);
        assert_eq!(ODD_PRIMES[ODD_PRIMES_LEN - 1], 65_521);
        let is_prime = |p: u32| {
            (2..p)
                .take_while(|d| d * d <= p)
                .all(|d| !p.is_multiple_of(d))
        };
        let odd_primes: Vec<u32> = (3..1 << 16).step_by(2).filter(|&p| is_prime(p)).collect();
        assert!(ODD_PRIMES.iter().map(|&p| u32::from(p)).eq(odd_primes));
    }

    #[test]
    fn small_order_encodings_are_the_fourteen() {
        let mut refused = 0;
        for y in SMALL_ORDER_Y {
            for sign in [0, 0x80] {
                let mut x = y;
                x[31] |= sign;
                assert_eq!(check_ed25519(&x), Err(WeakKey::Ed25519SmallOrder));
                refused += 1;
            }
        }
        assert_eq!(refused, 14);
        // p - 1, p and p + 1 end in ec, ed, ee ff .. ff 7f.
        assert_eq!(SMALL_ORDER_Y[4][0], 0xec);
        assert_eq!(SMALL_ORDER_Y[6][0], 0xee);
        // A real key, and the order-8 y with one bit changed, pass.
        let pkey = openssl::pkey::PKey::generate_ed25519().unwrap();
        assert_eq!(check_ed25519(&pkey.raw_public_key().unwrap()), Ok(()));
        let mut near = SMALL_ORDER_Y[2];
        near[0] ^= 1;
        assert_eq!(check_ed25519(&near), Ok(()));
    }

    #[test]
    fn rsa_moduli_primes_small_factors_and_real_keys() {
        let prime = BigNum::get_rfc3526_prime_2048().unwrap();
        assert_eq!(
            check_rsa_modulus(&prime, &NoLimit).unwrap(),
            Err(WeakKey::RsaPrimeModulus)
        );
        for factor in [3u32, 65_521] {
            let mut n = BigNum::get_rfc3526_prime_2048().unwrap();
            n.mul_word(factor).unwrap();
            assert_eq!(
                check_rsa_modulus(&n, &NoLimit).unwrap(),
                Err(WeakKey::RsaSmallFactor { factor })
            );
        }
        // 65537 is the first prime past the bound: not found by division,
        // and 65537 * p is not prime.
        let mut n = BigNum::get_rfc3526_prime_2048().unwrap();
        n.mul_word(65_537).unwrap();
        assert_eq!(check_rsa_modulus(&n, &NoLimit).unwrap(), Ok(()));
        for _ in 0..2 {
            let rsa = Rsa::generate(2048).unwrap();
            assert_eq!(check_rsa_modulus(rsa.n(), &NoLimit).unwrap(), Ok(()));
        }
    }

    /// The public key of an Ed25519 SubjectPublicKeyInfo (RFC 8410).
    fn ed25519_spki(x: &[u8; 32]) -> Vec<u8> {
        let mut der = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        der.extend(x);
        der
    }

    fn weak(result: Result<impl fmt::Debug, KeyError>) -> WeakKey {
        match result {
            Err(KeyError::WeakKey(weak)) => weak,
            other => panic!("expected KeyError::WeakKey, got {other:?}"),
        }
    }

    #[test]
    fn spki_import_refuses_every_small_order_ed25519_encoding() {
        for y in SMALL_ORDER_Y {
            for sign in [0, 0x80] {
                let mut x = y;
                x[31] |= sign;
                let result = PublicJwk::from_spki_der(&ed25519_spki(&x), Algorithm::EdDSA, None);
                assert_eq!(weak(result), WeakKey::Ed25519SmallOrder, "{x:02x?}");
            }
        }
        let good = SigningKey::generate(Algorithm::EdDSA).unwrap();
        let x: [u8; 32] = good.public_jwk().to_value()["x"]
            .as_str()
            .map(|x| crate::b64::decode(x).unwrap().try_into().unwrap())
            .unwrap();
        assert!(PublicJwk::from_spki_der(&ed25519_spki(&x), Algorithm::EdDSA, None).is_ok());
    }

    #[test]
    fn spki_import_refuses_a_prime_modulus() {
        let n = BigNum::get_rfc3526_prime_2048().unwrap();
        let rsa = Rsa::from_public_components(n, BigNum::from_u32(65_537).unwrap()).unwrap();
        let der = PKey::from_rsa(rsa).unwrap().public_key_to_der().unwrap();
        let result = PublicJwk::from_spki_der(&der, Algorithm::RS256, None);
        assert_eq!(weak(result), WeakKey::RsaPrimeModulus);
    }

    /// A consistent private RSA key whose modulus is 3 q (q the RFC 3526
    /// prime): OpenSSL's own check accepts it, and anyone who divides the
    /// modulus by 3 has it.
    fn three_q_key() -> Rsa<openssl::pkey::Private> {
        let mut ctx = BigNumContext::new().unwrap();
        let q = BigNum::get_rfc3526_prime_2048().unwrap();
        let p = BigNum::from_u32(3).unwrap();
        let mut n = BigNum::new().unwrap();
        n.checked_mul(&p, &q, &mut ctx).unwrap();
        let e = BigNum::from_u32(65_537).unwrap();
        // lambda(n) = lcm(2, q - 1) = q - 1.
        let mut q1 = BigNum::new().unwrap();
        q1.checked_sub(&q, &BigNum::from_u32(1).unwrap()).unwrap();
        let mut d = BigNum::new().unwrap();
        d.mod_inverse(&e, &q1, &mut ctx).unwrap();
        let dp = BigNum::from_u32(1).unwrap(); // d mod 2, d is odd
        let mut dq = BigNum::new().unwrap();
        dq.nnmod(&d, &q1, &mut ctx).unwrap();
        let mut qi = BigNum::new().unwrap();
        qi.mod_inverse(&q, &p, &mut ctx).unwrap();
        let rsa = Rsa::from_private_components(n, e, d, p, q, dp, dq, qi).unwrap();
        assert!(rsa.check_key().unwrap(), "OpenSSL accepts the key");
        rsa
    }

    #[test]
    fn private_import_refuses_a_modulus_with_a_small_factor() {
        let rsa = three_q_key();
        let expected = WeakKey::RsaSmallFactor { factor: 3 };
        let pkey = PKey::from_rsa(rsa.clone()).unwrap();
        let der = pkey.private_key_to_pkcs8().unwrap();
        assert_eq!(
            weak(SigningKey::from_pkcs8_der(&der, Algorithm::RS256)),
            expected
        );
        let pem = pkey.private_key_to_pem_pkcs8().unwrap();
        assert_eq!(
            weak(SigningKey::from_pkcs8_pem(&pem, Algorithm::RS256)),
            expected
        );
        let b = |n: &BigNumRef| crate::b64::encode(n.to_vec());
        let jwk = serde_json::json!({
            "kty": "RSA", "alg": "RS256",
            "n": b(rsa.n()), "e": b(rsa.e()), "d": b(rsa.d()),
            "p": b(rsa.p().unwrap()), "q": b(rsa.q().unwrap()),
            "dp": b(rsa.dmp1().unwrap()), "dq": b(rsa.dmq1().unwrap()),
            "qi": b(rsa.iqmp().unwrap()),
        });
        assert_eq!(weak(SigningKey::from_jwk(&jwk.to_string(), None)), expected);
        let der = pkey.public_key_to_der().unwrap();
        let result = PublicJwk::from_spki_der(&der, Algorithm::RS256, None);
        assert_eq!(weak(result), expected);
    }

    #[test]
    fn a_passed_deadline_stops_the_prime_test() {
        let prime = BigNum::get_rfc3526_prime_2048().unwrap();
        let past = Until(Some(Instant::now()));
        assert_eq!(check_rsa_modulus(&prime, &past), Err(OutOfTime));
        // The cheap checks still answer first.
        let mut three_q = BigNum::get_rfc3526_prime_2048().unwrap();
        three_q.mul_word(3).unwrap();
        assert_eq!(
            check_rsa_modulus(&three_q, &past),
            Ok(Err(WeakKey::RsaSmallFactor { factor: 3 }))
        );
        let later = Until(Instant::now().checked_add(std::time::Duration::from_secs(3600)));
        assert_eq!(
            check_rsa_modulus(&prime, &later),
            Ok(Err(WeakKey::RsaPrimeModulus))
        );
    }

    #[test]
    fn random_rsa_moduli_do_not_look_like_roca() {
        for _ in 0..4 {
            let rsa = Rsa::generate(2048).unwrap();
            assert!(!has_roca_fingerprint(rsa.n()));
        }
    }
}

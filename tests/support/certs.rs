//! Certificate chains made in the test with rcgen (aws-lc-rs backend): a
//! root CA, an intermediate it issued, and leaf certificates the
//! intermediate issues for a signing key, as cert-manager's `tls.crt`
//! holds them (leaf first). Keys come out as PKCS#8 PEM, as `tls.key`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SignatureAlgorithm,
};
use time::OffsetDateTime;
use tower_jwt_signer::Algorithm;

/// A root and an intermediate CA.
pub struct Pki {
    root_key: KeyPair,
    root: Certificate,
    intermediate_key: KeyPair,
    intermediate: Certificate,
}

/// The rcgen algorithm that makes a key for `alg`.
pub fn rcgen_algorithm(alg: Algorithm) -> &'static SignatureAlgorithm {
    match alg {
        Algorithm::ES256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        Algorithm::ES384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        Algorithm::EdDSA => &rcgen::PKCS_ED25519,
        Algorithm::RS256 | Algorithm::PS256 => &rcgen::PKCS_RSA_SHA256,
        other => panic!("no rcgen key for {other} in these tests"),
    }
}

/// A fresh key for `alg` and its PKCS#8 PEM (`tls.key`).
pub fn key(alg: Algorithm) -> (KeyPair, String) {
    let key = KeyPair::generate_for(rcgen_algorithm(alg)).unwrap();
    let pem = key.serialize_pem();
    (key, pem)
}

/// `t` as rcgen's time type (whole seconds).
pub fn at(t: SystemTime) -> OffsetDateTime {
    let secs = t.duration_since(UNIX_EPOCH).unwrap().as_secs();
    OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap()).unwrap()
}

/// Now plus (or minus) whole days.
pub fn days_from_now(days: i64) -> OffsetDateTime {
    let now = SystemTime::now();
    let shift = Duration::from_secs(days.unsigned_abs() * 86_400);
    at(if days >= 0 { now + shift } else { now - shift })
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2090, 1, 1);
    params
}

impl Pki {
    /// A root (P-256) and an intermediate (P-384) it issued, valid from 2020
    /// to 2090.
    pub fn new() -> Self {
        let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let root = ca_params("test root CA").self_signed(&root_key).unwrap();
        let intermediate_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let intermediate = ca_params("test intermediate CA")
            .signed_by(&intermediate_key, &root, &root_key)
            .unwrap();
        Pki {
            root_key,
            root,
            intermediate_key,
            intermediate,
        }
    }

    /// The leaf certificate of `key`, valid from `not_before` to
    /// `not_after`, issued by the intermediate.
    pub fn leaf(
        &self,
        key: &KeyPair,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Certificate {
        let mut params = CertificateParams::new(vec!["gateway.test".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "gateway signing key");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = not_before;
        params.not_after = not_after;
        params
            .signed_by(key, &self.intermediate, &self.intermediate_key)
            .unwrap()
    }

    /// `tls.crt`: the leaf, the intermediate and the root, PEM, leaf first.
    pub fn chain_pem(
        &self,
        key: &KeyPair,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> String {
        let leaf = self.leaf(key, not_before, not_after);
        format!(
            "{}{}{}",
            leaf.pem(),
            self.intermediate.pem(),
            self.root.pem()
        )
    }

    /// A chain valid from 2020 to 2090.
    pub fn valid_chain_pem(&self, key: &KeyPair) -> String {
        self.chain_pem(
            key,
            rcgen::date_time_ymd(2020, 1, 1),
            rcgen::date_time_ymd(2090, 1, 1),
        )
    }

    /// The intermediate certificate, DER.
    pub fn intermediate_der(&self) -> Vec<u8> {
        self.intermediate.der().to_vec()
    }

    /// The root certificate, DER.
    pub fn root_der(&self) -> Vec<u8> {
        self.root.der().to_vec()
    }

    /// The root's key (unused but kept alive with its certificate).
    pub fn root_key(&self) -> &KeyPair {
        &self.root_key
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

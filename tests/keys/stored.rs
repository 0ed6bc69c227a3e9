//! Keys written before the crypto backend changed still load, with the same
//! kid, and still sign: `tests/data/dir-key-store-v1/` is a `DirKeyStore`
//! directory written by the OpenSSL build (one key per algorithm; RS384 is
//! 3072 bits, RS512 4096, the other RSA keys 2048) and the same keys as
//! that build's `to_pkcs8_pem` wrote them.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::{Value, json};
use tower_jwt_signer::registry::KeyState;
use tower_jwt_signer::store::KeyStore;
use tower_jwt_signer::verifier::{JwkSet, KeySource};
use tower_jwt_signer::{Algorithm, DirKeyStore, SigningKey, Verifier};

use crate::support::jose::{compact, openssl_verifies, their_thumbprint, unb64};

/// The kid of each key in the fixture, as the OpenSSL build computed it.
const KIDS: [(Algorithm, &str); 10] = [
    (
        Algorithm::RS256,
        "JJTmU_pWj1S3xE5nJEY2bks6sAKcTOGlCdcN_DyVCNE",
    ),
    (
        Algorithm::RS384,
        "_IMlCa0ShQzZ9nt0wsU5AabhMx0u-u-UVkiBFh923VA",
    ),
    (
        Algorithm::RS512,
        "4D3Ns9_qC4eM-SX4b-G4tvKx1Co8rPv_4kv-KGxT0WY",
    ),
    (
        Algorithm::PS256,
        "cJ__YZOgYwzcIMnsuuU0Bo-FL0UZvBWzOOEvVW3wR_M",
    ),
    (
        Algorithm::PS384,
        "46tWKHmUsne0qOK0SSbQzVPEmHY196al4UJvB-pimNA",
    ),
    (
        Algorithm::PS512,
        "rK3dEAOIBQgZ9t9GD2rCPH1_J7ir2-3j0J0_05jblGA",
    ),
    (
        Algorithm::ES256,
        "Plrj2vT-Fgj35Sng1PJb8TChcta783aHbQnLF6PN3zk",
    ),
    (
        Algorithm::ES384,
        "JXv8Tq7jTPbSVbksalwMyul8uvENjoxlaN4WAJhLZU8",
    ),
    (
        Algorithm::ES512,
        "9grCMfB9WSorIB1snQ2Pkkkz14XD2eXc4pL-QtWsz3Q",
    ),
    (
        Algorithm::EdDSA,
        "Z9ywMb-qLFcmCocb1L8ASOOkV_CwgXhjYeMTetM_Dd4",
    ),
];

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/dir-key-store-v1")
}

/// A private copy of the fixture's key directory (0700, files 0600, owned
/// by this process: a checkout's modes would be refused).
fn key_dir_copy() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    for entry in std::fs::read_dir(fixture().join("keys")).unwrap() {
        let entry = entry.unwrap();
        let to = dir.join(entry.file_name());
        std::fs::copy(entry.path(), &to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    (tmp, dir)
}

#[test]
fn a_key_directory_written_by_the_openssl_build_loads_with_the_same_kids_and_signs() {
    let (_tmp, dir) = key_dir_copy();
    let stored = DirKeyStore::open(&dir).unwrap().load().unwrap();
    assert_eq!(stored.len(), KIDS.len());
    let keys: Vec<&SigningKey> = stored
        .iter()
        .map(|s| &**s.key().expect("a private key, not a reference"))
        .collect();
    let set = JwkSet::from_public_jwks(keys.iter().map(|k| k.public_jwk()));
    assert_eq!(set.len(), KIDS.len());
    let verifier = Verifier::new(KeySource::fixed(set.clone()));
    for (alg, kid) in KIDS {
        let entry = stored
            .iter()
            .find(|s| s.algorithm() == alg)
            .unwrap_or_else(|| panic!("no {alg} key"));
        let key = entry.key().expect("a private key, not a reference");
        assert_eq!(key.kid().as_str(), kid, "{alg}");
        let expected_state = if alg == Algorithm::ES256 {
            KeyState::Active
        } else {
            KeyState::Next
        };
        assert_eq!(entry.state(), expected_state, "{alg}");

        // The public members are the file's, and the kid is still their
        // RFC 7638 thumbprint as another library computes it.
        let file: Value =
            serde_json::from_slice(&std::fs::read(dir.join(format!("{kid}.key.json"))).unwrap())
                .unwrap();
        let public = key.public_jwk().to_value();
        for member in ["kty", "crv", "x", "y", "n", "e", "kid", "alg"] {
            assert_eq!(
                public.get(member),
                file["private_jwk"].get(member),
                "{alg} {member}"
            );
        }
        assert_eq!(their_thumbprint(&public), kid, "{alg}");

        // It signs a token that our verifier and OpenSSL accept.
        let token = compact(key, &json!({"sub": "alice", "exp": 4_102_444_800u64}));
        let claims = verifier.verify_with(&token, &set).unwrap();
        assert_eq!(claims.kid(), Some(kid), "{alg}");
        let (input, signature) = token.rsplit_once('.').unwrap();
        assert!(
            openssl_verifies(&public, alg.as_str(), input.as_bytes(), &unb64(signature)),
            "{alg}"
        );
    }
}

#[test]
fn pkcs8_pem_written_by_the_openssl_build_imports_with_the_same_kids() {
    for (alg, kid) in KIDS {
        let pem = std::fs::read(fixture().join("pkcs8").join(format!("{alg}.pem"))).unwrap();
        let key = SigningKey::from_pkcs8_pem(&pem, alg).unwrap();
        assert_eq!(key.kid().as_str(), kid, "{alg}");
        let input = b"eyJhbGciOiJub25lIn0.e30";
        let signature = key.sign(input).unwrap();
        assert!(
            openssl_verifies(
                &key.public_jwk().to_value(),
                alg.as_str(),
                input,
                &signature
            ),
            "{alg}"
        );
    }
}

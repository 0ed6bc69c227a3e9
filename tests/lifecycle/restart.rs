//! Keys survive a restart: a token signed before the restart verifies,
//! through the JWKS of the registry loaded after it, with the same kid.

use std::time::Duration;

use crate::support::lifecycle::{published_kids, sign, verifiable, verify_with_jwks};
use tower_jwt_signer::registry::KeyState;
use tower_jwt_signer::{Algorithm, DirKeyStore, KeyRegistry};

fn open(dir: &std::path::Path, alg: Algorithm) -> KeyRegistry {
    KeyRegistry::builder()
        .store(DirKeyStore::open(dir).unwrap())
        .generate_if_missing(alg)
        .build()
        .unwrap()
}

#[test]
fn a_token_signed_before_a_restart_verifies_after_it() {
    for alg in [Algorithm::ES256, Algorithm::RS256, Algorithm::EdDSA] {
        assert!(verifiable(alg));
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");

        // First life: sign a token, then rotate so the key is retiring.
        let registry = open(&dir, alg);
        let now = registry.clock().unix_seconds();
        let (token, kid) = sign(&registry.current(), now, 60);
        let jwks_before = registry.current().jwks_bytes().clone();
        verify_with_jwks(&token, &jwks_before).unwrap();
        drop(registry);

        // Second life: same kid, same key, published.
        let registry = open(&dir, alg);
        let snapshot = registry.current();
        assert_eq!(snapshot.active().unwrap().kid().as_str(), kid, "{alg}");
        assert_eq!(snapshot.jwks_bytes(), &jwks_before, "{alg}: same JWKS");
        let claims = verify_with_jwks(&token, snapshot.jwks_bytes())
            .unwrap_or_else(|err| panic!("{alg}: {err}"));
        assert_eq!(claims["sub"], "lifecycle");

        // The key rotates out, its token still verifies after another
        // restart, while the key is retiring.
        let new = registry.rotate(Duration::from_secs(3600)).unwrap();
        let retires_at = registry.current().get(&kid).unwrap().retires_at();
        let (new_token, _) = sign(&registry.current(), now, 60);
        drop(registry);
        let registry = open(&dir, alg);
        let snapshot = registry.current();
        assert_eq!(snapshot.active().unwrap().kid(), &new);
        let old = snapshot.get(&kid).unwrap();
        assert_eq!(old.state(), KeyState::Retiring);
        // Stored in whole seconds, rounded up: never earlier.
        let stored_retires = old.retires_at().unwrap();
        assert!(stored_retires >= retires_at.unwrap());
        assert!(stored_retires < retires_at.unwrap() + Duration::from_secs(1));
        assert_eq!(
            published_kids(snapshot.jwks_bytes()),
            vec![new.to_string(), kid.clone()]
        );
        verify_with_jwks(&token, snapshot.jwks_bytes()).unwrap();
        verify_with_jwks(&new_token, snapshot.jwks_bytes()).unwrap();

        // The check is real: once the key is removed, its token no longer
        // verifies.
        registry
            .remove(&tower_jwt_signer::Kid::new(&kid).unwrap())
            .unwrap();
        drop(registry);
        let registry = open(&dir, alg);
        let err = verify_with_jwks(&token, registry.current().jwks_bytes()).unwrap_err();
        assert!(err.contains("not published"), "{err}");
    }
}

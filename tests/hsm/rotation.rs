//! Keys made, rotated and destroyed inside the token, on tokio's paused
//! clock: every token verifies while its key is published, retired keys'
//! objects leave the token, the key directory keeps references (never key
//! material), and a restart finds the same keys in the token with the same
//! kids.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use cryptoki::object::ObjectClass;
use serde_json::Value;
use tower_jwt_signer::clock::Clock;
use tower_jwt_signer::signer::Offload;
use tower_jwt_signer::store::KeyStore;
use tower_jwt_signer::{
    Algorithm, DirKeyStore, KeyRegistry, KeyRotator, RotationPolicy, SigningKey, Verifier,
};

use crate::support::lifecycle::{published_kids, verify_with_jwks};
use crate::support::softhsm::isolated;
use crate::support::softhsm::runtime;
use crate::test_name;
use crate::util::{labels, module, open, session, through_layer_with};

const PERIOD: Duration = Duration::from_secs(600);
const TTL: Duration = Duration::from_secs(60);
const MAX_AGE: Duration = Duration::from_secs(60);
const LEEWAY: Duration = Duration::from_secs(30);

fn policy() -> RotationPolicy {
    RotationPolicy::builder(PERIOD)
        .verifier_leeway(LEEWAY)
        .build()
        .unwrap()
}

fn secs(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The kids of the keys this crate made in the token (labels
/// `tower-jwt-signer:<kid>`), private and public halves.
fn kids_in_token(hsm: &crate::support::softhsm::SoftHsm) -> (BTreeSet<String>, BTreeSet<String>) {
    let pkcs11 = module(hsm);
    let session = session(&pkcs11);
    let kids = |class| {
        labels(&session, class)
            .into_iter()
            .filter_map(|label| label.strip_prefix("tower-jwt-signer:").map(str::to_owned))
            .collect::<BTreeSet<_>>()
    };
    (
        kids(ObjectClass::PRIVATE_KEY),
        kids(ObjectClass::PUBLIC_KEY),
    )
}

#[test]
fn keys_rotate_inside_the_token_and_a_restart_finds_them_with_their_kids() {
    isolated(test_name!(), |hsm| {
        let dir = hsm.dir.join("keys");
        runtime(true).block_on(async {
            let clock = Clock::tokio();
            let token = open(hsm);
            let open_registry = |token| {
                KeyRegistry::builder()
                    .clock(clock.clone())
                    .token_ttl(TTL)
                    .jwks_max_age(MAX_AGE)
                    .store(DirKeyStore::open(&dir).unwrap())
                    .key_factory(token)
                    .generate_if_missing(Algorithm::ES256)
                    .build()
                    .unwrap()
            };
            let registry = open_registry(token.clone());
            let first = registry.current().active().unwrap().kid().to_string();
            assert_eq!(
                kids_in_token(hsm).0,
                BTreeSet::from([first.clone()]),
                "the first key is made in the token"
            );

            let rotator = KeyRotator::spawn(registry.clone(), policy()).unwrap();
            let verifier = Verifier::new(registry.clone());
            let start = clock.now();
            let mut issued: Vec<(String, String, u64)> = Vec::new();
            let mut kids_used: Vec<String> = Vec::new();
            let mut destroyed_seen = false;
            while clock.now() < start + PERIOD * 4 + Duration::from_secs(300) {
                tokio::time::sleep(Duration::from_secs(11)).await;
                let now = secs(clock.now());
                let jwt = through_layer_with(&registry, Offload::Inline)
                    .await
                    .unwrap();
                let snapshot = registry.current();
                verifier
                    .verify(&jwt)
                    .await
                    .unwrap_or_else(|err| panic!("at {now}: {err}"));
                let kid = crate::support::signer::segment(jwt.split('.').next().unwrap())["kid"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                // Every live token (exp + leeway) still verifies.
                for (token, kid, exp) in &issued {
                    if exp + LEEWAY.as_secs() > now {
                        verify_with_jwks(token, snapshot.jwks_bytes())
                            .unwrap_or_else(|err| panic!("at {now}, a live token of {kid}: {err}"));
                    }
                }
                issued.push((jwt, kid.clone(), now + TTL.as_secs()));
                if kids_used.last() != Some(&kid) {
                    kids_used.push(kid);
                }
                // The token holds exactly the published keys (next, active,
                // retiring): a retired key's objects go with it.
                let published: BTreeSet<String> =
                    published_kids(snapshot.jwks_bytes()).into_iter().collect();
                let (private, public) = kids_in_token(hsm);
                assert_eq!(private, published, "private keys in the token at {now}");
                assert_eq!(public, published, "public keys in the token at {now}");
                destroyed_seen |= !private.contains(&first);
            }
            rotator.stop().await;
            assert!(kids_used.len() >= 4, "{kids_used:?}");
            assert_eq!(
                kids_used.iter().collect::<BTreeSet<_>>().len(),
                kids_used.len(),
                "each key signs once, in turn: {kids_used:?}"
            );
            assert!(destroyed_seen, "the first key was destroyed in the token");

            // The directory keeps references, never key material.
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if !path.to_string_lossy().ends_with(".key.json") {
                    continue;
                }
                let file: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
                assert_eq!(file["version"], 2, "{file}");
                assert_eq!(file["alg"], "ES256");
                assert!(file.get("private_jwk").is_none(), "{file}");
                let reference = &file["reference"];
                assert_eq!(reference["provider"], "pkcs11");
                assert_eq!(
                    reference["attributes"]["token"],
                    crate::support::softhsm::TOKEN
                );
                assert_eq!(
                    reference["attributes"]["label"],
                    format!("tower-jwt-signer:{}", file["kid"].as_str().unwrap())
                );
                assert!(!file.to_string().contains("\"d\""), "{file}");
            }

            // A restart: another token handle, another registry on the same
            // directory, same keys, same kids, same states; and it signs.
            let before = registry.current();
            let kids_before: Vec<(String, String)> = before
                .keys()
                .iter()
                .map(|k| (k.kid().to_string(), k.state().to_string()))
                .collect();
            drop((registry, verifier, token));
            let token = open(hsm);
            let registry = open_registry(token);
            let after: Vec<(String, String)> = registry
                .current()
                .keys()
                .iter()
                .map(|k| (k.kid().to_string(), k.state().to_string()))
                .collect();
            assert_eq!(after, kids_before);
            let jwt = through_layer_with(&registry, Offload::Inline)
                .await
                .unwrap();
            Verifier::new(registry.clone()).verify(&jwt).await.unwrap();
            assert_eq!(
                DirKeyStore::open(&dir).unwrap().load().unwrap().len(),
                kids_before.len()
            );
        });
    });
}

#[test]
fn a_key_provisioned_by_hand_retires_but_stays_in_the_token() {
    isolated(test_name!(), |hsm| {
        let provisioned = SigningKey::generate(Algorithm::EdDSA).unwrap();
        hsm.import(&provisioned.to_pkcs8_pem().unwrap(), "provisioned", "0f");
        runtime(true).block_on(async {
            let clock = Clock::tokio();
            let token = open(hsm);
            let registry = KeyRegistry::builder()
                .clock(clock.clone())
                .token_ttl(TTL)
                .jwks_max_age(MAX_AGE)
                .key_factory(token.clone())
                .active(token.key("provisioned", Algorithm::EdDSA).unwrap())
                .build()
                .unwrap();
            let rotator = KeyRotator::spawn(registry.clone(), policy()).unwrap();
            tokio::time::sleep(PERIOD * 2 + Duration::from_secs(200)).await;
            through_layer_with(&registry, Offload::Inline)
                .await
                .unwrap();
            rotator.stop().await;
            let snapshot = registry.current();
            assert!(
                snapshot.get(provisioned.kid()).is_none(),
                "retired and gone from the JWKS"
            );
            let pkcs11 = module(hsm);
            let session = session(&pkcs11);
            assert!(
                labels(&session, ObjectClass::PRIVATE_KEY).contains(&"provisioned".to_owned()),
                "a key made by hand stays in the token"
            );
            // The keys made in its place are in the token; the retired one
            // of them is gone.
            let (made, _) = kids_in_token(hsm);
            let published: BTreeSet<String> =
                published_kids(snapshot.jwks_bytes()).into_iter().collect();
            assert_eq!(made, published);
        });
    });
}

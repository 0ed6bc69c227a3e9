//! Every algorithm SoftHSM offers, signing inside the token through
//! `JwtSignerLayer`; kids equal to the same key's in process; a private key
//! that cannot be read.

use cryptoki::object::{Attribute, AttributeInfo, AttributeType, ObjectClass};
use tower_jwt_signer::keys::SigningBackend;
use tower_jwt_signer::{Algorithm, KeyRegistry, SigningKey};

use crate::support::softhsm::isolated;
use crate::support::softhsm::runtime;
use crate::test_name;
use crate::util::{labels, module, open, session, through_layer, verify_both};

#[test]
fn every_algorithm_signs_in_the_token_and_verifies_with_ours_and_jsonwebtoken() {
    isolated(test_name!(), |hsm| {
        let token = open(hsm);
        // One RSA key pair serves the six RSA algorithms (each opened
        // for its algorithm); each EC curve and Ed25519 has its own.
        let rsa = token.generate(Algorithm::RS256).unwrap();
        let rsa_label = rsa.label().unwrap().to_owned();
        runtime(false).block_on(async {
            for alg in Algorithm::ALL {
                let key = if alg.is_rsa() {
                    token.key(&rsa_label, alg).unwrap()
                } else {
                    token.generate(alg).unwrap()
                };
                assert_eq!(key.algorithm(), alg);
                assert!(key.blocks(), "a PKCS#11 key says it blocks");
                let reference = key.reference().unwrap();
                assert_eq!(
                    reference.attribute("token"),
                    Some(crate::support::softhsm::TOKEN)
                );
                let kid = key.kid().clone();
                let registry = KeyRegistry::new(key);
                for _ in 0..3 {
                    let jwt = through_layer(&registry)
                        .await
                        .unwrap_or_else(|err| panic!("{alg}: the signer refused: {err:?}"));
                    let header = crate::support::signer::segment(jwt.split('.').next().unwrap());
                    assert_eq!(header["alg"], alg.as_str());
                    assert_eq!(header["kid"], kid.as_str());
                    verify_both(&jwt, &registry).await;
                }
            }
        });
    });
}

#[test]
fn a_key_in_the_token_has_the_kid_and_jwk_the_same_key_has_in_process() {
    isolated(test_name!(), |hsm| {
        for (i, alg) in [
            Algorithm::RS256,
            Algorithm::PS384,
            Algorithm::ES256,
            Algorithm::ES384,
            Algorithm::ES512,
            Algorithm::EdDSA,
        ]
        .into_iter()
        .enumerate()
        {
            let in_process = SigningKey::generate(alg).unwrap();
            let label = format!("imported-{i}");
            hsm.import(
                &in_process.to_pkcs8_pem().unwrap(),
                &label,
                &format!("a{i}"),
            );
            let token = open(hsm);
            let in_token = token.key(&label, alg).unwrap();
            assert_eq!(in_token.kid(), in_process.kid(), "{alg}");
            assert_eq!(in_token.public_jwk(), in_process.public_jwk(), "{alg}");
            // And by id.
            let by_id = token.key_by_id(&[0xa0 + i as u8], alg).unwrap();
            assert_eq!(by_id.kid(), in_process.kid(), "{alg} by id");
            // A token signature verifies against the in-process key's JWKS.
            let registry = KeyRegistry::new(in_token);
            let in_process_registry = KeyRegistry::new(in_process);
            runtime(false).block_on(async {
                let jwt = through_layer(&registry).await.unwrap();
                verify_both(&jwt, &in_process_registry).await;
            });
        }
    });
}

#[test]
fn the_token_refuses_to_reveal_a_key_it_made() {
    isolated(test_name!(), |hsm| {
        let token = open(hsm);
        let keys = [
            token.generate(Algorithm::RS256).unwrap(),
            token.generate(Algorithm::ES256).unwrap(),
            token.generate(Algorithm::EdDSA).unwrap(),
        ];
        let pkcs11 = module(hsm);
        let session = session(&pkcs11);
        for key in &keys {
            let label = key.label().unwrap();
            assert_eq!(
                label,
                format!("tower-jwt-signer:{}", key.kid()),
                "the label records the kid"
            );
            let private = session
                .find_objects(&[
                    Attribute::Class(ObjectClass::PRIVATE_KEY),
                    Attribute::Label(label.as_bytes().to_vec()),
                ])
                .unwrap();
            assert_eq!(private.len(), 1);
            let secret = if key.algorithm().is_rsa() {
                AttributeType::PrivateExponent
            } else {
                AttributeType::Value
            };
            // C_GetAttributeValue answers CKR_ATTRIBUTE_SENSITIVE.
            let info = session.get_attribute_info(private[0], &[secret]).unwrap();
            assert!(
                matches!(info[..], [AttributeInfo::Sensitive]),
                "{}: {secret:?} is {:?}",
                key.algorithm(),
                info
            );
            let flags = session
                .get_attributes(
                    private[0],
                    &[
                        AttributeType::Sensitive,
                        AttributeType::Extractable,
                        AttributeType::Token,
                        AttributeType::Private,
                        AttributeType::AlwaysSensitive,
                        AttributeType::NeverExtractable,
                    ],
                )
                .unwrap();
            for flag in flags {
                match flag {
                    Attribute::Sensitive(on)
                    | Attribute::Token(on)
                    | Attribute::Private(on)
                    | Attribute::AlwaysSensitive(on)
                    | Attribute::NeverExtractable(on) => assert!(on, "{flag:?}"),
                    Attribute::Extractable(on) => assert!(!on, "extractable"),
                    other => panic!("{other:?}"),
                }
            }
            // Nothing in the reference a store keeps is secret.
            let reference = format!("{:?}", key.reference().unwrap());
            assert!(reference.contains(key.kid().as_str()));
        }
        let mut expected: Vec<String> = keys
            .iter()
            .map(|key| key.label().unwrap().to_owned())
            .collect();
        expected.sort();
        assert_eq!(labels(&session, ObjectClass::PRIVATE_KEY), expected);
        assert_eq!(labels(&session, ObjectClass::PUBLIC_KEY), expected);
    });
}

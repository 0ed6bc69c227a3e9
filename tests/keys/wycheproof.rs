//! Wycheproof JWS and JWK vectors (`../shared/vectors/wycheproof/`, too
//! large to copy into `tests/data`; `#[ignore]`d, run by `.ci/run` with
//! `--ignored`).
//!
//! * `json_web_signature_test.json`: for every asymmetric group the verdict
//!   matches `result`, with four documented exceptions where the vector's
//!   key carries an `alg` that differs from the token's (our rule: the key
//!   decides the algorithm). Every symmetric group is rejected. The file has
//!   no `acceptable` results; one would be allowed either verdict but still
//!   checked not to panic.
//! * `json_web_key_test.json`: our JWK Set parser refuses every private set
//!   and rejects every key the file marks invalid.
//!
//! The vectors verify JWS, not JWT (their payloads are not claims sets), so
//! `Verifier::verify_jws_with` is used: everything but the claims.

use serde_json::{Value, json};
use tower_jwt_signer::verifier::{JwkSet, JwkSetError, KeySource};
use tower_jwt_signer::{Verifier, VerifyError};

use crate::support::jose::shared_vectors;

fn load(name: &str) -> Value {
    let path = shared_vectors().join("wycheproof").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| {
        panic!(
            "{}: {err} (run from a checkout next to ../shared, or set \
             TOWER_JWT_SIGNER_VECTORS to its vectors directory)",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

fn verifier() -> Verifier {
    Verifier::new(KeySource::fixed(JwkSet::default()))
}

/// The compact form of a test's `jws` (a few are JSON serialisations,
/// which must be rejected as they are).
fn compact(test: &Value) -> String {
    match &test["jws"] {
        Value::String(jws) => jws.clone(),
        other => other.to_string(),
    }
}

fn is_symmetric(group: &Value) -> bool {
    group["private"]["kty"] == "oct"
}

/// Vectors whose `result` we deliberately do not follow. In each, the
/// group's public key has an `alg` that is not the token's: RFC 7520's
/// Figure 20 token is PS384 but the key says PS256, and Figure 27's token is
/// ES512 but the key says "ES521" (not an algorithm). RFC 8725 section 3.1
/// and our design: a key is used only with its own `alg`.
const KEY_ALG_DISAGREES: [u64; 4] = [346, 347, 350, 351];

/// The `alg` in a compact JWS's header, if it decodes.
fn header_alg(jws: &str) -> Option<String> {
    use base64::Engine as _;
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(jws.split('.').next()?)
        .ok()?;
    let header: Value = serde_json::from_slice(&header).ok()?;
    Some(header["alg"].as_str()?.to_owned())
}

/// The refusal an asymmetric vector marked `invalid` must get, from its
/// flags and, for the unflagged ones, its comment. A vector this does not
/// know fails the test: a new kind of attack needs its expectation here.
fn expected_refusal(test: &Value, group: &Value) -> VerifyError {
    let flags: Vec<&str> = test["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|flag| flag.as_str().unwrap())
        .collect();
    let comment = test["comment"].as_str().unwrap();
    let not_three_parts =
        VerifyError::Malformed("the token is not three base64url parts separated by dots");
    match (flags.as_slice(), comment) {
        (["AlgIsNone"], _) => VerifyError::UnsupportedAlgorithm,
        (["ModifiedPadding" | "ModifiedSignature"], _) => VerifyError::InvalidSignature,
        // Another primitive's signature: under the key's own alg it does
        // not verify; under the other alg the key refuses the alg.
        (["WrongPrimitive"], _) => {
            if header_alg(&compact(test)).as_deref() == group["public"]["alg"].as_str() {
                VerifyError::InvalidSignature
            } else {
                VerifyError::KeyMismatch
            }
        }
        ([], "rejectsMissingSignature") => VerifyError::Malformed("the signature is missing"),
        ([], "rejectsMissingHeader" | "rejectsMissingHeaderAndSignature") => {
            VerifyError::Malformed("the header is not a JSON object")
        }
        ([], comment) if comment.contains("Separator") || comment == "rejectsEmptyString" => {
            not_three_parts
        }
        // The kid no longer names the key.
        ([], "rejectsModifiedHeader") => VerifyError::UnknownKid,
        ([], comment) if comment.starts_with("rejectsSymmetryConfusionAttacks") => {
            VerifyError::UnsupportedAlgorithm
        }
        // The key is for encryption: skipped, so no key has the kid.
        ([], "rejectWrongUse" | "rejectWrongKeyOps") => VerifyError::UnknownKid,
        // Signature over other bytes, or out-of-range ECDSA values.
        (
            [],
            "rejectsModifiedSignature"
            | "rejectsModifiedPayload"
            | "rejectsMissingPayload"
            | "rejectsAttackerProvidedEmbeddedJwk"
            | "SignatureTooLong"
            | "TrailingZeros"
            | "RisTooBig"
            | "SisTooBig"
            | "IntegerOverflow"
            | "BufferOverflow",
        ) => VerifyError::InvalidSignature,
        ([], comment) if comment.starts_with("rIs") => VerifyError::InvalidSignature,
        _ => panic!(
            "tc {} ({comment}, {flags:?}): no expected refusal for this vector",
            test["tcId"]
        ),
    }
}

#[test]
#[ignore = "reads ../shared/vectors; run by .ci/run with --ignored"]
fn json_web_signature_vectors() {
    let file = load("json_web_signature_test.json");
    let verifier = verifier();
    let (mut seen, mut asymmetric, mut symmetric, mut acceptable) = (0, 0, 0, 0);
    // Asymmetric public keys, to aim the symmetric tokens at: an HS256 token
    // whose kid names an RSA or EC key must still be refused.
    let lures: Vec<Value> = file["testGroups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["comment"] == "es256" || g["comment"] == "rs256")
        .map(|g| g["public"].clone())
        .collect();
    assert!(lures.iter().any(|k| k["kty"] == "EC") && lures.iter().any(|k| k["kty"] == "RSA"));

    for group in file["testGroups"].as_array().unwrap() {
        let tests = group["tests"].as_array().unwrap();
        seen += tests.len();
        if is_symmetric(group) {
            symmetric += tests.len();
            // The key itself is refused: a symmetric key is a secret.
            let private = json!({"keys": [group["private"]]});
            assert!(
                matches!(
                    JwkSet::from_value(&private),
                    Err(JwkSetError::PrivateMember { member: "k", .. })
                ),
                "{}",
                group["comment"]
            );
            let kid = group["private"]["kid"].clone();
            for lure in &lures {
                let mut lure = lure.clone();
                lure["kid"] = kid.clone();
                let set = JwkSet::from_value(&json!({"keys": [lure]})).unwrap();
                for test in tests {
                    let result = verifier.verify_jws_with(&compact(test), &set);
                    // Valid or not, refused for its algorithm (or, for the
                    // lenient base64 variants and the broken ones, for its
                    // encoding) before any key is used.
                    assert!(
                        matches!(
                            result,
                            Err(VerifyError::UnsupportedAlgorithm | VerifyError::Malformed(_))
                        ),
                        "tc {} ({}): {result:?}",
                        test["tcId"],
                        test["result"]
                    );
                }
            }
            continue;
        }
        asymmetric += tests.len();
        let public = group["public"].clone();
        let set = JwkSet::from_value(&json!({"keys": [public]})).unwrap();
        for test in tests {
            let id = test["tcId"].as_u64().unwrap();
            let jws = compact(test);
            let result = verifier.verify_jws_with(&jws, &set);
            match test["result"].as_str().unwrap() {
                "valid" if KEY_ALG_DISAGREES.contains(&id) => {
                    assert!(
                        matches!(
                            result,
                            Err(VerifyError::KeyMismatch | VerifyError::UnknownKid)
                        ),
                        "tc {id}: {result:?}"
                    );
                    // Without the key's `alg` label the same token verifies:
                    // the refusal is the alg rule, not the signature.
                    let mut unlabelled = group["public"].clone();
                    unlabelled.as_object_mut().unwrap().remove("alg");
                    let set = JwkSet::from_value(&json!({"keys": [unlabelled]})).unwrap();
                    assert!(
                        verifier.verify_jws_with(&jws, &set).is_ok(),
                        "tc {id} without alg"
                    );
                }
                "valid" => assert!(result.is_ok(), "tc {id} ({}): {result:?}", test["comment"]),
                "invalid" => assert_eq!(
                    result.map(|_| ()),
                    Err(expected_refusal(test, group)),
                    "tc {id} ({})",
                    test["comment"]
                ),
                "acceptable" => acceptable += 1,
                other => panic!("tc {id}: unknown result {other}"),
            }
        }
    }
    assert_eq!(seen as u64, file["numberOfTests"].as_u64().unwrap());
    assert_eq!(seen, asymmetric + symmetric);
    assert!(
        asymmetric > 300 && symmetric > 30,
        "{asymmetric} {symmetric}"
    );
    assert_eq!(acceptable, 0, "the file has no acceptable results today");
}

#[test]
#[ignore = "reads ../shared/vectors; run by .ci/run with --ignored"]
fn json_web_key_vectors() {
    let file = load("json_web_key_test.json");
    let verifier = verifier();
    let mut seen = 0;
    for group in file["testGroups"].as_array().unwrap() {
        let comment = group["comment"].as_str().unwrap();
        // Every private set is refused whole: it holds secrets.
        assert!(
            matches!(
                JwkSet::from_value(&group["private"]),
                Err(JwkSetError::PrivateMember { .. })
            ),
            "{comment}: private set accepted"
        );
        let public = group.get("public");
        let set = match public {
            Some(public) => JwkSet::from_value(public).unwrap(),
            None => JwkSet::default(),
        };
        for test in group["tests"].as_array().unwrap() {
            seen += 1;
            let id = test["tcId"].as_u64().unwrap();
            let result = verifier.verify_jws_with(&compact(test), &set);
            match (test["result"].as_str().unwrap(), public.is_some()) {
                ("valid", true) => {
                    assert_eq!(set.len(), 1, "tc {id}");
                    assert!(result.is_ok(), "tc {id}: {result:?}");
                }
                // Symmetric and mixed sets have no public form: refused
                // above; their tokens are HS* and refused for that.
                ("valid" | "invalid", false) => assert!(
                    matches!(result, Err(VerifyError::UnsupportedAlgorithm)),
                    "tc {id} ({comment}): {result:?}"
                ),
                ("invalid", true) => {
                    // The parser itself rejects the key...
                    assert!(set.is_empty(), "tc {id} ({comment}): key kept");
                    assert_eq!(set.skipped().len(), 1, "tc {id}");
                    // ...so no key has the token's kid.
                    assert!(
                        matches!(result, Err(VerifyError::UnknownKid)),
                        "tc {id} ({comment}): {result:?}"
                    );
                }
                (other, _) => panic!("tc {id}: unexpected result {other}"),
            }
        }
    }
    assert_eq!(seen as u64, file["numberOfTests"].as_u64().unwrap());
}

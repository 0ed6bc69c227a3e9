//! Faults at run time fail closed: the request is answered by the signer
//! (never forwarded unsigned, never a panic), a `tracing` error names the
//! token, and the next request opens the token's sessions and logs in
//! again.

use http::StatusCode;
use tower_jwt_signer::signer::Refusal;
use tower_jwt_signer::{Algorithm, KeyRegistry};

use crate::support::logs::logs;
use crate::support::softhsm::{TOKEN, isolated, runtime};
use crate::test_name;
use crate::util::{module, open, session, through_layer, verify_both};

/// The refusal every fault gives.
fn assert_fails_closed(result: Result<String, (StatusCode, Refusal)>) {
    match result {
        Err((status, refusal)) => {
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(refusal, Refusal::SigningFailed);
        }
        Ok(token) => panic!("signed through a fault: {token}"),
    }
}

#[test]
fn a_logout_from_another_handle_fails_closed_then_the_next_request_logs_in_again() {
    isolated(test_name!(), |hsm| {
        let logs = logs();
        let token = open(hsm);
        let registry = KeyRegistry::new(token.generate(Algorithm::ES256).unwrap());
        runtime(false).block_on(async {
            let jwt = through_layer(&registry).await.unwrap();
            verify_both(&jwt, &registry).await;

            // Another handle of this process logs the token out: every
            // session of the application loses the login.
            let pkcs11 = module(hsm);
            let other = session(&pkcs11);
            other.logout().unwrap();

            assert_fails_closed(through_layer(&registry).await);
            let faults = logs.matching(&["PKCS#11 token fault", TOKEN]);
            assert_eq!(faults.len(), 1, "{:#?}", logs.lines());
            assert!(faults[0].contains("ERROR"), "{}", faults[0]);

            // The next request opens a session and logs in again.
            let jwt = through_layer(&registry).await.unwrap();
            verify_both(&jwt, &registry).await;
            assert_eq!(
                logs.matching(&["sessions opened and logged in again", TOKEN])
                    .len(),
                1
            );
            for _ in 0..5 {
                through_layer(&registry).await.unwrap();
            }
            drop(other);
        });
    });
}

// SoftHSM reads its token directory when the module is initialised:
// a token whose directory goes stays broken in this process (every
// call fails) even when the directory comes back, until the process
// restarts. What can be checked here is that every request fails
// closed, each time, with the token named; recovery after a lost login
// is the test above.
#[test]
fn a_removed_token_fails_closed_on_every_request() {
    isolated(test_name!(), |hsm| {
        let logs = logs();
        let token = open(hsm);
        let registry = KeyRegistry::new(token.generate(Algorithm::EdDSA).unwrap());
        runtime(false).block_on(async {
            through_layer(&registry).await.unwrap();
            // The token's directory goes: its objects and its slot are gone.
            std::fs::remove_dir_all(hsm.tokens()).unwrap();
            std::fs::create_dir(hsm.tokens()).unwrap();
            for _ in 0..5 {
                assert_fails_closed(through_layer(&registry).await);
            }
            let faults = logs.matching(&["PKCS#11 token fault", TOKEN]);
            assert!(!faults.is_empty(), "{:#?}", logs.lines());
            let refused = logs.matching(&["request refused: signing failed", TOKEN]);
            assert_eq!(refused.len(), 5, "{:#?}", logs.lines());
        });
    });
}

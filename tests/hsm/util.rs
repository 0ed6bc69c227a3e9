//! What the PKCS#11 tests share: the test's token opened, a request signed
//! through `JwtSignerLayer`, both verifiers, and a look inside the token
//! with cryptoki itself.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use http::{Request, Response, StatusCode};
use tower::{ServiceExt, service_fn};
use tower_jwt_signer::pkcs11::Pkcs11Token;
use tower_jwt_signer::signer::{Offload, Refusal};
use tower_jwt_signer::{JwtSignerLayer, KeyRegistry, Verifier};

use crate::support::softhsm::{PIN, SoftHsm, TOKEN};

/// The test's token, logged in with the PIN file.
pub(crate) fn open(hsm: &SoftHsm) -> Pkcs11Token {
    Pkcs11Token::builder(&hsm.module, TOKEN)
        .pin_file(hsm.pin_file())
        .open()
        .unwrap()
}

/// One request through a `JwtSignerLayer` on `registry` (default
/// settings: a PKCS#11 key is signed on the signer's threads): the token the
/// inner service received, or the signer's own answer (the inner service
/// is then never called).
pub(crate) async fn through_layer(registry: &KeyRegistry) -> Result<String, (StatusCode, Refusal)> {
    through_layer_with(registry, Offload::Auto).await
}

/// [`through_layer`] with the signer's `offload` setting (`Inline` on
/// tokio's paused clock: a signature on the signer's threads would let the
/// idle runtime advance the clock meanwhile).
pub(crate) async fn through_layer_with(
    registry: &KeyRegistry,
    offload: Offload,
) -> Result<String, (StatusCode, Refusal)> {
    let layer = JwtSignerLayer::builder(registry.clone())
        .issuer("https://gateway.test")
        .offload(offload)
        .build()
        .unwrap();
    let seen = Arc::new(Mutex::new(None));
    let inner = {
        let seen = Arc::clone(&seen);
        service_fn(move |request: Request<String>| {
            let value = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .expect("never forwarded unsigned")
                .to_str()
                .unwrap()
                .strip_prefix("Bearer ")
                .unwrap()
                .to_owned();
            *seen.lock().unwrap() = Some(value);
            async { Ok::<_, Infallible>(Response::new(String::new())) }
        })
    };
    let response = tower::Layer::layer(&layer, inner)
        .oneshot(Request::new(String::new()))
        .await
        .unwrap();
    if let Some(token) = seen.lock().unwrap().take() {
        assert_eq!(response.status(), StatusCode::OK);
        return Ok(token);
    }
    let refusal = response
        .extensions()
        .get::<Refusal>()
        .cloned()
        .expect("a refusal of the signer");
    Err((response.status(), refusal))
}

/// Verifies `token` with our verifier on `registry` and with an
/// independent one (jsonwebtoken; OpenSSL for ES512) against its JWKS.
pub(crate) async fn verify_both(token: &str, registry: &KeyRegistry) {
    Verifier::new(registry.clone())
        .verify(token)
        .await
        .unwrap_or_else(|err| panic!("our verifier refused the token: {err}"));
    crate::support::signer::verify(token, registry)
        .unwrap_or_else(|err| panic!("the independent verifier refused the token: {err}"));
}

/// The module as cryptoki sees it in this process (initialised here, or
/// already by the token under test).
pub(crate) fn module(hsm: &SoftHsm) -> Pkcs11 {
    let pkcs11 = Pkcs11::new(&hsm.module).unwrap();
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(())
        | Err(cryptoki::error::Error::Pkcs11(
            cryptoki::error::RvError::CryptokiAlreadyInitialized,
            _,
        )) => {}
        Err(err) => panic!("C_Initialize: {err}"),
    }
    pkcs11
}

/// A session of our own on the test's token, logged in.
pub(crate) fn session(pkcs11: &Pkcs11) -> Session {
    let slot = pkcs11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|slot| pkcs11.get_token_info(*slot).unwrap().label() == TOKEN)
        .expect("the test's token");
    let session = pkcs11.open_rw_session(slot).unwrap();
    match session.login(UserType::User, Some(&AuthPin::from(PIN.to_owned()))) {
        Ok(())
        | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {
        }
        Err(err) => panic!("C_Login: {err}"),
    }
    session
}

/// The labels of the token's key objects of `class`, sorted.
pub(crate) fn labels(session: &Session, class: ObjectClass) -> Vec<String> {
    let mut labels: Vec<String> = session
        .find_objects(&[Attribute::Class(class)])
        .unwrap()
        .into_iter()
        .map(|object| label(session, object))
        .collect();
    labels.sort();
    labels
}

/// The label of `object`.
pub(crate) fn label(session: &Session, object: ObjectHandle) -> String {
    match session
        .get_attributes(object, &[AttributeType::Label])
        .unwrap()
        .pop()
    {
        Some(Attribute::Label(label)) => String::from_utf8(label).unwrap(),
        other => panic!("no label: {other:?}"),
    }
}

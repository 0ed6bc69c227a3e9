//! `signing_proxy --metrics-listen` (feature `metrics`): Prometheus text at
//! `/metrics` on a listener of its own, read over HTTP: the counters move
//! with the requests, and it never holds a token or key material.

use std::net::SocketAddr;

use http::{Method, Request, StatusCode};
use http_body_util::Full;
use tower_jwt_signer::JWKS_PATH;

use crate::support::process::Example;
use crate::support::signer::fetch;
use crate::support::upstream::Upstream;

/// `GET http://addr{path}` with `headers`: status and body text.
async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (StatusCode, String) {
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let (parts, body) = fetch(request.body(Full::default()).unwrap()).await;
    (parts.status, String::from_utf8(body.to_vec()).unwrap())
}

/// The value of the sample `name` (with its labels, as printed), if any.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_are_served_on_their_own_listener_and_move_with_requests() {
    let upstream = Upstream::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    let proxy = Example::new("signing_proxy").spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &upstream.url(),
        "--metrics-listen",
        "127.0.0.1:0",
        "--existing",
        "reject",
        "--key-dir",
        keys.to_str().unwrap(),
    ]);
    let metrics = proxy.address("metrics on").await;
    let addr = proxy.address("signing proxy on").await;
    let started = proxy
        .line_async("the start line", |l| l.contains("signing proxy on"))
        .await;
    let kid = started
        .split("kid ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap()
        .to_owned();

    let (status, before) = get(metrics, "/metrics", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let signed = format!("tjs_tokens_signed_total{{alg=\"ES256\",kid=\"{kid}\"}}");
    assert_eq!(sample(&before, &signed), None, "{before}");

    for i in 0..3 {
        let (status, _) = get(addr, &format!("/orders/{i}"), &[]).await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let (status, _) = get(addr, "/x", &[("authorization", "Bearer mine")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "token_present");
    let (status, jwks) = get(addr, JWKS_PATH, &[]).await;
    assert_eq!(status, StatusCode::OK);
    let set: serde_json::Value = serde_json::from_str(&jwks).unwrap();
    let (status, _) = get(addr, JWKS_PATH, &[("if-none-match", "*")]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);

    let (status, text) = get(metrics, "/metrics", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sample(&text, &signed), Some(3.0), "{text}");
    assert_eq!(
        sample(&text, "tjs_signing_failures_total{error=\"token_present\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "tjs_signing_duration_seconds_count{alg=\"ES256\"}"),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "tjs_jwks_requests_total"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "tjs_jwks_not_modified_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&text, "tjs_published_keys"), Some(1.0), "{text}");
    let age = sample(&text, "tjs_active_key_age_seconds").expect("the key's age");
    assert!(age >= 0.0, "{text}");

    // Never a token, never key material.
    assert!(!text.contains("eyJ"), "{text}");
    for token in upstream.tokens() {
        for part in token.split('.') {
            assert!(!text.contains(part), "{text}");
        }
    }
    for member in ["x", "y"] {
        let value = set["keys"][0][member].as_str().unwrap();
        assert!(!text.contains(value), "{member}: {text}");
    }
    let stored = std::fs::read_dir(&keys)
        .unwrap()
        .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap())
        .find(|text| text.contains("\"d\""))
        .expect("the key file");
    let stored: serde_json::Value = serde_json::from_str(&stored).unwrap();
    let d = stored["private_jwk"]["d"]
        .as_str()
        .expect("the private key in the key file");
    assert!(!text.contains(d), "{text}");

    // The proxied listener does not serve them: /metrics is forwarded.
    let before = upstream.received().len();
    let (status, body) = get(addr, "/metrics", &[]).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body, "from upstream");
    assert_eq!(upstream.received().len(), before + 1);
    assert_eq!(upstream.received()[before].uri, "/metrics");
}

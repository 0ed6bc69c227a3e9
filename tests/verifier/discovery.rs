//! OpenID discovery over real sockets on 127.0.0.1: `DiscoveryService`'s
//! HTTP semantics and its algorithm list across rotations, and
//! `RemoteJwks::from_issuer` against documents good and hostile (another
//! issuer, a plain http `jwks_uri` off loopback, oversized, malformed).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use serde_json::json;
use tower::ServiceExt;
use tower_jwt_signer::discovery::{DISCOVERY_PATH, DiscoveryService};
use tower_jwt_signer::verifier::DiscoveryError;
use tower_jwt_signer::{
    Algorithm, FetchError, JWKS_PATH, JwksService, KeyRegistry, RemoteJwks, SigningKey, Verifier,
};

use crate::support::jose::compact;
use crate::support::logs::logs;
use crate::support::signer::AbortOnDrop;
use crate::support::verifier::{claims, get};

/// A gateway on 127.0.0.1: the JWKS of `registry` at `JWKS_PATH`, and at
/// `DISCOVERY_PATH` either its real discovery document or a body the test
/// sets. Counts the requests of each path.
struct Gateway {
    addr: SocketAddr,
    registry: KeyRegistry,
    document: Arc<Mutex<Option<Bytes>>>,
    hits: Arc<Mutex<Vec<String>>>,
    _task: AbortOnDrop,
}

impl Gateway {
    async fn start(registry: KeyRegistry) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let issuer = format!("http://{addr}");
        let discovery = DiscoveryService::new(&issuer, registry.clone()).unwrap();
        let jwks = JwksService::new(registry.clone());
        let document: Arc<Mutex<Option<Bytes>>> = Arc::default();
        let hits: Arc<Mutex<Vec<String>>> = Arc::default();
        let (set, seen) = (document.clone(), hits.clone());
        let app = tower::service_fn(move |request: Request<axum::body::Body>| {
            let (discovery, jwks) = (discovery.clone(), jwks.clone());
            let set = set.lock().unwrap().clone();
            seen.lock().unwrap().push(request.uri().path().to_owned());
            async move {
                let (mut parts, _) = request.into_parts();
                // A moved JWKS: the same set under another path.
                if parts.uri.path().starts_with("/keys/") {
                    parts.uri = JWKS_PATH.parse().unwrap();
                }
                let request = Request::from_parts(parts, ());
                let response: Response<Full<Bytes>> = match (request.uri().path(), set) {
                    (DISCOVERY_PATH, Some(body)) => Response::new(Full::new(body)),
                    (DISCOVERY_PATH, None) => discovery.oneshot(request).await?,
                    _ => jwks.oneshot(request).await?,
                };
                Ok::<_, Infallible>(response)
            }
        });
        let task = tokio::spawn(async move {
            axum::serve(listener, axum::Router::new().fallback_service(app))
                .await
                .unwrap();
        });
        Gateway {
            addr,
            registry,
            document,
            hits,
            _task: AbortOnDrop(task),
        }
    }

    fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serves `body` as the discovery document from now on.
    fn serve_document(&self, body: impl Into<Bytes>) {
        *self.document.lock().unwrap() = Some(body.into());
    }

    fn hits(&self, path: &str) -> usize {
        self.hits
            .lock()
            .unwrap()
            .iter()
            .filter(|p| *p == path)
            .count()
    }
}

fn key(alg: Algorithm) -> SigningKey {
    SigningKey::generate(alg).unwrap()
}

#[tokio::test]
async fn the_discovery_document_has_the_jwks_http_semantics() {
    let gateway = Gateway::start(KeyRegistry::new(key(Algorithm::ES256))).await;
    let reply = get(gateway.addr, DISCOVERY_PATH, &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["content-type"], "application/json");
    assert_eq!(reply.headers["cache-control"], "public, max-age=300");
    assert_eq!(
        reply.headers["content-length"],
        reply.body.len().to_string().as_str()
    );
    assert_eq!(
        reply.json(),
        json!({
            "issuer": gateway.issuer(),
            "jwks_uri": format!("{}{JWKS_PATH}", gateway.issuer()),
            "id_token_signing_alg_values_supported": ["ES256"],
        })
    );
    let etag = reply.headers["etag"].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");

    // 304 on a matching If-None-Match (one tag, a list, weak, `*`), with the
    // ETag and Cache-Control, and no body.
    for value in [
        etag.clone(),
        format!("\"x\", {etag}"),
        format!("W/{etag}"),
        "*".to_owned(),
    ] {
        let reply = get(gateway.addr, DISCOVERY_PATH, &[("if-none-match", &value)]).await;
        assert_eq!(reply.status, StatusCode::NOT_MODIFIED, "{value}");
        assert!(reply.body.is_empty());
        assert_eq!(reply.headers["etag"], etag.as_str());
        assert_eq!(reply.headers["cache-control"], "public, max-age=300");
    }
    let stale = get(
        gateway.addr,
        DISCOVERY_PATH,
        &[("if-none-match", "\"old\"")],
    )
    .await;
    assert_eq!(stale.status, StatusCode::OK);

    // HEAD: the same headers, no body; other methods: 405 with Allow.
    let service = DiscoveryService::new(gateway.issuer(), gateway.registry.clone()).unwrap();
    let head = service
        .clone()
        .oneshot(Request::head(DISCOVERY_PATH).body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()["etag"], etag.as_str());
    assert_eq!(
        head.headers()["content-length"],
        reply.body.len().to_string().as_str()
    );
    let body = http_body_util::BodyExt::collect(head.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert!(body.is_empty());
    let post = service
        .clone()
        .oneshot(Request::post(DISCOVERY_PATH).body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post.headers()["allow"], "GET, HEAD");
    let other = service
        .oneshot(
            Request::get("/.well-known/openid-configuration/x")
                .body(())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_algorithm_list_follows_rotations() {
    let at = Arc::new(Mutex::new(std::time::SystemTime::now()));
    let clock_at = at.clone();
    let registry = KeyRegistry::builder()
        .clock(tower_jwt_signer::clock::Clock::from_fn(move || {
            *clock_at.lock().unwrap()
        }))
        .active(key(Algorithm::ES256))
        .build()
        .unwrap();
    let gateway = Gateway::start(registry.clone()).await;
    let algs = || async {
        let reply = get(gateway.addr, DISCOVERY_PATH, &[]).await;
        let etag = reply.headers["etag"].to_str().unwrap().to_owned();
        (
            reply.json()["id_token_signing_alg_values_supported"].clone(),
            etag,
        )
    };
    let (first, first_etag) = algs().await;
    assert_eq!(first, json!(["ES256"]));
    // An RS256 key published next: both listed; then it signs and the
    // ES256 key retires; once it has left the JWKS, only RS256.
    registry.add_next(key(Algorithm::RS256)).unwrap();
    let (both, both_etag) = algs().await;
    assert_eq!(both, json!(["RS256", "ES256"]));
    assert_ne!(both_etag, first_etag);
    registry.rotate(Duration::from_secs(60)).unwrap();
    assert_eq!(algs().await.0, json!(["RS256", "ES256"]));
    *at.lock().unwrap() += Duration::from_secs(61);
    assert_eq!(registry.prune_expired().len(), 1);
    let (last, last_etag) = algs().await;
    assert_eq!(last, json!(["RS256"]));
    assert_ne!(last_etag, both_etag);
}

/// A verifier on the gateway's issuer, refreshing on an unknown kid at once.
fn remote(gateway: &Gateway) -> RemoteJwks {
    RemoteJwks::issuer_builder(gateway.issuer())
        .refresh_cooldown(Duration::ZERO)
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_verifier_follows_a_rotation_through_discovery() {
    let first = key(Algorithm::ES256);
    let registry = KeyRegistry::new(first.clone());
    let gateway = Gateway::start(registry.clone()).await;
    let jwks = remote(&gateway);
    let verifier = Verifier::new(jwks.clone());
    let old_token = compact(&first, &claims());
    assert_eq!(
        verifier.verify(&old_token).await.unwrap().subject(),
        Some("alice")
    );
    assert_eq!(jwks.issuer(), Some(gateway.issuer().as_str()));
    assert_eq!(
        jwks.jwks_uri().unwrap().to_string(),
        format!("{}{JWKS_PATH}", gateway.issuer())
    );
    assert_eq!(
        (gateway.hits(DISCOVERY_PATH), gateway.hits(JWKS_PATH)),
        (1, 1)
    );

    // A new key signs: its unknown kid makes the verifier fetch again, the
    // discovery document first, then the JWKS it names.
    let second = key(Algorithm::EdDSA);
    registry
        .rotate_to(second.clone(), Duration::from_secs(600))
        .unwrap();
    let new_token = compact(&second, &claims());
    assert_eq!(
        verifier.verify(&new_token).await.unwrap().subject(),
        Some("alice")
    );
    assert_eq!(
        (gateway.hits(DISCOVERY_PATH), gateway.hits(JWKS_PATH)),
        (2, 2)
    );
    // The retiring key's tokens still verify.
    verifier.verify(&old_token).await.unwrap();
}

#[tokio::test]
async fn a_document_of_another_issuer_is_refused() {
    logs();
    let key = key(Algorithm::ES256);
    let gateway = Gateway::start(KeyRegistry::new(key.clone())).await;
    let jwks_uri = format!("{}{JWKS_PATH}", gateway.issuer());
    // Another issuer, or the same one written differently (exact match).
    for issuer in [
        "https://attacker.example".to_owned(),
        format!("{}/", gateway.issuer()),
        gateway.issuer().to_uppercase(),
    ] {
        gateway.serve_document(json!({"issuer": issuer, "jwks_uri": jwks_uri}).to_string());
        let jwks = remote(&gateway);
        let err = jwks.prefetch().await.unwrap_err();
        assert_eq!(
            err,
            FetchError::Discovery(DiscoveryError::IssuerMismatch {
                expected: gateway.issuer(),
                found: issuer.clone(),
            })
        );
        assert!(jwks.current().is_none());
        assert!(jwks.jwks_uri().is_none());
        let token = compact(&key, &claims());
        assert!(Verifier::new(jwks).verify(&token).await.is_err());
    }
    assert_eq!(gateway.hits(JWKS_PATH), 0, "its jwks_uri is never fetched");
    let events = logs().matching(&[
        "WARN",
        "names another issuer",
        &format!("expected={}", gateway.issuer()),
    ]);
    assert!(!events.is_empty(), "{:?}", logs().lines());
}

#[tokio::test]
async fn a_plain_http_jwks_uri_off_loopback_is_refused_before_any_connection() {
    let gateway = Gateway::start(KeyRegistry::new(key(Algorithm::ES256))).await;
    // `.test` is reserved (RFC 6761): it resolves nowhere. A connection
    // attempt would fail with FetchError::Http or a timeout, not this.
    gateway.serve_document(
        json!({"issuer": gateway.issuer(), "jwks_uri": "http://jwks.example.test/jwks.json"})
            .to_string(),
    );
    let err = remote(&gateway).prefetch().await.unwrap_err();
    assert_eq!(
        err,
        FetchError::Discovery(DiscoveryError::InsecureJwksUri(
            "http://jwks.example.test/jwks.json".to_owned()
        ))
    );
    assert_eq!(gateway.hits(JWKS_PATH), 0);

    // An issuer off loopback needs https, or the opt-in.
    assert_eq!(
        RemoteJwks::from_issuer("http://gateway.example.test")
            .unwrap_err()
            .setting(),
        "issuer"
    );
    RemoteJwks::issuer_builder("http://gateway.example.test")
        .allow_http(true)
        .build()
        .unwrap();
}

/// What a refused document must fail with.
type Expected = fn(&FetchError) -> bool;

#[tokio::test]
async fn hostile_documents_are_refused_without_a_panic() {
    let gateway = Gateway::start(KeyRegistry::new(key(Algorithm::ES256))).await;
    let issuer = gateway.issuer();
    // Nested deeper than serde_json's limit, within the size limit.
    let deep = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
    let huge = json!({"issuer": issuer, "jwks_uri": "x".repeat(70_000)}).to_string();
    let cases: Vec<(String, Expected)> = vec![
        (huge, |e| matches!(e, FetchError::TooLarge { limit: 65536 })),
        ("not json".to_owned(), |e| {
            matches!(e, FetchError::Discovery(DiscoveryError::Malformed(_)))
        }),
        (
            deep,
            |e| matches!(e, FetchError::Discovery(DiscoveryError::Malformed(m)) if m.contains("recursion")),
        ),
        ("[1, 2]".to_owned(), |e| {
            matches!(e, FetchError::Discovery(DiscoveryError::Malformed(_)))
        }),
        (
            json!({"issuer": 7, "jwks_uri": "http://127.0.0.1/"}).to_string(),
            |e| matches!(e, FetchError::Discovery(DiscoveryError::Malformed(m)) if m.contains("`issuer` is not a string")),
        ),
        (
            json!({"issuer": issuer}).to_string(),
            |e| matches!(e, FetchError::Discovery(DiscoveryError::Malformed(m)) if m.contains("no `jwks_uri`")),
        ),
        (
            format!(
                r#"{{"issuer":"https://attacker.example","issuer":{issuer:?},"jwks_uri":"http://127.0.0.1/"}}"#
            ),
            |e| matches!(e, FetchError::Discovery(DiscoveryError::Malformed(m)) if m.contains("duplicate")),
        ),
        (
            json!({"issuer": issuer, "jwks_uri": "/jwks.json"}).to_string(),
            |e| {
                matches!(
                    e,
                    FetchError::Discovery(DiscoveryError::InvalidJwksUri { .. })
                )
            },
        ),
        (
            json!({"issuer": issuer, "jwks_uri": "file:///etc/passwd"}).to_string(),
            |e| {
                matches!(
                    e,
                    FetchError::Discovery(DiscoveryError::InvalidJwksUri { .. })
                )
            },
        ),
        (
            json!({"issuer": issuer, "jwks_uri": "http://user:secret@127.0.0.1/jwks"}).to_string(),
            |e| matches!(e, FetchError::Discovery(DiscoveryError::InvalidJwksUri { uri, .. }) if !uri.contains("secret")),
        ),
    ];
    for (body, expected) in cases {
        gateway.serve_document(body.clone());
        let err = remote(&gateway).prefetch().await.unwrap_err();
        assert!(expected(&err), "{err:?} for {:.80}", body);
    }
    assert_eq!(gateway.hits(JWKS_PATH), 0);
}

#[tokio::test]
async fn a_moved_jwks_uri_is_followed_and_a_bad_document_keeps_the_last_good_set() {
    let key = key(Algorithm::ES256);
    let gateway = Gateway::start(KeyRegistry::new(key.clone())).await;
    let jwks = remote(&gateway);
    jwks.prefetch().await.unwrap();
    let token = compact(&key, &claims());
    let verifier = Verifier::new(jwks.clone());
    verifier.verify(&token).await.unwrap();

    // The document now names another issuer: the fetch fails, and the last
    // good set stays in use.
    gateway.serve_document(
        json!({"issuer": "https://other.example", "jwks_uri": "http://127.0.0.1:1/"}).to_string(),
    );
    assert!(matches!(
        jwks.prefetch().await,
        Err(FetchError::Discovery(DiscoveryError::IssuerMismatch { .. }))
    ));
    verifier.verify(&token).await.unwrap();

    // The JWKS moves (any path of the gateway answers it here): followed.
    let moved = format!("{}/keys/moved.json", gateway.issuer());
    gateway.serve_document(json!({"issuer": gateway.issuer(), "jwks_uri": moved}).to_string());
    jwks.prefetch().await.unwrap();
    assert_eq!(jwks.jwks_uri().unwrap().to_string(), moved);
    assert_eq!(gateway.hits("/keys/moved.json"), 1);
    verifier.verify(&token).await.unwrap();
}

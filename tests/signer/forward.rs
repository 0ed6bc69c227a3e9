//! The library's `Forwarder` in a gateway built as the README builds one
//! (axum, `JwtSignerLayer`, `Forwarder`, the JWKS route), over real
//! sockets on 127.0.0.1, in front of a real upstream: bodies stream both
//! ways and arrive intact, hop-by-hop headers never cross, the forwarding
//! headers are the gateway's, `Connection: authorization` cannot strip the
//! token, and a dead or silent upstream is answered 502 or 504.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request as AxumRequest};
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};
use tower::{ServiceBuilder, ServiceExt, service_fn};
use tower_jwt_signer::upstream::{ClientAddr, ForwardError, ForwardedHeaders};
use tower_jwt_signer::{Algorithm, Forwarder, JWKS_PATH, JwksService, JwtSignerLayer, KeyRegistry};

use crate::support::signer::{AbortOnDrop, verify_against};
use crate::support::upstream::raw_exchange;

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    uri: String,
    headers: HeaderMap,
    body_len: usize,
    body_digest: u64,
}

/// A real upstream on 127.0.0.1:
///
/// * `/echo`: streams the request body back as it arrives, with a
///   hop-by-hop header of its own (`Connection: x-upstream-hop`);
/// * `/big?n=BYTES`: a generated body of `n` bytes, in 64 KiB chunks;
/// * `/stream`: one chunk, then waits for `release` before the second;
/// * `/first-chunk`: reads the request's first chunk, says so on
///   `got_first`, then reads the rest;
/// * `/silent`: never answers;
/// * anything else: records the request and answers 200.
struct TestUpstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    release: Arc<Notify>,
    got_first: Arc<Notify>,
    _task: AbortOnDrop,
}

/// Deterministic bytes: `len` bytes of a simple generator.
fn pattern(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_u32;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

/// FNV-1a, to compare large bodies.
fn digest(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

impl TestUpstream {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let release = Arc::new(Notify::new());
        let got_first = Arc::new(Notify::new());
        let (log, release_in, first_in) = (
            Arc::clone(&seen),
            Arc::clone(&release),
            Arc::clone(&got_first),
        );
        let app = Router::new().fallback(move |request: AxumRequest| {
            let (log, release, got_first) = (
                Arc::clone(&log),
                Arc::clone(&release_in),
                Arc::clone(&first_in),
            );
            async move { upstream_answer(request, log, release, got_first).await }
        });
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        TestUpstream {
            addr,
            seen,
            release,
            got_first,
            _task: AbortOnDrop(task),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn upstream_answer(
    request: AxumRequest,
    log: Arc<Mutex<Vec<Seen>>>,
    release: Arc<Notify>,
    got_first: Arc<Notify>,
) -> Response<Body> {
    let path = request.uri().path().to_owned();
    match path.as_str() {
        "/api/echo" => {
            let mut response = Response::new(Body::new(request.into_body()));
            let headers = response.headers_mut();
            headers.insert("connection", "x-upstream-hop".parse().unwrap());
            headers.insert("x-upstream-hop", "secret".parse().unwrap());
            headers.insert("keep-alive", "timeout=5".parse().unwrap());
            headers.insert("proxy-authenticate", "Basic".parse().unwrap());
            headers.insert("x-upstream", "kept".parse().unwrap());
            response
        }
        "/api/big" => {
            let n: usize = request
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("n="))
                .and_then(|n| n.parse().ok())
                .unwrap();
            let bytes = Bytes::from(pattern(n));
            let chunks: Vec<Result<Frame<Bytes>, Infallible>> = (0..n)
                .step_by(64 * 1024)
                .map(|at| Ok(Frame::data(bytes.slice(at..(at + 64 * 1024).min(n)))))
                .collect();
            Response::new(Body::new(StreamBody::new(futures_util::stream::iter(
                chunks,
            ))))
        }
        "/api/stream" => {
            let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
            tokio::spawn(async move {
                tx.send(Ok(Frame::data(Bytes::from_static(b"first;"))))
                    .await
                    .unwrap();
                release.notified().await;
                tx.send(Ok(Frame::data(Bytes::from_static(b"second"))))
                    .await
                    .unwrap();
            });
            Response::new(Body::new(StreamBody::new(tokio_stream_from(rx))))
        }
        "/api/first-chunk" => {
            let mut body = request.into_body();
            let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
            got_first.notify_one();
            let rest = body.collect().await.unwrap().to_bytes();
            Response::new(Body::from(format!(
                "{}+{}",
                String::from_utf8_lossy(&first),
                String::from_utf8_lossy(&rest)
            )))
        }
        "/api/silent" => std::future::pending().await,
        _ => {
            let (parts, body) = request.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            log.lock().unwrap().push(Seen {
                uri: parts.uri.to_string(),
                headers: parts.headers,
                body_len: body.len(),
                body_digest: digest(&body),
            });
            Response::new(Body::from("ok"))
        }
    }
}

/// An mpsc receiver as a stream.
fn tokio_stream_from<T: Send + 'static>(
    rx: mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

/// The gateway, as the README builds it: the forwarder as the fallback,
/// the signer over it, the JWKS route after the signer. Serves with the
/// client's address (`ConnectInfo`) for `X-Forwarded-For`.
struct Gateway {
    addr: SocketAddr,
    registry: KeyRegistry,
    _task: AbortOnDrop,
}

impl Gateway {
    async fn start(forwarder: Forwarder) -> Self {
        let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
        let signer = JwtSignerLayer::builder(registry.clone())
            .issuer("https://gateway.example")
            .audience("orders-api")
            .build()
            .unwrap();
        // The client's address as the library takes it (`ClientAddr`), from
        // axum's `ConnectInfo`: the forwarder reads `ConnectInfo` itself
        // only with the `axum` feature, and these tests run without it too.
        let forwarder = ServiceBuilder::new()
            .map_request(|mut request: AxumRequest| {
                if let Some(ConnectInfo(client)) = request
                    .extensions()
                    .get::<ConnectInfo<SocketAddr>>()
                    .copied()
                {
                    request.extensions_mut().insert(ClientAddr(client));
                }
                request
            })
            .service(forwarder);
        let app = Router::new()
            .fallback_service(forwarder)
            .layer(signer)
            .route_service(JWKS_PATH, JwksService::new(registry.clone()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let app = app.into_make_service_with_connect_info::<SocketAddr>();
            axum::serve(listener, app).await.unwrap();
        });
        Gateway {
            addr,
            registry,
            _task: AbortOnDrop(task),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// A client that sends any boxed body.
fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Body> {
    Client::builder(TokioExecutor::new()).build_http::<Body>()
}

async fn bounded<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), future)
        .await
        .expect("within 20 s")
}

#[tokio::test]
async fn large_bodies_arrive_intact_both_ways() {
    let upstream = TestUpstream::start().await;
    let gateway = Gateway::start(Forwarder::new(format!("{}/api", upstream.url())).unwrap()).await;

    // 8 MiB up, in 100 chunks of a chunked request, echoed back.
    let sent = pattern(8 * 1024 * 1024);
    let chunks: Vec<Result<Frame<Bytes>, Infallible>> = sent
        .chunks(sent.len() / 100 + 1)
        .map(|chunk| Ok(Frame::data(Bytes::copy_from_slice(chunk))))
        .collect();
    let request = Request::post(gateway.url("/echo"))
        .body(Body::new(StreamBody::new(futures_util::stream::iter(
            chunks,
        ))))
        .unwrap();
    let response = bounded(client().request(request)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let echoed = bounded(response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(echoed.len(), sent.len());
    assert!(echoed[..] == sent[..], "the echo differs");

    // 32 MiB down.
    let n = 32 * 1024 * 1024;
    let request = Request::get(gateway.url(&format!("/big?n={n}")))
        .body(Body::empty())
        .unwrap();
    let response = bounded(client().request(request)).await.unwrap();
    let got = bounded(response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(got.len(), n);
    assert_eq!(digest(&got), digest(&pattern(n)));

    // A fixed-length body reaches the upstream as sent.
    let body = pattern(300_000);
    let request = Request::put(gateway.url("/store"))
        .body(Body::from(body.clone()))
        .unwrap();
    let response = bounded(client().request(request)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen = upstream.seen();
    assert_eq!(seen[0].body_len, body.len());
    assert_eq!(seen[0].body_digest, digest(&body));
    assert_eq!(seen[0].headers["content-length"], "300000");
}

/// Bodies are streamed, not buffered: the first chunk of the response
/// reaches the client while the upstream holds the second back until the
/// client has it, and the upstream reads the request's first chunk while
/// the client holds its second back. A forwarder that buffers deadlocks
/// here (bounded: the test fails).
#[tokio::test]
async fn bodies_stream_both_ways() {
    let upstream = TestUpstream::start().await;
    let gateway = Gateway::start(Forwarder::new(format!("{}/api", upstream.url())).unwrap()).await;

    let request = Request::get(gateway.url("/stream"))
        .body(Body::empty())
        .unwrap();
    let response = bounded(client().request(request)).await.unwrap();
    let mut body = response.into_body();
    let first = bounded(body.frame()).await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "first;");
    upstream.release.notify_one();
    let rest = bounded(body.collect()).await.unwrap().to_bytes();
    assert_eq!(rest, "second");

    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
    let request = Request::post(gateway.url("/first-chunk"))
        .body(Body::new(StreamBody::new(tokio_stream_from(rx))))
        .unwrap();
    let answer = tokio::spawn(client().request(request));
    tx.send(Ok(Frame::data(Bytes::from_static(b"one"))))
        .await
        .unwrap();
    bounded(upstream.got_first.notified()).await;
    tx.send(Ok(Frame::data(Bytes::from_static(b"two"))))
        .await
        .unwrap();
    drop(tx);
    let response = bounded(answer).await.unwrap().unwrap();
    let body = bounded(response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(body, "one+two");
}

#[tokio::test]
async fn hop_by_hop_headers_never_cross_and_forwarding_headers_are_ours() {
    let upstream = TestUpstream::start().await;
    let gateway = Gateway::start(Forwarder::new(format!("{}/api", upstream.url())).unwrap()).await;

    let request = Request::get(gateway.url("/orders/7?x=1"))
        .header("connection", "x-hop, keep-alive")
        .header("x-hop", "dropped")
        .header("keep-alive", "timeout=5")
        .header("te", "trailers")
        .header("trailer", "x-sum")
        .header("proxy-authorization", "Basic c2VjcmV0")
        .header("x-forwarded-for", "10.6.6.6")
        .header("x-forwarded-host", "evil.example")
        .header("forwarded", "for=10.6.6.6")
        .header("x-custom", "kept")
        .body(Body::empty())
        .unwrap();
    let response = bounded(client().request(request)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen = upstream.seen();
    let got = &seen[0];
    assert_eq!(got.uri, "/api/orders/7?x=1");
    for hop in [
        "connection",
        "x-hop",
        "keep-alive",
        "te",
        "trailer",
        "proxy-authorization",
    ] {
        assert!(got.headers.get(hop).is_none(), "{hop} was forwarded");
    }
    assert_eq!(got.headers["x-custom"], "kept");
    assert_eq!(got.headers["host"], upstream.addr.to_string());
    // The client's own forwarding headers are replaced by the gateway's.
    assert_eq!(got.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(got.headers["x-forwarded-host"], gateway.addr.to_string());
    assert_eq!(
        got.headers["forwarded"],
        format!("for=127.0.0.1;host=\"{}\"", gateway.addr)
    );
    assert!(got.headers.get("authorization").is_some(), "signed");

    // The response's hop-by-hop headers go too.
    let request = Request::post(gateway.url("/echo"))
        .body(Body::from("x"))
        .unwrap();
    let response = bounded(client().request(request)).await.unwrap();
    assert_eq!(response.headers()["x-upstream"], "kept");
    for hop in ["x-upstream-hop", "keep-alive", "proxy-authenticate"] {
        assert!(response.headers().get(hop).is_none(), "{hop} came back");
    }
}

#[tokio::test]
async fn a_trusted_chain_is_appended_to() {
    let upstream = TestUpstream::start().await;
    let forwarder = Forwarder::builder(format!("{}/api", upstream.url()))
        .forwarded_headers(ForwardedHeaders::Append)
        .build()
        .unwrap();
    let gateway = Gateway::start(forwarder).await;
    let request = Request::get(gateway.url("/x"))
        .header("x-forwarded-for", "203.0.113.9")
        .header("forwarded", "for=203.0.113.9")
        .body(Body::empty())
        .unwrap();
    bounded(client().request(request)).await.unwrap();
    let got = &upstream.seen()[0];
    assert_eq!(got.headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(
        got.headers["forwarded"],
        format!("for=203.0.113.9, for=127.0.0.1;host=\"{}\"", gateway.addr)
    );
}

/// `Connection: close, authorization` names the token header hop-by-hop:
/// the forwarder drops what `Connection` names, so only the signer's fix
/// (its header's name taken out of `Connection`) keeps the token.
#[tokio::test]
async fn connection_authorization_cannot_strip_the_token() {
    let upstream = TestUpstream::start().await;
    let gateway = Gateway::start(Forwarder::new(format!("{}/api", upstream.url())).unwrap()).await;
    for connection in [
        "authorization",
        "keep-alive, Authorization",
        "AUTHORIZATION",
    ] {
        let before = upstream.seen().len();
        let request = Request::get(gateway.url("/orders"))
            .header("connection", connection)
            .header("authorization", "Bearer from-the-client")
            .body(Body::empty())
            .unwrap();
        let response = bounded(client().request(request)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{connection}");
        let got = &upstream.seen()[before];
        let token = got.headers["authorization"]
            .to_str()
            .unwrap()
            .strip_prefix("Bearer ")
            .expect("our token");
        verify_against(token, gateway.registry.current().jwks_bytes()).unwrap();
    }

    // The signer's fix, whatever forwarder follows: what it forwards names
    // no token header in `Connection`.
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let seen: Arc<Mutex<Option<HeaderMap>>> = Arc::default();
    let record = Arc::clone(&seen);
    let inner = service_fn(move |request: Request<Empty<Bytes>>| {
        *record.lock().unwrap() = Some(request.headers().clone());
        async { Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new())) }
    });
    let service = ServiceBuilder::new()
        .layer(JwtSignerLayer::new(registry))
        .service(inner);
    let request = Request::get("/")
        .header("connection", "close, authorization")
        .body(Empty::new())
        .unwrap();
    service.oneshot(request).await.unwrap();
    let headers = seen.lock().unwrap().clone().unwrap();
    assert_eq!(headers["connection"], "close");
    assert!(
        headers["authorization"]
            .to_str()
            .unwrap()
            .starts_with("Bearer ey")
    );
}

#[tokio::test]
async fn a_dead_upstream_is_502_and_a_silent_one_504() {
    // A port that was free a moment ago: nothing listens there.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let gateway = Gateway::start(Forwarder::new(format!("http://{closed_addr}")).unwrap()).await;
    for _ in 0..2 {
        let request = Request::get(gateway.url("/x")).body(Body::empty()).unwrap();
        let response = bounded(client().request(request)).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"], "bad_gateway");
    }
    // The JWKS route is the gateway's own.
    let request = Request::get(gateway.url(JWKS_PATH))
        .body(Body::empty())
        .unwrap();
    let response = bounded(client().request(request)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // The upstream accepts the request and never answers: 504 after the
    // forwarder's timeout (whatever it is: no clock is read here).
    let upstream = TestUpstream::start().await;
    let forwarder = Forwarder::builder(format!("{}/api", upstream.url()))
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let gateway = Gateway::start(forwarder.clone()).await;
    let request = Request::get(gateway.url("/silent"))
        .body(Body::empty())
        .unwrap();
    let response = bounded(client().request(request)).await.unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"], "gateway_timeout");

    // The cause is in the response extensions, for an outer layer.
    let response = forwarder
        .oneshot(Request::get("/silent").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        response.extensions().get::<ForwardError>(),
        Some(&ForwardError::Timeout {
            after: Duration::from_millis(300)
        })
    );
}

/// The dot-segment checks of the example proxy, now the forwarder's own.
#[tokio::test]
async fn targets_above_the_base_path_are_refused_and_never_forwarded() {
    let upstream = TestUpstream::start().await;
    let gateway = Gateway::start(Forwarder::new(format!("{}/api", upstream.url())).unwrap()).await;
    for (line, status) in [
        ("GET /../admin HTTP/1.1", 400),
        ("GET /%2e%2e/admin HTTP/1.1", 400),
        ("GET /..;/admin HTTP/1.1", 400),
        ("GET /a%2f..%2f..%2fadmin HTTP/1.1", 400),
        ("OPTIONS * HTTP/1.1", 400),
        ("CONNECT 127.0.0.1:443 HTTP/1.1", 405),
    ] {
        let raw = format!("{line}\r\nHost: gw.test\r\nConnection: close\r\n\r\n");
        let response = raw_exchange(gateway.addr, &raw).await;
        assert_eq!(response.status, status, "{line}: {}", response.head);
    }
    assert!(upstream.seen().is_empty(), "{:?}", upstream.seen());
    let raw = "GET /a/./b/../c HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n";
    assert_eq!(raw_exchange(gateway.addr, raw).await.status, 200);
    assert_eq!(upstream.seen()[0].uri, "/api/a/c");
}

#[test]
fn bad_upstream_urls_are_refused_naming_the_setting() {
    for (url, reason) in [
        ("https://x", "only http://"),
        ("127.0.0.1:3000", "needs a scheme"),
        ("http://user:pw@x", "user information"),
        ("http://x/?q=1", "query"),
        ("http://x/a/../b", "dot-segments"),
        ("not a url", "not a URL"),
    ] {
        let err = Forwarder::new(url).unwrap_err();
        assert_eq!(err.setting(), "url", "{url}");
        assert!(err.reason().contains(reason), "{url}: {err}");
        assert!(!err.to_string().contains("pw"), "{err}");
    }
    let err = Forwarder::builder("http://x")
        .timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.setting(), "timeout");
}

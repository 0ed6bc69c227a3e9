//! The signing proxy example end to end over real sockets on 127.0.0.1,
//! in front of a recording test upstream.

#[allow(dead_code)]
#[path = "../../examples/signing_proxy.rs"]
mod signing_proxy;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::signer::{AbortOnDrop, fetch, segment, verify};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use signing_proxy::{Command, Options, parse_args, serve, signer_layer};
use tokio::net::TcpListener;
use tower_jwt_signer::{Algorithm, JWKS_PATH, KeyRegistry};

/// A request as the upstream received it.
#[derive(Debug, Clone)]
struct Received {
    method: Method,
    uri: String,
    headers: HeaderMap,
    body: Bytes,
}

type Log = Arc<Mutex<Vec<Received>>>;

/// An upstream that records every request and answers 201 with a body, a
/// custom header and a hop-by-hop header.
async fn upstream() -> (SocketAddr, Log, AbortOnDrop) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log: Log = Arc::default();
    let seen = Arc::clone(&log);
    let task = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let seen = Arc::clone(&seen);
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = body.collect().await.unwrap().to_bytes();
                        seen.lock().unwrap().push(Received {
                            method: parts.method,
                            uri: parts.uri.to_string(),
                            headers: parts.headers,
                            body,
                        });
                        let mut response =
                            Response::new(Full::new(Bytes::from_static(b"from upstream")));
                        *response.status_mut() = StatusCode::CREATED;
                        response
                            .headers_mut()
                            .insert("x-upstream", "yes".parse().unwrap());
                        response
                            .headers_mut()
                            .insert("proxy-authenticate", "Basic".parse().unwrap());
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, log, AbortOnDrop(task))
}

fn options(flags: &[&str]) -> Options {
    match parse_args(flags.iter().map(|s| (*s).to_owned())).unwrap() {
        Command::Run(options) => *options,
        Command::Help => panic!("not help"),
    }
}

/// Starts the proxy on a free port with `registry`.
async fn proxy(flags: &[&str], registry: &KeyRegistry) -> (SocketAddr, AbortOnDrop) {
    let options = options(flags);
    let layer = signer_layer(&options, registry.clone()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = serve(listener, &options, layer).await;
    });
    (addr, AbortOnDrop(task))
}

fn request(method: Method, uri: String) -> http::request::Builder {
    Request::builder().method(method).uri(uri)
}

#[tokio::test]
async fn requests_arrive_unchanged_except_for_the_token() {
    let (upstream_addr, log, _upstream) = upstream().await;
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let upstream_url = format!("http://{upstream_addr}");
    let (addr, _proxy) = proxy(
        &[
            "--upstream",
            &upstream_url,
            "--issuer",
            "gw",
            "--audience",
            "orders",
            "--subject",
            "svc-gateway",
            "--ttl",
            "120",
            "--claim",
            "tenant=${req.headers.x-tenant:public}",
            "--claim",
            "team=core",
            "--claim",
            "n=${number:req.query.n:0}",
        ],
        &registry,
    )
    .await;

    let request = request(
        Method::POST,
        format!("http://{addr}/orders/7?n=5&q=a%20b&q=c"),
    )
    .header("x-tenant", "acme")
    .header("x-custom", "kept")
    .header("x-multi", "1")
    .header("x-multi", "2")
    .header("authorization", "Bearer from-client")
    .header("connection", "x-hop")
    .header("x-hop", "dropped")
    .header("te", "trailers")
    .header("proxy-authorization", "Basic c2VjcmV0")
    .header("content-type", "text/plain")
    .body(Full::new(Bytes::from_static(b"the payload")))
    .unwrap();
    let (parts, body) = fetch(request).await;

    // The response comes back, minus hop-by-hop headers.
    assert_eq!(parts.status, StatusCode::CREATED);
    assert_eq!(parts.headers["x-upstream"], "yes");
    assert!(parts.headers.get("proxy-authenticate").is_none());
    assert_eq!(&body[..], b"from upstream");

    let received = log.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    let got = &received[0];
    assert_eq!(got.method, Method::POST);
    assert_eq!(got.uri, "/orders/7?n=5&q=a%20b&q=c");
    assert_eq!(&got.body[..], b"the payload");
    assert_eq!(got.headers["x-custom"], "kept");
    assert_eq!(got.headers["x-tenant"], "acme");
    assert_eq!(got.headers.get_all("x-multi").iter().count(), 2);
    assert_eq!(got.headers["content-type"], "text/plain");
    assert_eq!(got.headers["content-length"], "11");
    assert_eq!(got.headers["host"], upstream_addr.to_string());
    for hop in [
        "x-hop",
        "te",
        "proxy-authorization",
        "connection",
        "keep-alive",
    ] {
        assert!(got.headers.get(hop).is_none(), "{hop} forwarded");
    }
    let values: Vec<_> = got.headers.get_all("authorization").iter().collect();
    assert_eq!(values.len(), 1);
    let token = values[0].to_str().unwrap().strip_prefix("Bearer ").unwrap();
    let claims = verify(token, &registry).unwrap().claims;
    assert_eq!(claims["iss"], "gw");
    assert_eq!(claims["aud"], "orders");
    assert_eq!(claims["sub"], "svc-gateway");
    assert_eq!(claims["tenant"], "acme");
    assert_eq!(claims["team"], "core");
    assert_eq!(claims["n"], 5);
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        120
    );
}

#[tokio::test]
async fn a_connection_header_cannot_strip_the_token() {
    let (upstream_addr, log, _upstream) = upstream().await;
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let upstream_url = format!("http://{upstream_addr}");
    let (addr, _proxy) = proxy(&["--upstream", &upstream_url], &registry).await;
    let request = request(Method::GET, format!("http://{addr}/"))
        .header("connection", "authorization, keep-alive")
        .body(Full::default())
        .unwrap();
    let (parts, _) = fetch(request).await;
    assert_eq!(parts.status, StatusCode::CREATED);
    let got = log.lock().unwrap()[0].clone();
    let token = got.headers["authorization"].to_str().unwrap();
    verify(token.strip_prefix("Bearer ").unwrap(), &registry).unwrap();
}

#[tokio::test]
async fn the_jwks_is_answered_by_the_proxy_and_never_forwarded() {
    let (upstream_addr, log, _upstream) = upstream().await;
    let registry = KeyRegistry::generate(Algorithm::EdDSA).unwrap();
    let upstream_url = format!("http://{upstream_addr}");
    let (addr, _proxy) = proxy(
        &["--upstream", &upstream_url, "--jwks-max-age", "42"],
        &registry,
    )
    .await;
    let (parts, body) = fetch(
        request(Method::GET, format!("http://{addr}{JWKS_PATH}"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(parts.headers["cache-control"], "public, max-age=42");
    assert_eq!(&body[..], &registry.current().jwks_bytes()[..]);
    let (parts, _) = fetch(
        request(Method::POST, format!("http://{addr}{JWKS_PATH}"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(parts.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(
        log.lock().unwrap().is_empty(),
        "nothing reached the upstream"
    );
}

#[tokio::test]
async fn an_unreachable_upstream_gives_502_and_the_proxy_keeps_serving() {
    // A port that was free a moment ago: nothing listens there.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let upstream_url = format!("http://{closed_addr}");
    let (addr, _proxy) = proxy(&["--upstream", &upstream_url], &registry).await;
    for _ in 0..2 {
        let (parts, body) = fetch(
            request(Method::GET, format!("http://{addr}/x"))
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert_eq!(parts.status, StatusCode::BAD_GATEWAY);
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"], "bad_gateway");
    }
    let (parts, _) = fetch(
        request(Method::GET, format!("http://{addr}{JWKS_PATH}"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(parts.status, StatusCode::OK);
}

#[tokio::test]
async fn policies_header_and_scheme_flags() {
    let (upstream_addr, log, _upstream) = upstream().await;
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let upstream_url = format!("http://{upstream_addr}/base/");
    let (addr, _proxy) = proxy(
        &["--upstream", &upstream_url, "--existing", "reject"],
        &registry,
    )
    .await;
    let (parts, body) = fetch(
        request(Method::GET, format!("http://{addr}/x"))
            .header("authorization", "Bearer mine")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(parts.status, StatusCode::BAD_REQUEST);
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"], "token_present");
    assert!(log.lock().unwrap().is_empty());

    let (addr, _proxy2) = proxy(
        &[
            "--upstream",
            &upstream_url,
            "--header",
            "X-JWT-Token",
            "--scheme",
            "",
        ],
        &registry,
    )
    .await;
    let (parts, _) = fetch(
        request(Method::GET, format!("http://{addr}/x?y=1"))
            .header("authorization", "Basic YTpi")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(parts.status, StatusCode::CREATED);
    let got = log.lock().unwrap()[0].clone();
    assert_eq!(got.uri, "/base/x?y=1", "the base path is kept");
    assert_eq!(got.headers["authorization"], "Basic YTpi");
    let token = got.headers["x-jwt-token"].to_str().unwrap();
    assert_eq!(segment(token.split('.').next().unwrap())["typ"], "JWT");
    verify(token, &registry).unwrap();
}

#[test]
fn bad_flags_give_clear_errors() {
    let parse = |flags: &[&str]| parse_args(flags.iter().map(|s| (*s).to_owned()));
    for (flags, expected) in [
        (&[][..], "--upstream URL is required"),
        (&["--upstream"][..], "--upstream needs a value"),
        (&["--upstream", "https://x"][..], "only http://"),
        (&["--upstream", "127.0.0.1:3000"][..], "needs a scheme"),
        (
            &["--upstream", "http://x", "--ttl", "soon"][..],
            "invalid value \"soon\" for --ttl",
        ),
        (
            &["--upstream", "http://x", "--existing", "maybe"][..],
            "replace, keep or reject",
        ),
        (&["--upstream", "http://x", "--alg", "none"][..], "\"none\""),
        (
            &["--upstream", "http://x", "--claim", "novalue"][..],
            "NAME=VALUE",
        ),
        (
            &["--upstream", "http://x", "--listen", "nowhere"][..],
            "--listen",
        ),
        (
            &["--upstream", "http://x", "--frobnicate"][..],
            "unknown flag --frobnicate",
        ),
        (&["stray"][..], "unexpected argument"),
    ] {
        let err = parse(flags).unwrap_err();
        assert!(err.contains(expected), "{flags:?}: {err}");
    }
    assert!(matches!(parse(&["--help"]), Ok(Command::Help)));

    // Settings the signer refuses are reported before anything listens.
    for (flags, expected) in [
        (&["--ttl", "0"][..], "lifetime"),
        (&["--header", "bad name"][..], "header name"),
        (&["--header", "Connection"][..], "hop-by-hop"),
        (&["--scheme", "Bea rer"][..], "scheme"),
        (&["--claim", "x=${req.nope}"][..], "unknown expression"),
        (&["--claim", "exp=1"][..], "computed by the signer"),
        (&["--issuer", ""][..], "cannot be empty"),
    ] {
        let mut all = vec!["--upstream", "http://127.0.0.1:1"];
        all.extend_from_slice(flags);
        let options = options(&all);
        let err = signer_layer(&options, KeyRegistry::empty()).unwrap_err();
        assert!(err.to_string().contains(expected), "{flags:?}: {err}");
    }
}

#[tokio::test]
async fn run_refuses_to_start_on_a_busy_port() {
    let busy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    let options = options(&["--upstream", "http://127.0.0.1:1", "--listen", &busy_addr]);
    let result = tokio::time::timeout(Duration::from_secs(30), signing_proxy::run(options))
        .await
        .expect("returns at once");
    assert!(result.is_err());
}

//! The signing proxy example end to end: the real binary, over real
//! sockets on 127.0.0.1, in front of a recording test upstream. Tokens are
//! checked with jsonwebtoken (OpenSSL for ES512) against the JWKS the
//! proxy serves.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use tokio::net::TcpListener;
use tower_jwt_signer::JWKS_PATH;

use crate::support::process::{Example, LIMIT, Running};
use crate::support::signer::{fetch, segment, verify_against};
use crate::support::upstream::{Upstream, raw_exchange};

/// The proxy on a free port with `flags` (and `--listen 127.0.0.1:0`);
/// returns the running process and its address.
pub(super) async fn proxy(flags: &[&str]) -> (Running, SocketAddr) {
    let mut args = vec!["--listen", "127.0.0.1:0"];
    args.extend_from_slice(flags);
    let running = Example::new("signing_proxy").spawn(&args);
    let addr = running.address("signing proxy on").await;
    (running, addr)
}

fn request(method: Method, uri: String) -> http::request::Builder {
    Request::builder().method(method).uri(uri)
}

/// `GET http://addr{path}`: the status and the body.
pub(super) async fn get(addr: SocketAddr, path: &str) -> (StatusCode, Bytes) {
    let (parts, body) = fetch(
        request(Method::GET, format!("http://{addr}{path}"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    (parts.status, body)
}

/// The JWKS the proxy at `addr` serves.
pub(super) async fn jwks(addr: SocketAddr) -> Bytes {
    let (status, body) = get(addr, JWKS_PATH).await;
    assert_eq!(status, StatusCode::OK);
    body
}

#[tokio::test]
async fn requests_arrive_unchanged_except_for_the_token() {
    let upstream = Upstream::start().await;
    let (_proxy, addr) = proxy(&[
        "--upstream",
        &upstream.url(),
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
    ])
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

    let received = upstream.received();
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
    assert_eq!(got.headers["host"], upstream.addr.to_string());
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
    let claims = verify_against(token, &jwks(addr).await).unwrap().claims;
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
    let upstream = Upstream::start().await;
    let (_proxy, addr) = proxy(&["--upstream", &upstream.url()]).await;
    let request = request(Method::GET, format!("http://{addr}/"))
        .header("connection", "authorization, keep-alive")
        .body(Full::default())
        .unwrap();
    let (parts, _) = fetch(request).await;
    assert_eq!(parts.status, StatusCode::CREATED);
    let token = upstream.received()[0].bearer().expect("a token");
    verify_against(&token, &jwks(addr).await).unwrap();
}

#[tokio::test]
async fn the_jwks_is_answered_by_the_proxy_and_never_forwarded() {
    let upstream = Upstream::start().await;
    let (proxy, addr) = proxy(&[
        "--upstream",
        &upstream.url(),
        "--alg",
        "EdDSA",
        "--jwks-max-age",
        "42",
    ])
    .await;
    // The kid the proxy says it signs with.
    let started = proxy.line("the start line", |l| l.contains("signing proxy on"));
    let kid = started
        .split("kid ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .expect("the start line names the kid");
    let (parts, body) = fetch(
        request(Method::GET, format!("http://{addr}{JWKS_PATH}"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(parts.headers["cache-control"], "public, max-age=42");
    let set: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let keys = set["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{set}");
    assert_eq!(keys[0]["kid"], kid);
    assert_eq!(keys[0]["alg"], "EdDSA");
    assert_eq!(keys[0]["crv"], "Ed25519");
    assert!(keys[0].get("d").is_none(), "no private member");
    let (parts, _) = fetch(
        request(Method::POST, format!("http://{addr}{JWKS_PATH}"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(parts.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(
        upstream.received().is_empty(),
        "nothing reached the upstream"
    );
}

#[tokio::test]
async fn an_unreachable_upstream_gives_502_and_the_proxy_keeps_serving() {
    // A port that was free a moment ago: nothing listens there.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let (_proxy, addr) = proxy(&["--upstream", &format!("http://{closed_addr}")]).await;
    for _ in 0..2 {
        let (status, body) = get(addr, "/x").await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"], "bad_gateway");
    }
    let (status, _) = get(addr, JWKS_PATH).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn policies_header_and_scheme_flags() {
    let upstream = Upstream::start().await;
    let upstream_url = format!("{}/base/", upstream.url());
    let (_proxy, addr) = proxy(&["--upstream", &upstream_url, "--existing", "reject"]).await;
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
    assert!(upstream.received().is_empty());

    let (_proxy2, addr) = proxy(&[
        "--upstream",
        &upstream_url,
        "--header",
        "X-JWT-Token",
        "--scheme",
        "",
    ])
    .await;
    let (parts, _) = fetch(
        request(Method::GET, format!("http://{addr}/x?y=1"))
            .header("authorization", "Basic YTpi")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(parts.status, StatusCode::CREATED);
    let got = upstream.received()[0].clone();
    assert_eq!(got.uri, "/base/x?y=1", "the base path is kept");
    assert_eq!(got.headers["authorization"], "Basic YTpi");
    let token = got.headers["x-jwt-token"].to_str().unwrap();
    assert_eq!(segment(token.split('.').next().unwrap())["typ"], "JWT");
    verify_against(token, &jwks(addr).await).unwrap();
}

/// Runs the proxy with `flags`; it must exit before listening.
fn refused(flags: &[&str]) -> crate::support::process::Finished {
    Example::new("signing_proxy").run(flags, LIMIT)
}

#[test]
fn bad_flags_give_clear_errors() {
    for (flags, expected) in [
        (
            &[][..],
            "the following required arguments were not provided:\n  --upstream <URL>",
        ),
        (
            &["--upstream"][..],
            "a value is required for '--upstream <URL>'",
        ),
        (
            &["--upstream", "https://x"][..],
            "only http:// upstreams are supported, not https:// (--upstream)",
        ),
        (
            &["--upstream", "127.0.0.1:3000"][..],
            "needs a scheme, as in http://127.0.0.1:3000 (--upstream)",
        ),
        (
            &["--upstream", "http://x", "--ttl", "soon"][..],
            "invalid value 'soon' for '--ttl <SECS>'",
        ),
        (
            &["--upstream", "http://x", "--existing", "maybe"][..],
            "replace, keep or reject",
        ),
        (
            &["--upstream", "http://x", "--timeout", "0"][..],
            "invalid value '0' for '--timeout <SECS>': must be at least 1",
        ),
        (
            &["--upstream", "http://x", "--max-body", "lots"][..],
            "invalid value 'lots' for '--max-body <BYTES>'",
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
            "unexpected argument '--frobnicate'",
        ),
        (&["stray"][..], "unexpected argument 'stray'"),
        (
            &["--upstream", "http://x", "--kek-file", "k"][..],
            "the following required arguments were not provided:\n  --redis-url <URL>",
        ),
        // Settings the signer refuses are reported before anything listens.
        (&["--upstream", "http://x", "--ttl", "0"][..], "lifetime"),
        (
            &["--upstream", "http://x", "--header", "bad name"][..],
            "header name",
        ),
        (
            &["--upstream", "http://x", "--header", "Connection"][..],
            "hop-by-hop",
        ),
        (
            &["--upstream", "http://x", "--scheme", "Bea rer"][..],
            "scheme",
        ),
        (
            &["--upstream", "http://x", "--claim", "x=${req.nope}"][..],
            "unknown expression",
        ),
        (
            &["--upstream", "http://x", "--claim", "exp=1"][..],
            "computed by the signer",
        ),
        (
            &["--upstream", "http://x", "--issuer", ""][..],
            "cannot be empty",
        ),
        // So are the registry's, naming the flag.
        (
            &["--upstream", "http://x", "--jwks-max-age", "86401"][..],
            "invalid jwks_max_age",
        ),
        (
            &["--upstream", "http://x", "--jwks-max-age", "86401"][..],
            "(--jwks-max-age)",
        ),
    ] {
        let finished = refused(flags);
        assert_eq!(finished.code(), Some(2), "{flags:?}: {finished:?}");
        assert!(
            finished.stderr.starts_with("error: ") && finished.stderr.contains(expected),
            "{flags:?}: {}",
            finished.stderr
        );
        assert!(
            finished
                .stderr
                .contains("For more information, try '--help'."),
            "{flags:?}"
        );
        assert!(finished.stdout.is_empty(), "{flags:?}: {}", finished.stdout);
    }
    let help = refused(&["--help"]);
    assert_eq!(help.code(), Some(0));
    assert!(
        help.stdout.contains("Usage: signing_proxy"),
        "{}",
        help.stdout
    );
    assert!(help.stdout.contains("--upstream <URL>"), "{}", help.stdout);
}

#[tokio::test]
async fn run_refuses_to_start_on_a_busy_port() {
    let busy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    let finished = tokio::task::spawn_blocking(move || {
        refused(&["--upstream", "http://127.0.0.1:1", "--listen", &busy_addr])
    })
    .await
    .unwrap();
    // Not a usage error (2): it could not listen (1), and says why.
    assert_eq!(finished.code(), Some(1), "{finished:?}");
    assert!(
        finished.stderr.contains("error: ") && finished.stderr.contains("Address already in use"),
        "{}",
        finished.stderr
    );
    assert!(!finished.stdout.contains("signing proxy on"));
    drop(busy);
}

/// A raw request line and `Connection: close`, for [`raw_exchange`].
fn raw(request_line: &str) -> String {
    format!("{request_line}\r\nHost: proxy.test\r\nConnection: close\r\n\r\n")
}

/// Issue 16, "Example proxy": a path whose dot-segments climb above the
/// upstream's base path (`GET /../../admin` was forwarded as
/// `/api/../../admin`, with a signed token), in any spelling, is refused
/// with 400 and never forwarded; `OPTIONS *` and `CONNECT` are not
/// forwarded either. Dot-segments that stay inside are normalised (RFC 3986
/// section 5.2.4) before the request is signed and forwarded.
#[tokio::test]
async fn dot_segments_never_climb_above_the_base_path() {
    let upstream = Upstream::start().await;
    let base = format!("{}/api", upstream.url());
    let (_proxy, addr) = proxy(&["--upstream", &base, "--claim", "path=${req.path}"]).await;

    for (request_line, status) in [
        ("GET /../../admin HTTP/1.1", 400),
        ("GET /.. HTTP/1.1", 400),
        ("GET /a/../../admin HTTP/1.1", 400),
        ("GET /a/b/../../../admin?x=1 HTTP/1.1", 400),
        ("GET /%2e%2e/admin HTTP/1.1", 400),
        ("GET /%2E%2E/%2e%2E/admin HTTP/1.1", 400),
        ("GET /.%2e/admin HTTP/1.1", 400),
        ("GET /%2e./admin HTTP/1.1", 400),
        ("GET /..%2fadmin HTTP/1.1", 400),
        ("GET /a%2F..%2F..%2Fadmin HTTP/1.1", 400),
        ("GET /..%5cadmin HTTP/1.1", 400),
        ("GET /..;/admin HTTP/1.1", 400),
        ("GET /a/..;x=1/../admin HTTP/1.1", 400),
        ("GET http://proxy.test/../admin HTTP/1.1", 400),
        ("OPTIONS * HTTP/1.1", 400),
        ("CONNECT 127.0.0.1:443 HTTP/1.1", 405),
        ("CONNECT proxy.test:80 HTTP/1.1", 405),
    ] {
        let response = raw_exchange(addr, &raw(request_line)).await;
        assert_eq!(response.status, status, "{request_line}: {}", response.head);
        assert!(
            upstream.received().is_empty(),
            "{request_line} was forwarded: {:?}",
            upstream.received()
        );
        if status == 400 {
            let body: serde_json::Value = serde_json::from_slice(&response.body)
                .unwrap_or_else(|_| panic!("{request_line}: {:?}", response.body));
            assert_eq!(body["error"], "bad_request", "{request_line}");
        }
    }

    // Inside the base path: normalised, then signed and forwarded; the
    // query is left as it is.
    for (request_line, forwarded, signed_path) in [
        ("GET /a/./b/../c?q=../x HTTP/1.1", "/api/a/c?q=../x", "/a/c"),
        ("GET /docs/.. HTTP/1.1", "/api/", "/"),
        ("GET /a/%2e/b/%2E%2E/c/ HTTP/1.1", "/api/a/c/", "/a/c/"),
        ("GET /plain/path HTTP/1.1", "/api/plain/path", "/plain/path"),
    ] {
        let before = upstream.received().len();
        let response = raw_exchange(addr, &raw(request_line)).await;
        assert_eq!(response.status, 201, "{request_line}: {}", response.head);
        let received = upstream.received();
        assert_eq!(received.len(), before + 1, "{request_line}");
        let got = &received[before];
        assert_eq!(got.uri, forwarded, "{request_line}");
        let token = got.bearer().expect("a token");
        let claims = verify_against(&token, &jwks(addr).await).unwrap().claims;
        assert_eq!(claims["path"], signed_path, "{request_line}");
    }
}

/// tower-http's `TraceLayer`: one line per request on stderr, with the
/// request's headers, and never a token: the client's `Authorization` and
/// `Cookie` are marked sensitive (`SetSensitiveRequestHeadersLayer`), and
/// the signer's token is written after the line's span is made.
#[tokio::test]
async fn one_trace_line_per_request_and_no_token_in_it() {
    let upstream = Upstream::start().await;
    let (proxy, addr) = proxy(&["--upstream", &upstream.url()]).await;
    for i in 0..3 {
        let request = request(Method::GET, format!("http://{addr}/traced/{i}"))
            .header("authorization", "Bearer client-secret-token")
            .header("cookie", "session=cookie-secret-value")
            .header("x-visible", "shown")
            .body(Full::default())
            .unwrap();
        let (parts, _) = fetch(request).await;
        assert_eq!(parts.status, StatusCode::CREATED);
    }
    let is_trace = |l: &str| l.contains("finished processing request");
    proxy
        .line_async("the third trace line", |l| {
            is_trace(l) && l.contains("/traced/2")
        })
        .await;
    for i in 0..3 {
        let path = format!("uri=/traced/{i} ");
        assert_eq!(
            proxy.count(|l| is_trace(l) && l.contains(&path)),
            1,
            "{}",
            proxy.transcript()
        );
    }
    assert_eq!(proxy.count(is_trace), 3, "{}", proxy.transcript());
    let transcript = proxy.transcript();
    assert!(
        transcript.contains("x-visible\": \"shown\""),
        "{transcript}"
    );
    assert!(transcript.contains("status=201"), "{transcript}");
    for secret in ["client-secret-token", "cookie-secret-value"] {
        assert!(!transcript.contains(secret), "{secret}: {transcript}");
    }
    for token in upstream.tokens() {
        let signature = token.rsplit('.').next().unwrap();
        assert!(!transcript.contains(signature), "{transcript}");
    }
    assert!(!transcript.contains("Bearer ey"), "{transcript}");
}

#[tokio::test]
async fn a_slow_upstream_is_answered_504() {
    let upstream = crate::support::upstream::SlowUpstream::start().await;
    let (_proxy, addr) = proxy(&["--upstream", &upstream.url(), "--timeout", "1"]).await;
    let (status, body) = get(addr, "/slow").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"], "gateway_timeout");
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_and_not_forwarded() {
    let upstream = Upstream::start().await;
    let (_proxy, addr) = proxy(&["--upstream", &upstream.url(), "--max-body", "64"]).await;
    let post = |len: usize| {
        request(Method::POST, format!("http://{addr}/upload"))
            .body(Full::new(Bytes::from(vec![b'x'; len])))
            .unwrap()
    };
    let (parts, _) = fetch(post(65)).await;
    assert_eq!(parts.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(upstream.received().is_empty(), "{:?}", upstream.received());
    let (parts, _) = fetch(post(64)).await;
    assert_eq!(parts.status, StatusCode::CREATED);
    assert_eq!(upstream.received().len(), 1);
    assert_eq!(upstream.received()[0].body.len(), 64);
}

/// SIGTERM with a request in flight: the proxy stops accepting
/// connections, the request finishes (the upstream answers after the
/// signal), then the process exits 0.
#[cfg(unix)]
#[tokio::test]
async fn sigterm_lets_requests_in_flight_finish() {
    let upstream = crate::support::upstream::SlowUpstream::start().await;
    let (proxy, addr) = proxy(&["--upstream", &upstream.url()]).await;
    let in_flight = tokio::spawn(fetch(
        request(Method::GET, format!("http://{addr}/in-flight"))
            .body(Full::default())
            .unwrap(),
    ));
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        upstream.arrived.notified(),
    )
    .await
    .expect("the request reached the upstream");
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &proxy.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // It stops accepting: a new connection is refused (bounded wait).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still accepting; {}",
            proxy.transcript()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(!in_flight.is_finished(), "answered before the upstream did");
    upstream.release.notify_one();
    let (parts, body) = in_flight.await.unwrap();
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(&body[..], b"slow done");
    let finished = tokio::task::spawn_blocking(move || proxy.wait(LIMIT))
        .await
        .unwrap();
    assert_eq!(finished.code(), Some(0), "{finished:?}");
    assert!(
        finished
            .stderr
            .contains("stopped: every request in flight was answered"),
        "{}",
        finished.stderr
    );
}

/// `--trust-forwarded` appends to the client's chain; by default it is
/// replaced.
#[tokio::test]
async fn forwarded_headers_are_replaced_unless_trusted() {
    let upstream = Upstream::start().await;
    let send = |addr: SocketAddr| {
        fetch(
            request(Method::GET, format!("http://{addr}/f"))
                .header("x-forwarded-for", "198.51.100.4")
                .body(Full::default())
                .unwrap(),
        )
    };
    let (_proxy, addr) = proxy(&["--upstream", &upstream.url()]).await;
    send(addr).await;
    let (_trusting, trusting_addr) =
        proxy(&["--upstream", &upstream.url(), "--trust-forwarded"]).await;
    send(trusting_addr).await;
    let received = upstream.received();
    assert_eq!(received[0].headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(
        received[1].headers["x-forwarded-for"],
        "198.51.100.4, 127.0.0.1"
    );
    assert_eq!(
        received[0].headers["forwarded"],
        format!("for=127.0.0.1;host=\"{addr}\"")
    );
}

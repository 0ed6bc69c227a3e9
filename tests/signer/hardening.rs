//! Issue 16, the signer's findings, end to end over a real socket on
//! 127.0.0.1: raw HTTP/1.1 requests as an attacker writes them, parsed by
//! hyper (axum), through `JwtSignerLayer`, to a handler that reports what
//! it received. The unit tests in `src/signer` cover each case in detail.

use std::net::SocketAddr;

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower_jwt_signer::signer::{ClaimsRejection, ExistingToken, RequestClaims};
use tower_jwt_signer::{Algorithm, JwtSignerLayer, KeyRegistry};

/// What the backend saw: the claims of the token in `header` (or its raw
/// values when they are not our JWT), every header name, and the
/// `Connection` lines.
fn report(headers: &HeaderMap, header: &str) -> Value {
    let values: Vec<String> = headers
        .get_all(header)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let claims = values.first().and_then(|value| {
        let token = value.strip_prefix("Bearer ").unwrap_or(value);
        let payload = token.split('.').nth(1)?;
        serde_json::from_slice::<Value>(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
    });
    json!({
        "values": values,
        "claims": claims,
        "names": headers.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
        "connection": headers
            .get_all("connection")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect::<Vec<_>>(),
    })
}

/// Serves `signer` in front of the reporting handler.
async fn serve(signer: JwtSignerLayer, header: &'static str) -> SocketAddr {
    let app = Router::new()
        .route(
            "/",
            get(move |headers: HeaderMap| async move { axum::Json(report(&headers, header)) }),
        )
        .layer(signer);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Writes `request` as it is and returns the status and the body.
async fn send(addr: SocketAddr, request: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8(response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1;
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn registry() -> KeyRegistry {
    KeyRegistry::generate(Algorithm::ES256).unwrap()
}

#[tokio::test]
async fn an_absolute_form_request_never_puts_its_password_in_a_claim() {
    let signer = JwtSignerLayer::builder(registry())
        .template_claim("host", "${req.host}")
        .build()
        .unwrap();
    let addr = serve(signer, "authorization").await;
    let (status, seen) = send(
        addr,
        "GET http://user:secret@evil.example/ HTTP/1.1\r\nHost: gw.local\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["claims"]["host"], "evil.example", "{seen}");
}

#[tokio::test]
async fn connection_cannot_name_the_token_away() {
    let addr = serve(JwtSignerLayer::new(registry()), "authorization").await;
    let (status, seen) = send(
        addr,
        "GET / HTTP/1.1\r\nHost: gw.local\r\nConnection: close, Authorization\r\nconnection: te\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["connection"], json!(["close", "te"]), "{seen}");
    assert!(seen["claims"]["jti"].is_string(), "{seen}");
}

#[tokio::test]
async fn a_look_alike_header_never_reaches_the_backend() {
    let signer = JwtSignerLayer::builder(registry())
        .header_name("X-JWT-Token")
        .without_scheme()
        .build()
        .unwrap();
    let addr = serve(signer, "x-jwt-token").await;
    let (status, seen) = send(
        addr,
        "GET / HTTP/1.1\r\nHost: gw.local\r\nX_JWT_Token: forged\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{seen}");
    let names: Vec<&str> = seen["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(names.contains(&"x-jwt-token"), "{seen}");
    assert!(!names.contains(&"x_jwt_token"), "{seen}");
    assert!(seen["claims"]["jti"].is_string(), "{seen}");
}

#[tokio::test]
async fn keep_cannot_skip_the_claims_closure() {
    let signer = JwtSignerLayer::builder(registry())
        .existing_token(ExistingToken::Keep)
        .request_claims(|parts| match parts.headers.get("x-user") {
            Some(user) => Ok(RequestClaims::new().subject(user.to_str().unwrap_or_default())),
            None => Err(ClaimsRejection::unauthorized("not signed in")),
        })
        .build()
        .unwrap();
    let addr = serve(signer, "authorization").await;
    let (status, seen) = send(
        addr,
        "GET / HTTP/1.1\r\nHost: gw.local\r\nAuthorization: Bearer forged\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 401, "{seen}");
    assert_eq!(seen["error"], "unauthorized", "{seen}");
}

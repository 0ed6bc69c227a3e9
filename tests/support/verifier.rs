//! Helpers for the verifier tests: tokens, a counting JWKS server with
//! switchable failure modes, a backend behind `JwtVerifierLayer`, and a
//! small HTTP client. Everything listens on 127.0.0.1 and is stopped when
//! its handle is dropped.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Extension;
use axum::response::IntoResponse;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::task::{JoinHandle, JoinSet};
use tower::ServiceExt;
use tower_jwt_signer::{
    JWKS_PATH, JwksService, JwtVerifierLayer, SigningKey, VerifiedClaims, Verifier,
};

use super::jose::b64;

/// Seconds since the epoch, now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims a gateway would send: valid for ten minutes.
pub fn claims() -> Value {
    json!({"sub": "alice", "iss": "gateway", "aud": "api", "iat": now(), "exp": now() + 600})
}

/// A compact JWS with any header, signed by `key`.
pub fn sign_with_header(key: &SigningKey, header: &Value, claims: &Value) -> String {
    let mut input = b64(serde_json::to_vec(header).unwrap());
    input.push('.');
    input.push_str(&b64(serde_json::to_vec(claims).unwrap()));
    let signature = key.sign(input.as_bytes()).unwrap();
    format!("{input}.{}", b64(signature))
}

/// The usual header `{alg, typ, kid}` of `key`.
pub fn header_of(key: &SigningKey) -> Value {
    json!({"alg": key.algorithm().as_str(), "typ": "JWT", "kid": key.kid().as_str()})
}

/// What the test JWKS server answers.
#[derive(Clone)]
pub enum Mode {
    /// The real `JwksService` (ETag, Cache-Control, 304).
    Jwks(JwksService),
    /// An empty response with this status.
    Status(u16),
    /// 200 with this body and optional `Cache-Control`.
    Body {
        body: Bytes,
        cache_control: Option<&'static str>,
    },
    /// 302 to the same URL.
    Redirect,
    /// Never answers.
    Hang,
    /// 200 with this body sent in chunks, without `Content-Length`.
    Chunked(Bytes),
    /// The real `JwksService`, but only once the receiver reads `true`.
    Held(JwksService, tokio::sync::watch::Receiver<bool>),
}

/// One request the JWKS server saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub if_none_match: Option<String>,
    pub status: Option<u16>,
}

/// A JWKS server on 127.0.0.1 that counts and records requests.
pub struct JwksServer {
    pub addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl JwksServer {
    pub async fn start(mode: Mode) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(Mutex::new(mode));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (task_mode, task_seen) = (mode.clone(), seen.clone());
        let task = tokio::spawn(async move {
            // Dropping the set (when the task is aborted) aborts every
            // connection.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (mode, seen) = (task_mode.clone(), task_seen.clone());
                let service = hyper::service::service_fn(move |request: Request<_>| {
                    let (mode, seen) = (mode.clone(), seen.clone());
                    async move { Ok::<_, Infallible>(answer(request, &mode, &seen).await) }
                });
                connections.spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        JwksServer {
            addr,
            mode,
            seen,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}{JWKS_PATH}", self.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// How many requests arrived.
    pub fn hits(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

type Body = UnsyncBoxBody<Bytes, Infallible>;

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).boxed_unsync()
}

async fn answer(
    request: Request<hyper::body::Incoming>,
    mode: &Mutex<Mode>,
    seen: &Mutex<Vec<Seen>>,
) -> Response<Body> {
    let index = {
        let mut seen = seen.lock().unwrap();
        seen.push(Seen {
            path: request.uri().path().to_owned(),
            if_none_match: request
                .headers()
                .get(header::IF_NONE_MATCH)
                .map(|v| v.to_str().unwrap().to_owned()),
            status: None,
        });
        seen.len() - 1
    };
    let mode = mode.lock().unwrap().clone();
    let response = match mode {
        Mode::Jwks(service) => {
            let (parts, _) = request.into_parts();
            service
                .oneshot(Request::from_parts(parts, ()))
                .await
                .unwrap()
                .map(BodyExt::boxed_unsync)
        }
        Mode::Held(service, mut release) => {
            release.wait_for(|go| *go).await.unwrap();
            let (parts, _) = request.into_parts();
            service
                .oneshot(Request::from_parts(parts, ()))
                .await
                .unwrap()
                .map(BodyExt::boxed_unsync)
        }
        Mode::Chunked(body) => {
            let chunks: Vec<Result<hyper::body::Frame<Bytes>, Infallible>> = body
                .chunks(16 * 1024)
                .map(|c| Ok(hyper::body::Frame::data(Bytes::copy_from_slice(c))))
                .collect();
            Response::new(StreamBody::new(futures_util::stream::iter(chunks)).boxed_unsync())
        }
        Mode::Status(status) => {
            let mut response = Response::new(full(Bytes::new()));
            *response.status_mut() = StatusCode::from_u16(status).unwrap();
            response
        }
        Mode::Body {
            body,
            cache_control,
        } => {
            let mut response = Response::new(full(body));
            if let Some(value) = cache_control {
                response
                    .headers_mut()
                    .insert(header::CACHE_CONTROL, value.parse().unwrap());
            }
            response
        }
        Mode::Redirect => {
            let mut response = Response::new(full(Bytes::new()));
            *response.status_mut() = StatusCode::FOUND;
            response
                .headers_mut()
                .insert(header::LOCATION, JWKS_PATH.parse().unwrap());
            response
        }
        Mode::Hang => std::future::pending().await,
    };
    seen.lock().unwrap()[index].status = Some(response.status().as_u16());
    response
}

/// A backend on 127.0.0.1 behind the verifier layer: answers every path
/// with the verified claims as JSON, and counts the calls that reach it.
pub struct Backend {
    pub addr: SocketAddr,
    calls: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    pub async fn start(verifier: Verifier) -> Self {
        Self::with_layer(JwtVerifierLayer::new(verifier)).await
    }

    pub async fn with_layer(layer: JwtVerifierLayer) -> Self {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let app = axum::Router::new()
            .fallback(move |Extension(claims): Extension<VerifiedClaims>| {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    axum::Json(claims).into_response()
                }
            })
            .layer(layer);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Backend { addr, calls, task }
    }

    /// How many requests reached the handler.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    pub fn challenge(&self) -> Option<&str> {
        self.headers
            .get(header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap())
    }
}

/// `GET http://addr/path` with these headers, bounded to 10 s.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut request = Request::get(format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        client.request(request.body(Empty::new()).unwrap()),
    )
    .await
    .expect("answered in time")
    .expect("HTTP works");
    let (parts, body) = response.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// `GET /` with `Authorization: Bearer <token>`.
pub async fn get_bearer(addr: SocketAddr, token: &str) -> Reply {
    get(addr, "/", &[("authorization", &format!("Bearer {token}"))]).await
}

/// Waits (up to 10 s, polling every 5 ms) until `condition` holds.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let wait = async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for: {what}"));
}

/// Runs `future` with a 30 s bound.
pub async fn bounded<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), future)
        .await
        .expect("test finished in time")
}

/// Moves tokio's clock forward by `by` while the rest of the test runs in
/// real time (the runtime must be current-thread).
pub async fn advance(by: Duration) {
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
}

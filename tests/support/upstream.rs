//! A recording upstream for the proxy tests, and a raw HTTP/1.1 exchange
//! for requests a client library would not send as written (`OPTIONS *`,
//! `CONNECT`, dot-segments). Everything on 127.0.0.1.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use super::signer::AbortOnDrop;

/// A request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: Method,
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    /// The token of its `Authorization: Bearer` header, if any.
    pub fn bearer(&self) -> Option<String> {
        let value = self.headers.get(http::header::AUTHORIZATION)?;
        Some(value.to_str().ok()?.strip_prefix("Bearer ")?.to_owned())
    }
}

/// An upstream that records every request and answers 201 with the body
/// `from upstream`, a custom header and a hop-by-hop header.
pub struct Upstream {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<Received>>>,
    _task: AbortOnDrop,
}

impl Upstream {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log: Arc<Mutex<Vec<Received>>> = Arc::default();
        let seen = Arc::clone(&log);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
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
        Upstream {
            addr,
            log,
            _task: AbortOnDrop(task),
        }
    }

    /// `http://ADDR`, for `--upstream`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }

    /// The bearer tokens of the requests received so far.
    pub fn tokens(&self) -> Vec<String> {
        self.received()
            .iter()
            .map(|request| request.bearer().expect("a bearer token"))
            .collect()
    }
}

/// A response read off the wire.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// The status line and headers.
    pub head: String,
    pub body: Vec<u8>,
}

/// Writes `request` (a whole HTTP/1.1 request; it should ask for
/// `Connection: close`) to `addr` and reads the answer until the server
/// closes the connection (bounded to 10 s).
pub async fn raw_exchange(addr: SocketAddr, request: &str) -> RawResponse {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).await.unwrap();
        bytes
    };
    let bytes = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("answered and closed in time");
    let split = bytes
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {:?}", String::from_utf8_lossy(&bytes)));
    let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    RawResponse {
        status,
        head,
        body: bytes[split + 4..].to_vec(),
    }
}

/// An upstream that holds every answer back: each request is announced on
/// `arrived`, then answered `200 slow done` once `release` is notified
/// (never, if it is not).
pub struct SlowUpstream {
    pub addr: SocketAddr,
    pub arrived: Arc<tokio::sync::Notify>,
    pub release: Arc<tokio::sync::Notify>,
    _task: AbortOnDrop,
}

impl SlowUpstream {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let arrived = Arc::new(tokio::sync::Notify::new());
        let release = Arc::new(tokio::sync::Notify::new());
        let (arrived_in, release_in) = (Arc::clone(&arrived), Arc::clone(&release));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (arrived, release) = (Arc::clone(&arrived_in), Arc::clone(&release_in));
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_: Request<Incoming>| {
                        let (arrived, release) = (Arc::clone(&arrived), Arc::clone(&release));
                        async move {
                            arrived.notify_one();
                            release.notified().await;
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                                b"slow done",
                            ))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        SlowUpstream {
            addr,
            arrived,
            release,
            _task: AbortOnDrop(task),
        }
    }

    /// `http://ADDR`, for `--upstream`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

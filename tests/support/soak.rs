//! The harness of the soak and fault tests, over real sockets on 127.0.0.1,
//! around the signing gateway of [`super::chain`]:
//!
//! * [`Backend`]: a backend behind `JwtVerifierLayer` (over a `RemoteJwks`)
//!   with an outer layer that looks at every request as it **arrives** and
//!   audits its token independently of the crate ([`Audit`]: jsonwebtoken,
//!   against every key the gateway has published). Arrivals without a token
//!   or with a token the gateway did not sign are counted and must stay 0;
//!   refusals by the verifier are counted by reason.
//! * [`JwksServer`]: the gateway's JWKS on a listener of its own, counted,
//!   that can be stopped and restarted on the same port.
//! * [`Load`]: clients sending requests through the gateway until stopped,
//!   counting the answers by status and by the kid that signed them. It can
//!   be held (requests in flight finish, no new one starts), around a clock
//!   jump for example.
//! * [`KidLog`]: every kid a registry ever published, and when.
//! * Key directories: [`stored_keys`] (every key file parses),
//!   [`key_files`], [`temp_files`]. The faults that make their writes fail
//!   for real are in [`super::disk`].

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Extension;
use axum::extract::Request as AxumRequest;
use axum::middleware::Next;
use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{OwnedRwLockWriteGuard, RwLock};
use tokio::task::{JoinHandle, JoinSet};
use tower::ServiceExt as _;
use tower_jwt_signer::store::{KeyStore, StoredKey};
use tower_jwt_signer::{
    DirKeyStore, JwksService, JwtVerifierLayer, KeyRegistry, VerifiedClaims, Verifier, VerifyError,
};

use super::chain::{AUDIENCE, ISSUER};
use super::signer::AbortOnDrop;

/// Polls `condition` every 10 ms until it holds; panics after `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let wait = async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(limit, wait)
        .await
        .unwrap_or_else(|_| panic!("timed out after {limit:?} waiting for: {what}"));
}

/// Checks tokens the way a backend that trusts nothing of ours would: with
/// jsonwebtoken, against the public keys the gateway's registry publishes
/// (or has published: keys are remembered), the algorithm taken from the
/// key, the issuer and audience of the chain. Dates are not checked (the
/// backend's verifier does; a fault test may move the clock).
#[derive(Clone)]
pub struct Audit {
    registry: KeyRegistry,
    keys: Arc<Mutex<HashMap<String, AuditKey>>>,
}

#[derive(Clone)]
struct AuditKey {
    key: jsonwebtoken::DecodingKey,
    alg: jsonwebtoken::Algorithm,
}

impl Audit {
    pub fn new(registry: KeyRegistry) -> Self {
        let audit = Audit {
            registry,
            keys: Arc::default(),
        };
        audit.learn();
        audit
    }

    /// Remembers every key the registry publishes now.
    fn learn(&self) {
        let snapshot = self.registry.current();
        let mut keys = self.keys.lock().unwrap();
        for published in snapshot.keys() {
            let kid = published.kid().as_str();
            if keys.contains_key(kid) {
                continue;
            }
            let jwk: jsonwebtoken::jwk::Jwk =
                serde_json::from_value(published.public_jwk().to_value()).unwrap();
            let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
            let alg = published.algorithm().as_str().parse().unwrap();
            keys.insert(kid.to_owned(), AuditKey { key, alg });
        }
    }

    fn key(&self, kid: &str) -> Option<AuditKey> {
        if let Some(key) = self.keys.lock().unwrap().get(kid) {
            return Some(key.clone());
        }
        self.learn();
        self.keys.lock().unwrap().get(kid).cloned()
    }

    /// `Ok` when `token` was signed by one of the gateway's keys, with that
    /// key's algorithm, for this chain's issuer and audience.
    pub fn check(&self, token: &str) -> Result<(), String> {
        let header = jsonwebtoken::decode_header(token).map_err(|err| err.to_string())?;
        let kid = header.kid.ok_or("no kid")?;
        let key = self
            .key(&kid)
            .ok_or_else(|| format!("kid {kid} was never published by the gateway"))?;
        if header.alg != key.alg {
            return Err(format!("alg {:?} is not the key's", header.alg));
        }
        let mut validation = jsonwebtoken::Validation::new(key.alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.set_required_spec_claims(&["iss", "aud"]);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        jsonwebtoken::decode::<serde_json::Value>(token, &key.key, &validation)
            .map(|_| ())
            .map_err(|err| err.to_string())
    }
}

/// What the backend saw.
#[derive(Default)]
pub struct BackendStats {
    /// Requests that arrived.
    pub arrivals: AtomicU64,
    /// Requests that passed the verifier and reached the handler.
    pub verified: AtomicU64,
    /// Arrivals without a token.
    pub unsigned: AtomicU64,
    /// Arrivals whose token the gateway did not sign (by the [`Audit`]).
    pub forged: AtomicU64,
    refused: Mutex<BTreeMap<String, u64>>,
    forged_reasons: Mutex<Vec<String>>,
}

impl BackendStats {
    /// Refusals by the verifier, by status and reason.
    pub fn refused(&self) -> BTreeMap<String, u64> {
        self.refused.lock().unwrap().clone()
    }

    pub fn refused_total(&self) -> u64 {
        self.refused.lock().unwrap().values().sum()
    }

    /// Arrivals without a token or with a token the gateway did not sign:
    /// must be 0 in every test.
    pub fn bad_arrivals(&self) -> u64 {
        self.unsigned.load(Ordering::SeqCst) + self.forged.load(Ordering::SeqCst)
    }

    pub fn summary(&self) -> String {
        format!(
            "arrivals {}, verified {}, refused {:?}, unsigned {}, forged {} {:?}",
            self.arrivals.load(Ordering::SeqCst),
            self.verified.load(Ordering::SeqCst),
            self.refused(),
            self.unsigned.load(Ordering::SeqCst),
            self.forged.load(Ordering::SeqCst),
            self.forged_reasons.lock().unwrap(),
        )
    }
}

/// The variant name of a refusal (`UnknownKid`, `Expired`, ...).
fn reason(err: &VerifyError) -> String {
    let debug = format!("{err:?}");
    debug
        .split(['(', ' ', '{'])
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// A backend: an arrivals audit, then `JwtVerifierLayer`, then a handler
/// that answers 200 with the kid of the verified token.
pub struct Backend {
    pub addr: SocketAddr,
    pub stats: Arc<BackendStats>,
    _task: AbortOnDrop,
}

impl Backend {
    pub async fn start(verifier: Verifier, audit: Audit) -> Self {
        let stats = Arc::new(BackendStats::default());
        let handler_stats = Arc::clone(&stats);
        let arrival_stats = Arc::clone(&stats);
        let app = axum::Router::new()
            .fallback(move |Extension(claims): Extension<VerifiedClaims>| {
                let stats = Arc::clone(&handler_stats);
                async move {
                    stats.verified.fetch_add(1, Ordering::SeqCst);
                    claims.kid().unwrap_or_default().to_owned()
                }
            })
            .layer(JwtVerifierLayer::new(verifier))
            .layer(axum::middleware::from_fn(
                move |request: AxumRequest, next: Next| {
                    let stats = Arc::clone(&arrival_stats);
                    let audit = audit.clone();
                    async move {
                        stats.arrivals.fetch_add(1, Ordering::SeqCst);
                        let token = request
                            .headers()
                            .get(header::AUTHORIZATION)
                            .and_then(|value| value.to_str().ok())
                            .and_then(|value| value.strip_prefix("Bearer "))
                            .map(str::to_owned);
                        match token {
                            None => {
                                stats.unsigned.fetch_add(1, Ordering::SeqCst);
                            }
                            Some(token) => {
                                if let Err(err) = audit.check(&token) {
                                    stats.forged.fetch_add(1, Ordering::SeqCst);
                                    let mut reasons = stats.forged_reasons.lock().unwrap();
                                    if reasons.len() < 5 {
                                        reasons.push(err);
                                    }
                                }
                            }
                        }
                        let response = next.run(request).await;
                        if let Some(err) = response.extensions().get::<VerifyError>() {
                            *stats
                                .refused
                                .lock()
                                .unwrap()
                                .entry(format!("{} {}", response.status().as_u16(), reason(err)))
                                .or_default() += 1;
                        }
                        response
                    }
                },
            ));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Backend {
            addr,
            stats,
            _task: AbortOnDrop(task),
        }
    }
}

/// Binds `addr` with `SO_REUSEADDR`, so that a server can come back on the
/// port it had.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// A registry's JWKS (`JwksService`) on its own listener, counting the
/// requests; stopping it closes the listener and every open connection.
pub struct JwksServer {
    pub addr: SocketAddr,
    service: JwksService,
    fetches: Arc<AtomicUsize>,
    task: Option<JoinHandle<()>>,
}

impl JwksServer {
    pub async fn start(registry: &KeyRegistry) -> Self {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut server = JwksServer {
            addr: listener.local_addr().unwrap(),
            service: JwksService::new(registry.clone()),
            fetches: Arc::default(),
            task: None,
        };
        server.serve(listener);
        server
    }

    fn serve(&mut self, listener: TcpListener) {
        let service = self.service.clone();
        let fetches = Arc::clone(&self.fetches);
        self.task = Some(tokio::spawn(async move {
            // Dropping the set (when the task is aborted) aborts every
            // connection: a stopped server keeps no connection open.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let service = service.clone();
                let fetches = Arc::clone(&fetches);
                let handler = hyper::service::service_fn(move |request: Request<_>| {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    let (parts, _) = request.into_parts();
                    service.clone().oneshot(Request::from_parts(parts, ()))
                });
                connections.spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), handler)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        }));
    }

    pub fn url(&self) -> String {
        format!("http://{}{}", self.addr, tower_jwt_signer::JWKS_PATH)
    }

    /// How many requests it has answered (over every run).
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    /// Stops listening and drops every connection.
    pub async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&mut self) {
        assert!(self.task.is_none(), "stop the server first");
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match bind(self.addr) {
                Ok(listener) => break listener,
                Err(err) if Instant::now() < deadline => {
                    eprintln!("rebinding {}: {err}; retrying", self.addr);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(err) => panic!("cannot listen on {} again: {err}", self.addr),
            }
        };
        self.serve(listener);
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// What the clients saw.
#[derive(Default)]
pub struct LoadStats {
    /// Requests sent.
    pub sent: AtomicU64,
    /// Answers 200.
    pub ok: AtomicU64,
    /// Answers 4xx.
    pub client_errors: AtomicU64,
    /// Answers 5xx.
    pub server_errors: AtomicU64,
    /// No answer (connection error or 10 s timeout).
    pub transport_errors: AtomicU64,
    statuses: Mutex<BTreeMap<u16, u64>>,
    ok_by_kid: Mutex<BTreeMap<String, u64>>,
    errors: Mutex<Vec<String>>,
}

impl LoadStats {
    pub fn ok(&self) -> u64 {
        self.ok.load(Ordering::SeqCst)
    }

    /// 200 answers whose token was signed by `kid`.
    pub fn ok_with(&self, kid: &str) -> u64 {
        self.ok_by_kid
            .lock()
            .unwrap()
            .get(kid)
            .copied()
            .unwrap_or(0)
    }

    /// The kids that signed answered requests, with their counts.
    pub fn ok_by_kid(&self) -> BTreeMap<String, u64> {
        self.ok_by_kid.lock().unwrap().clone()
    }

    pub fn statuses(&self) -> BTreeMap<u16, u64> {
        self.statuses.lock().unwrap().clone()
    }

    /// Requests not answered 200.
    pub fn failures(&self) -> u64 {
        self.client_errors.load(Ordering::SeqCst)
            + self.server_errors.load(Ordering::SeqCst)
            + self.transport_errors.load(Ordering::SeqCst)
    }

    pub fn summary(&self) -> String {
        format!(
            "sent {}, ok {}, 4xx {}, 5xx {}, transport errors {} {:?}, statuses {:?}, kids {}",
            self.sent.load(Ordering::SeqCst),
            self.ok(),
            self.client_errors.load(Ordering::SeqCst),
            self.server_errors.load(Ordering::SeqCst),
            self.transport_errors.load(Ordering::SeqCst),
            self.errors.lock().unwrap(),
            self.statuses(),
            self.ok_by_kid.lock().unwrap().len(),
        )
    }

    fn record(&self, status: StatusCode, body: &Bytes) {
        *self
            .statuses
            .lock()
            .unwrap()
            .entry(status.as_u16())
            .or_default() += 1;
        if status == StatusCode::OK {
            self.ok.fetch_add(1, Ordering::SeqCst);
            let kid = String::from_utf8_lossy(body).into_owned();
            *self.ok_by_kid.lock().unwrap().entry(kid).or_default() += 1;
        } else if status.is_client_error() {
            self.client_errors.fetch_add(1, Ordering::SeqCst);
        } else if status.is_server_error() {
            self.server_errors.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn record_error(&self, error: String) {
        self.transport_errors.fetch_add(1, Ordering::SeqCst);
        let mut errors = self.errors.lock().unwrap();
        if errors.len() < 5 {
            errors.push(error);
        }
    }
}

/// Clients sending `GET /soak/<client>/<n>` with `x-user: client-<client>`
/// to a gateway, one request at a time each, until stopped.
pub struct Load {
    stats: Arc<LoadStats>,
    stop: Arc<AtomicBool>,
    gate: Arc<RwLock<()>>,
    tasks: JoinSet<()>,
}

impl Load {
    pub fn start(gateway: SocketAddr, clients: usize) -> Self {
        let stats = Arc::new(LoadStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let gate = Arc::new(RwLock::new(()));
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let mut tasks = JoinSet::new();
        for id in 0..clients {
            let (stats, stop, gate, client) = (
                Arc::clone(&stats),
                Arc::clone(&stop),
                Arc::clone(&gate),
                client.clone(),
            );
            tasks.spawn(async move {
                let user = format!("client-{id}");
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let _pass = gate.read().await;
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    n += 1;
                    let request = Request::get(format!("http://{gateway}/soak/{id}/{n}"))
                        .header("x-user", &user)
                        .body(Empty::new())
                        .unwrap();
                    stats.sent.fetch_add(1, Ordering::SeqCst);
                    let exchange = async {
                        let response = client.request(request).await.map_err(|e| e.to_string())?;
                        let (parts, body) = response.into_parts();
                        let body = body.collect().await.map_err(|e| e.to_string())?;
                        Ok::<_, String>((parts.status, body.to_bytes()))
                    };
                    match tokio::time::timeout(Duration::from_secs(10), exchange).await {
                        Ok(Ok((status, body))) => stats.record(status, &body),
                        Ok(Err(err)) => stats.record_error(err),
                        Err(_) => stats.record_error("no answer within 10 s".to_owned()),
                    }
                }
            });
        }
        Load {
            stats,
            stop,
            gate,
            tasks,
        }
    }

    pub fn stats(&self) -> &Arc<LoadStats> {
        &self.stats
    }

    /// Holds the clients: returns once the requests in flight have been
    /// answered; no request starts until the guard is dropped.
    pub async fn hold(&self) -> OwnedRwLockWriteGuard<()> {
        Arc::clone(&self.gate).write_owned().await
    }

    /// Stops the clients and waits for the requests in flight.
    pub async fn stop(mut self) -> Arc<LoadStats> {
        self.stop.store(true, Ordering::SeqCst);
        while let Some(done) = self.tasks.join_next().await {
            done.expect("a client task panicked");
        }
        self.stats
    }
}

/// Every kid a registry has published, in order, with the moment it was
/// first seen.
pub struct KidLog {
    seen: Arc<Mutex<Vec<(String, Instant)>>>,
    _task: AbortOnDrop,
}

impl KidLog {
    pub fn start(registry: &KeyRegistry) -> Self {
        let seen: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
        let log = Arc::clone(&seen);
        let mut changes = registry.subscribe();
        let task = tokio::spawn(async move {
            loop {
                let snapshot = changes.borrow_and_update().clone();
                {
                    let mut log = log.lock().unwrap();
                    for key in snapshot.keys() {
                        if !log.iter().any(|(kid, _)| kid == key.kid().as_str()) {
                            log.push((key.kid().as_str().to_owned(), Instant::now()));
                        }
                    }
                }
                if changes.changed().await.is_err() {
                    break;
                }
            }
        });
        KidLog {
            seen,
            _task: AbortOnDrop(task),
        }
    }

    /// How many kids have been published.
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// How many kids were first published at or after `since`.
    pub fn count_since(&self, since: Instant) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, at)| *at >= since)
            .count()
    }
}

/// The kid the registry signs with now.
pub fn active_kid(registry: &KeyRegistry) -> String {
    registry
        .current()
        .active()
        .expect("an active key")
        .kid()
        .as_str()
        .to_owned()
}

/// Every key in `dir`, loaded by a fresh `DirKeyStore`: panics unless every
/// key file parses.
pub fn stored_keys(dir: &Path) -> Vec<StoredKey> {
    let store = DirKeyStore::builder(dir).create(false).open().unwrap();
    store
        .load()
        .unwrap_or_else(|err| panic!("the key files in {} must parse: {err}", dir.display()))
}

/// The kids stored in `dir`, sorted.
pub fn stored_kids(dir: &Path) -> Vec<String> {
    let mut kids: Vec<String> = stored_keys(dir)
        .iter()
        .map(|key| key.kid().as_str().to_owned())
        .collect();
    kids.sort();
    kids
}

/// The kids a registry publishes now, sorted.
pub fn published_kids(registry: &KeyRegistry) -> Vec<String> {
    let mut kids: Vec<String> = registry
        .current()
        .keys()
        .iter()
        .map(|key| key.kid().as_str().to_owned())
        .collect();
    kids.sort();
    kids
}

/// The key files of `dir` (`*.key.json`) and their bytes.
pub fn key_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter_map(|entry| {
            let name = entry.file_name().into_string().unwrap();
            (name.ends_with(".key.json") && !name.starts_with('.'))
                .then(|| (name, std::fs::read(entry.path()).unwrap()))
        })
        .collect()
}

/// Temporary files a write left behind in `dir`.
pub fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with('.') && name.contains(".tmp-"))
        .collect()
}

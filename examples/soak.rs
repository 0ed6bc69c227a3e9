//! A soak run of the whole chain in one process: clients send requests
//! through a signing gateway (`JwtSignerLayer`, keys in a `DirKeyStore`
//! rotated by a `KeyRotator` with prepublish) to a backend that verifies
//! every token (`JwtVerifierLayer` over a `RemoteJwks` fetched from the
//! gateway's `JwksService`), over real sockets on 127.0.0.1. Every
//! `--report-every` seconds it prints the counts (requests, failures, 5xx,
//! refusals, requests that reached the backend without a token, JWKS
//! fetches, keys) and the process's memory (RSS from `/proc/self/status`).
//!
//! ```text
//! cargo run --release --example soak -- --duration 600 --clients 32 --report-every 30
//! ```
//!
//! It exits with status 1 if any request failed or reached the backend
//! unsigned. Run with `--help` for every flag.

#[path = "support/mod.rs"]
mod support;

use std::collections::HashSet;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request as AxumRequest;
use axum::middleware::Next;
use axum::{Extension, Router};
use bytes::Bytes;
use clap::Parser;
use clap::builder::BoolishValueParser;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tower::ServiceBuilder;
use tower_jwt_signer::signer::TokenReuse;
use tower_jwt_signer::{
    Algorithm, DirKeyStore, Forwarder, JWKS_PATH, JwksService, JwtSignerLayer, JwtVerifierLayer,
    KeyRegistry, KeyRotator, RemoteJwks, RotationPolicy, VerifiedClaims, Verifier,
};

const ABOUT: &str = "\
soak: a signing gateway, a verifying backend and N clients in one process, under
load, with key rotation; prints counts and memory over time

The backend caches the JWKS for half the rotation period and refetches at
most that often for an unknown kid, so it knows each key before it signs.
Columns: requests sent, requests per second since the last line, failures
(answers other than 200, and no answer), 5xx, requests the backend's verifier
refused, requests that reached the backend without a token, JWKS fetches, keys
published since the start and now, RSS and peak RSS in KiB. Exit status 1 if
any request failed, was refused or reached the backend unsigned.";

/// The `iss` the gateway writes and the backend requires.
const ISSUER: &str = "soak-gateway";
/// The `aud` the gateway writes and the backend requires.
const AUDIENCE: &str = "soak-backend";
/// The verifier's leeway on `exp` and `nbf`, which the retention covers.
const LEEWAY: Duration = Duration::from_secs(1);

/// The parsed command line.
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(
    name = "soak",
    about = "soak: a signing gateway, a verifying backend and N clients in one process, under load, with key rotation",
    long_about = ABOUT,
    after_help = support::ENV_HELP,
)]
pub(crate) struct Options {
    /// How long the clients send requests, in seconds
    #[arg(long, env = "TJS_DURATION", value_name = "SECS", default_value = "60", value_parser = support::positive_seconds)]
    pub(crate) duration: Duration,
    /// Concurrent clients, one request at a time each
    #[arg(long, env = "TJS_CLIENTS", value_name = "N", default_value = "32", value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) clients: u16,
    /// Print a line every SECS seconds
    #[arg(long, env = "TJS_REPORT_EVERY", value_name = "SECS", default_value = "10", value_parser = support::positive_seconds)]
    pub(crate) report_every: Duration,
    /// Activate a new gateway key every SECS seconds; each is published a
    /// whole period before it signs
    #[arg(long, env = "TJS_ROTATE_EVERY", value_name = "SECS", default_value = "1", value_parser = support::positive_seconds)]
    pub(crate) rotate_every: Duration,
    /// Token lifetime; old keys stay published ttl + 1 s
    #[arg(long, env = "TJS_TTL", value_name = "SECS", default_value = "5", value_parser = support::positive_seconds)]
    pub(crate) ttl: Duration,
    /// The gateway's algorithm: RS256..RS512, PS256..PS512, ES256, ES384, ES512, EdDSA
    #[arg(long, env = "TJS_ALG", value_name = "ALG", default_value = "ES256")]
    pub(crate) alg: Algorithm,
    /// Keep the gateway's keys in DIR [default: a temporary directory]
    #[arg(long, env = "TJS_KEY_DIR", value_name = "DIR")]
    pub(crate) key_dir: Option<PathBuf>,
    /// Let the gateway reuse tokens (TokenReuse): each client's claims are
    /// the same from one request to the next
    #[arg(long, env = "TJS_REUSE", value_parser = BoolishValueParser::new())]
    pub(crate) reuse: bool,
}

/// Counters shared by the clients, the gateway, the backend and the
/// reporter.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Requests the clients sent.
    pub(crate) sent: AtomicU64,
    /// Answers 200.
    pub(crate) ok: AtomicU64,
    /// Answers 5xx.
    pub(crate) server_errors: AtomicU64,
    /// Other answers than 200 and 5xx.
    pub(crate) other_statuses: AtomicU64,
    /// No answer within 10 s, or a connection error.
    pub(crate) transport_errors: AtomicU64,
    /// Requests that reached the backend.
    pub(crate) arrivals: AtomicU64,
    /// Requests that reached the backend without a token.
    pub(crate) unsigned: AtomicU64,
    /// Requests the backend's verifier refused.
    pub(crate) refused: AtomicU64,
    /// Requests of the gateway's JWKS.
    pub(crate) jwks_fetches: AtomicU64,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sample {
    pub(crate) elapsed: Duration,
    pub(crate) requests: u64,
    pub(crate) failures: u64,
    pub(crate) server_errors: u64,
    pub(crate) refused: u64,
    pub(crate) unsigned: u64,
    pub(crate) arrivals: u64,
    pub(crate) jwks_fetches: u64,
    pub(crate) keys_published: usize,
    pub(crate) keys_now: usize,
    pub(crate) rss_kib: Option<u64>,
    pub(crate) peak_rss_kib: Option<u64>,
}

impl Sample {
    /// Nothing failed, nothing was refused, nothing arrived unsigned.
    pub(crate) fn clean(&self) -> bool {
        self.failures == 0 && self.refused == 0 && self.unsigned == 0
    }
}

/// The whole run.
#[derive(Debug)]
pub(crate) struct Report {
    pub(crate) samples: Vec<Sample>,
    pub(crate) last: Sample,
}

/// `VmRSS` and `VmHWM` (peak) of this process, in KiB (Linux only).
pub(crate) fn memory_kib() -> (Option<u64>, Option<u64>) {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return (None, None);
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn fmt_kib(value: Option<u64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// The header of the report's table.
pub(crate) const TABLE_HEADER: &str = "elapsed  requests    req/s  failures  5xx  refused  unsigned  fetches  keys(all/now)   rss_kib  peak_kib";

/// A line of the report's table; `rate` is per second since the last line.
pub(crate) fn table_line(sample: &Sample, rate: f64) -> String {
    format!(
        "{:>6}s  {:>8}  {:>7.0}  {:>8}  {:>3}  {:>7}  {:>8}  {:>7}  {:>13}  {:>8}  {:>8}",
        sample.elapsed.as_secs(),
        sample.requests,
        rate,
        sample.failures,
        sample.server_errors,
        sample.refused,
        sample.unsigned,
        sample.jwks_fetches,
        format!("{}/{}", sample.keys_published, sample.keys_now),
        fmt_kib(sample.rss_kib),
        fmt_kib(sample.peak_rss_kib),
    )
}

/// The gateway: the JWKS at `JWKS_PATH` (counted), everything else signed
/// and forwarded to `backend`.
fn gateway(
    registry: &KeyRegistry,
    ttl: Duration,
    reuse: bool,
    backend: SocketAddr,
    counters: &Arc<Counters>,
) -> Result<Router, Box<dyn std::error::Error>> {
    let signer = JwtSignerLayer::builder(registry.clone())
        .issuer(ISSUER)
        .audience(AUDIENCE)
        .template_claim("sub", "${req.headers.x-user}")
        .ttl(ttl);
    let signer = if reuse {
        signer.reuse_tokens(TokenReuse::new())
    } else {
        signer
    }
    .build()?;
    let forward = ServiceBuilder::new()
        .layer(signer)
        .service(Forwarder::new(format!("http://{backend}"))?);
    let fetches = Arc::clone(counters);
    let jwks = ServiceBuilder::new()
        .map_request(move |request: Request<Body>| {
            fetches.jwks_fetches.fetch_add(1, Ordering::Relaxed);
            request
        })
        .service(JwksService::new(registry.clone()));
    Ok(Router::new()
        .route_service(JWKS_PATH, jwks)
        .fallback_service(forward))
}

/// The backend: counts arrivals (and those without a token), verifies with
/// `JwtVerifierLayer`, counts refusals, and answers 200 with the token's
/// kid.
fn backend(verifier: Verifier, counters: &Arc<Counters>) -> Router {
    let seen = Arc::clone(counters);
    Router::new()
        .fallback(|Extension(claims): Extension<VerifiedClaims>| async move {
            claims.kid().unwrap_or_default().to_owned()
        })
        .layer(JwtVerifierLayer::new(verifier))
        .layer(axum::middleware::from_fn(
            move |request: AxumRequest, next: Next| {
                let counters = Arc::clone(&seen);
                async move {
                    counters.arrivals.fetch_add(1, Ordering::Relaxed);
                    if !request.headers().contains_key(header::AUTHORIZATION) {
                        counters.unsigned.fetch_add(1, Ordering::Relaxed);
                    }
                    let response = next.run(request).await;
                    if response.status() != StatusCode::OK {
                        counters.refused.fetch_add(1, Ordering::Relaxed);
                    }
                    response
                }
            },
        ))
}

/// A client: one request at a time to the gateway until `stop`.
async fn client(id: usize, gateway: SocketAddr, counters: Arc<Counters>, stop: Arc<AtomicBool>) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let user = format!("client-{id}");
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let Ok(request) = Request::get(format!("http://{gateway}/soak/{id}/{n}"))
            .header("x-user", &user)
            .body(Empty::new())
        else {
            unreachable!("a valid request");
        };
        counters.sent.fetch_add(1, Ordering::Relaxed);
        let exchange = async {
            let response = client.request(request).await.ok()?;
            let status = response.status();
            response.into_body().collect().await.ok()?;
            Some(status)
        };
        match tokio::time::timeout(Duration::from_secs(10), exchange).await {
            Ok(Some(StatusCode::OK)) => &counters.ok,
            Ok(Some(status)) if status.is_server_error() => &counters.server_errors,
            Ok(Some(_)) => &counters.other_statuses,
            Ok(None) | Err(_) => &counters.transport_errors,
        }
        .fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts the kids the registry publishes, in constant memory: a kid never
/// comes back once removed, and a key stays published for far longer than
/// it takes to see a change, so every kid missing from the previous
/// snapshot is a new one.
fn count_kids(registry: &KeyRegistry) -> (Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
    let count = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&count);
    let mut changes = registry.subscribe();
    let task = tokio::spawn(async move {
        let mut previous: HashSet<String> = HashSet::new();
        loop {
            let snapshot = changes.borrow_and_update().clone();
            let kids: HashSet<String> = snapshot
                .keys()
                .iter()
                .map(|k| k.kid().to_string())
                .collect();
            let new = kids.difference(&previous).count() as u64;
            counter.fetch_add(new, Ordering::Relaxed);
            previous = kids;
            if changes.changed().await.is_err() {
                break;
            }
        }
    });
    (count, task)
}

/// Runs the soak: starts the chain on free ports of 127.0.0.1, lets the
/// clients send requests for `duration`, calls `report` with a sample every
/// `report_every` (and once at the end), and returns every sample.
pub(crate) async fn run(
    options: &Options,
    mut report: impl FnMut(&Sample, f64),
) -> Result<Report, Box<dyn std::error::Error>> {
    let temporary = match options.key_dir {
        Some(_) => None,
        None => Some(tempfile::tempdir()?),
    };
    let dir = match (&options.key_dir, &temporary) {
        (Some(dir), _) => dir.clone(),
        (None, Some(tmp)) => tmp.path().join("keys"),
        (None, None) => unreachable!("a temporary directory when no --key-dir"),
    };
    let (alg, ttl) = (options.alg, options.ttl);
    let registry = tokio::task::spawn_blocking(move || {
        // --ttl is the registry's token lifetime: the signer signs for it,
        // the rotator keeps old keys published for it plus the leeway.
        KeyRegistry::builder()
            .token_ttl(ttl)
            .store(DirKeyStore::open(&dir)?)
            .generate_if_missing(alg)
            .build()
    })
    .await??;
    let policy = RotationPolicy::builder(options.rotate_every)
        .verifier_leeway(LEEWAY)
        .algorithm(alg)
        .prepublish(options.rotate_every)
        .retry_after(Duration::from_secs(1))
        .build()?;
    let (kids, kid_task) = count_kids(&registry);
    let rotator = KeyRotator::spawn(registry.clone(), policy)?;

    let counters = Arc::new(Counters::default());
    let gateway_listener = TcpListener::bind("127.0.0.1:0").await?;
    let backend_listener = TcpListener::bind("127.0.0.1:0").await?;
    let gateway_addr = gateway_listener.local_addr()?;
    let backend_addr = backend_listener.local_addr()?;
    // Half a period: a copy is never older than that (plus a request's
    // wait) when a key published a whole period earlier starts signing.
    let cache = options.rotate_every / 2;
    let remote = RemoteJwks::builder(format!("http://{gateway_addr}{JWKS_PATH}"))
        .cache_ttl_bounds(cache, cache)
        .refresh_cooldown(cache)
        .build()?;
    let verifier = Verifier::builder(remote)
        .issuer(ISSUER)
        .audience(AUDIENCE)
        .leeway(LEEWAY)
        .build()?;
    let backend_app = backend(verifier, &counters);
    let gateway_app = gateway(
        &registry,
        options.ttl,
        options.reuse,
        backend_addr,
        &counters,
    )?;
    let mut servers = JoinSet::new();
    servers.spawn(async move { axum::serve(backend_listener, backend_app).await });
    servers.spawn(async move { axum::serve(gateway_listener, gateway_app).await });

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = JoinSet::new();
    for id in 0..usize::from(options.clients) {
        clients.spawn(client(
            id,
            gateway_addr,
            Arc::clone(&counters),
            Arc::clone(&stop),
        ));
    }

    let started = Instant::now();
    let sample = || {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let (rss_kib, peak_rss_kib) = memory_kib();
        Sample {
            elapsed: started.elapsed(),
            requests: load(&counters.sent),
            failures: load(&counters.server_errors)
                + load(&counters.other_statuses)
                + load(&counters.transport_errors),
            server_errors: load(&counters.server_errors),
            refused: load(&counters.refused),
            unsigned: load(&counters.unsigned),
            arrivals: load(&counters.arrivals),
            jwks_fetches: load(&counters.jwks_fetches),
            keys_published: kids.load(Ordering::Relaxed) as usize,
            keys_now: registry.current().keys().len(),
            rss_kib,
            peak_rss_kib,
        }
    };
    let mut samples = Vec::new();
    let mut previous: Option<Sample> = None;
    let mut emit = |sample: Sample, samples: &mut Vec<Sample>| {
        let (requests, seconds) = match &previous {
            Some(p) => (sample.requests - p.requests, sample.elapsed - p.elapsed),
            None => (sample.requests, sample.elapsed),
        };
        report(&sample, requests as f64 / seconds.as_secs_f64().max(1e-3));
        previous = Some(sample.clone());
        samples.push(sample);
    };
    let end = tokio::time::Instant::now() + options.duration;
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + options.report_every,
        options.report_every,
    );
    loop {
        tokio::select! {
            biased;
            _ = tokio::time::sleep_until(end) => break,
            _ = tick.tick() => emit(sample(), &mut samples),
            Some(done) = servers.join_next() => {
                return Err(format!("a server stopped: {done:?}").into());
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    while clients.join_next().await.is_some() {}
    let last = sample();
    emit(last.clone(), &mut samples);
    rotator.stop().await;
    kid_task.abort();
    servers.abort_all();
    Ok(Report { samples, last })
}

fn main() -> ExitCode {
    let options = Options::parse();
    // Rotation failures and JWKS fetch failures are logged as warnings.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "soak: {} clients for {} s, {} keys rotating every {} s, tokens valid {} s{}",
        options.clients,
        options.duration.as_secs(),
        options.alg,
        options.rotate_every.as_secs(),
        options.ttl.as_secs(),
        if options.reuse { ", tokens reused" } else { "" },
    );
    println!("{TABLE_HEADER}");
    let result = runtime.block_on(run(&options, |sample, rate| {
        println!("{}", table_line(sample, rate));
        let _ = std::io::stdout().flush();
    }));
    let report = match result {
        Ok(report) => report,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    let last = &report.last;
    let peak = report.samples.iter().filter_map(|s| s.rss_kib).max();
    println!(
        "total: {} requests in {:.1} s ({:.0}/s), {} failures, {} 5xx, {} refused, {} unsigned, \
         {} reached the backend; {} JWKS fetches; {} keys published; RSS {} KiB at the end \
         (largest sample {} KiB, peak {} KiB)",
        last.requests,
        last.elapsed.as_secs_f64(),
        last.requests as f64 / last.elapsed.as_secs_f64(),
        last.failures,
        last.server_errors,
        last.refused,
        last.unsigned,
        last.arrivals,
        last.jwks_fetches,
        last.keys_published,
        fmt_kib(last.rss_kib),
        fmt_kib(peak),
        fmt_kib(last.peak_rss_kib),
    );
    if last.clean() {
        println!("PASS");
        ExitCode::SUCCESS
    } else {
        println!("FAIL");
        ExitCode::FAILURE
    }
}

//! Tokens per second through `JwtSignerLayer` with the key inside a
//! SoftHSM2 token (PKCS#11) against the same algorithm with the key in this
//! process, in one run with the cases interleaved.
//!
//! ```text
//! cargo run --release --features pkcs11 --example hsm_bench            # 9 rounds
//! cargo run --release --features pkcs11 --example hsm_bench -- --quick # 3 rounds
//! ```
//!
//! It makes its own token in a temporary directory (`softhsm2-util
//! --init-token`, SoftHSM2 must be installed) and runs itself again with
//! `SOFTHSM2_CONF` pointing at it, so the machine's tokens are never
//! touched. SoftHSM is software: the difference measured is the cost of the
//! PKCS#11 path (sessions, the module's own locking and object lookup, its
//! OpenSSL calls), not the speed of a hardware HSM, which is usually far
//! slower per signature and sets its own limit.
//!
//! Two ways of signing, each case measured both ways:
//!
//! * `sequential`: one request at a time, signed inline on the calling
//!   thread (`Offload::Inline`): the cost of one token.
//! * `concurrent`: 64 requests in flight on a 2-worker runtime with the
//!   default `Offload::Auto` (a PKCS#11 key always goes to the signer's
//!   threads, one per core, each with its own session).

use std::convert::Infallible;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::{Request, Response};
use tower::{Layer, ServiceExt, service_fn};
use tower_jwt_signer::pkcs11::{Pin, Pkcs11Token};
use tower_jwt_signer::signer::Offload;
use tower_jwt_signer::{Algorithm, JwtSignerLayer, KeyRegistry, SigningKey};

const TOKEN: &str = "hsm-bench";
const PIN: &str = "1234-bench";
const CHILD: &str = "HSM_BENCH_CHILD";
const MODULES: [&str; 3] = [
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
];

type Error = Box<dyn std::error::Error>;

fn module() -> Result<&'static str, Error> {
    MODULES
        .into_iter()
        .find(|path| Path::new(path).exists())
        .ok_or_else(|| "install softhsm2 (apt-get install softhsm2)".into())
}

/// Makes a token in a temporary directory and runs this program again
/// with `SOFTHSM2_CONF` pointing at it.
fn parent() -> Result<(), Error> {
    module()?;
    let dir = tempfile::tempdir()?;
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens)?;
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )?;
    let init = Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", &conf)
        .args(["--init-token", "--free", "--label", TOKEN])
        .args(["--so-pin", "5678-bench", "--pin", PIN])
        .output()?;
    if !init.status.success() {
        return Err(format!(
            "softhsm2-util --init-token: {}",
            String::from_utf8_lossy(&init.stderr)
        )
        .into());
    }
    let status = Command::new(std::env::current_exe()?)
        .args(std::env::args().skip(1))
        .env("SOFTHSM2_CONF", &conf)
        .env(CHILD, "1")
        .status()?;
    if !status.success() {
        return Err(format!("the benchmark failed: {status}").into());
    }
    Ok(())
}

/// One case: a registry and how it signs.
struct Case {
    name: String,
    registry: KeyRegistry,
    sequential: Vec<f64>,
    concurrent: Vec<f64>,
}

fn layer(registry: &KeyRegistry, offload: Offload) -> JwtSignerLayer {
    JwtSignerLayer::builder(registry.clone())
        .issuer("https://gateway.example")
        .audience("orders-api")
        .subject("alice")
        .offload(offload)
        .build()
        .expect("valid settings")
}

fn inner() -> impl tower::Service<
    Request<()>,
    Response = Response<()>,
    Error = Infallible,
    Future = std::future::Ready<Result<Response<()>, Infallible>>,
> + Clone {
    service_fn(|request: Request<()>| {
        assert!(request.headers().contains_key(http::header::AUTHORIZATION));
        std::future::ready(Ok(Response::new(())))
    })
}

/// Tokens per second, one request at a time, signed inline, for `batch`
/// requests.
fn sequential(runtime: &tokio::runtime::Runtime, registry: &KeyRegistry, batch: usize) -> f64 {
    let service = layer(registry, Offload::Inline).layer(inner());
    let started = Instant::now();
    runtime.block_on(async {
        for _ in 0..batch {
            let response = service.clone().oneshot(Request::new(())).await.unwrap();
            assert!(response.status().is_success(), "{}", response.status());
        }
    });
    batch as f64 / started.elapsed().as_secs_f64()
}

/// Tokens per second with 64 requests in flight and the default offload.
fn concurrent(runtime: &tokio::runtime::Runtime, registry: &KeyRegistry, batch: usize) -> f64 {
    let service = layer(registry, Offload::Auto).layer(inner());
    let left = Arc::new(AtomicUsize::new(batch));
    let started = Instant::now();
    runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..64 {
            let service = service.clone();
            let left = Arc::clone(&left);
            tasks.spawn(async move {
                while left
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok()
                {
                    let response = service.clone().oneshot(Request::new(())).await.unwrap();
                    assert!(response.status().is_success(), "{}", response.status());
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    });
    batch as f64 / started.elapsed().as_secs_f64()
}

/// How many requests take about `target` when one takes `seconds`.
fn batch_for(rate: f64, target: Duration) -> usize {
    ((rate * target.as_secs_f64()) as usize).clamp(20, 200_000)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn child(rounds: usize) -> Result<(), Error> {
    let token = Pkcs11Token::builder(module()?, TOKEN)
        .pin(Pin::new(PIN))
        .open()?;
    let mut cases = Vec::new();
    for alg in [
        Algorithm::ES256,
        Algorithm::EdDSA,
        Algorithm::RS256,
        Algorithm::PS256,
    ] {
        cases.push(Case {
            name: format!("{alg} in process"),
            registry: KeyRegistry::new(SigningKey::generate(alg)?),
            sequential: Vec::new(),
            concurrent: Vec::new(),
        });
        cases.push(Case {
            name: format!("{alg} SoftHSM (PKCS#11)"),
            registry: KeyRegistry::new(token.generate(alg)?),
            sequential: Vec::new(),
            concurrent: Vec::new(),
        });
    }
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let workers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // Warm up and size each batch to about 150 ms.
    let target = Duration::from_millis(150);
    let batches: Vec<(usize, usize)> = cases
        .iter()
        .map(|case| {
            let seq = sequential(&current, &case.registry, 20);
            let con = concurrent(&workers, &case.registry, 40);
            (batch_for(seq, target), batch_for(con, target))
        })
        .collect();
    let started = Instant::now();
    for round in 0..rounds {
        // Each round starts at another case: no case always runs first.
        for offset in 0..cases.len() {
            let index = (round + offset) % cases.len();
            let (seq_batch, con_batch) = batches[index];
            let case = &mut cases[index];
            case.sequential
                .push(sequential(&current, &case.registry, seq_batch));
            case.concurrent
                .push(concurrent(&workers, &case.registry, con_batch));
        }
    }
    println!(
        "{rounds} rounds in {:.1} s; tokens per second, median of the rounds\n",
        started.elapsed().as_secs_f64()
    );
    println!("| case | sequential (inline) | concurrent (64 in flight, default offload) |");
    println!("|---|---:|---:|");
    let mut medians = Vec::new();
    for case in &mut cases {
        let seq = median(&mut case.sequential);
        let con = median(&mut case.concurrent);
        println!("| {} | {seq:.0} | {con:.0} |", case.name);
        medians.push((seq, con));
    }
    println!();
    for pair in medians.chunks(2).zip(cases.chunks(2)) {
        let ([(seq_in, con_in), (seq_hsm, con_hsm)], [case, _]) = pair else {
            continue;
        };
        let alg = case.name.split(' ').next().unwrap_or_default();
        println!(
            "ratio {alg} softhsm/in-process: sequential {:.3}, concurrent {:.3}",
            seq_hsm / seq_in,
            con_hsm / con_in
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let result = if std::env::var_os(CHILD).is_some() {
        child(if quick { 3 } else { 9 })
    } else {
        parent()
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

//! Load tests for `BENCHMARKS.md`; not part of `cargo test`.
//!
//! ```text
//! cargo build --release --example load --example signing_proxy
//! target/release/examples/load e2e              # needs wrk on the PATH
//! target/release/examples/load offload-latency
//! target/release/examples/load reuse-memory
//! ```
//!
//! * `e2e`: a fast upstream (this program, `upstream` mode) reached directly
//!   and through `signing_proxy` (ES256, EdDSA, RS256 inline and offloaded,
//!   with and without token reuse), loaded with `wrk` over loopback. The
//!   scenarios run interleaved in rounds; the table has the medians and the
//!   ratios to the direct upstream.
//! * `offload-latency`: `signing_proxy` with RS256 (or `--alg`), signing inline or
//!   offloaded, saturated by `wrk -c64`, while a probe asks the same proxy
//!   for the JWKS (answered without a signature) every 5 ms; the probe's
//!   latency.
//! * `reuse-memory`: the resident memory the reuse cache takes per token,
//!   measured (`/proc/self/statm`, a fresh process per algorithm, 50 000
//!   tokens) and computed from the entry's parts.

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tower::{Layer, ServiceExt, service_fn};
use tower_jwt_signer::signer::{Offload, TokenReuse};
use tower_jwt_signer::{Algorithm, JWKS_PATH, JwtSignerLayer, KeyRegistry};

const HELP: &str = "\
load: load tests for BENCHMARKS.md

USAGE:
    load e2e [--duration SECS] [--rounds N] [--connections N]
    load offload-latency [--seconds SECS] [--alg ALG]
    load reuse-memory
    load upstream [--listen ADDR]     (used by e2e)
";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str, default: u64| -> Result<u64, BoxError> {
        match args.iter().position(|a| a == name) {
            Some(i) => Ok(args.get(i + 1).ok_or("a flag needs a value")?.parse()?),
            None => Ok(default),
        }
    };
    match args.first().map(String::as_str) {
        Some("e2e") => e2e(
            Duration::from_secs(flag("--duration", 5)?),
            flag("--rounds", 3)? as usize,
            flag("--connections", 32)?,
        ),
        Some("offload-latency") => {
            let alg = match args.iter().position(|a| a == "--alg") {
                Some(i) => args.get(i + 1).ok_or("--alg needs a value")?.clone(),
                None => "RS256".to_owned(),
            };
            offload_latency(Duration::from_secs(flag("--seconds", 4)?), &alg)
        }
        Some("reuse-memory") => reuse_memory(),
        Some("reuse-memory-one") => reuse_memory_one(args.get(1).ok_or("an algorithm")?.parse()?),
        Some("upstream") => {
            let listen = match args.iter().position(|a| a == "--listen") {
                Some(i) => args.get(i + 1).ok_or("--listen needs a value")?.parse()?,
                None => "127.0.0.1:0".parse()?,
            };
            upstream(listen)
        }
        _ => {
            print!("{HELP}");
            Ok(())
        }
    }
}

/// A fast upstream: answers `200 ok` to everything, on one worker thread.
fn upstream(listen: SocketAddr) -> Result<(), BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        println!("upstream on http://{}", listener.local_addr()?);
        loop {
            let (stream, _) = listener.accept().await?;
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_request| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// A child process, killed when dropped.
struct Running {
    child: Child,
    url: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `program args`, waits for the first stdout line holding
/// `http://ADDR` and returns the process with that URL.
fn start(program: &std::path::Path, args: &[&str]) -> Result<Running, BoxError> {
    let mut child = Command::new(program)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|err| format!("cannot start {}: {err}", program.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut running = Running {
        child,
        url: String::new(),
    };
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let start = line
        .find("http://")
        .ok_or_else(|| format!("no URL in {line:?}"))?;
    let url = line[start..]
        .split_whitespace()
        .next()
        .ok_or("no URL")?
        .to_owned();
    running.url = format!("{url}/");
    Ok(running)
}

/// What one wrk run measured.
#[derive(Debug, Clone, Copy)]
struct Measured {
    requests_per_sec: f64,
    p99_ms: f64,
}

fn wrk(url: &str, duration: Duration, connections: u64) -> Result<Measured, BoxError> {
    let output = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{}s", duration.as_secs()),
            "--latency",
            url,
        ])
        .output()
        .map_err(|err| format!("cannot run wrk (apt-get install wrk): {err}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        return Err(format!("wrk saw errors:\n{text}").into());
    }
    let requests_per_sec = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .ok_or_else(|| format!("no Requests/sec in wrk output:\n{text}"))?
        .trim()
        .parse()?;
    let p99 = text
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("99%"))
        .ok_or_else(|| format!("no 99% line in wrk output:\n{text}"))?
        .trim();
    Ok(Measured {
        requests_per_sec,
        p99_ms: millis(p99)?,
    })
}

/// wrk's `1.23ms`, `456.00us`, `1.02s`.
fn millis(text: &str) -> Result<f64, BoxError> {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1e3)
    } else {
        return Err(format!("unknown latency {text:?}").into());
    };
    Ok(number.parse::<f64>()? * scale)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

fn e2e(duration: Duration, rounds: usize, connections: u64) -> Result<(), BoxError> {
    let here = std::env::current_exe()?;
    let dir = here.parent().ok_or("no directory")?;
    let proxy = dir.join("signing_proxy");
    if !proxy.exists() {
        return Err(format!(
            "{} is missing: cargo build --release --example signing_proxy",
            proxy.display()
        )
        .into());
    }
    let upstream = start(&here, &["upstream"])?;
    let scenarios: [(&str, &[&str]); 9] = [
        ("ES256", &["--alg", "ES256"]),
        ("ES256, reuse", &["--alg", "ES256", "--reuse"]),
        ("EdDSA", &["--alg", "EdDSA"]),
        ("EdDSA, reuse", &["--alg", "EdDSA", "--reuse"]),
        ("RS256 inline", &["--alg", "RS256", "--offload", "inline"]),
        (
            "RS256 offloaded",
            &["--alg", "RS256", "--offload", "blocking"],
        ),
        (
            "RS256 inline, reuse",
            &["--alg", "RS256", "--offload", "inline", "--reuse"],
        ),
        (
            "RS256 offloaded, reuse",
            &["--alg", "RS256", "--offload", "blocking", "--reuse"],
        ),
        ("upstream direct", &[]),
    ];
    let mut running = Vec::new();
    for (name, flags) in &scenarios {
        if flags.is_empty() {
            running.push((name, None));
            continue;
        }
        let mut args = vec![
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            upstream.url.trim_end_matches('/'),
            "--issuer",
            "gateway",
            "--audience",
            "orders",
        ];
        args.extend_from_slice(flags);
        running.push((name, Some(start(&proxy, &args)?)));
    }
    let url = |proxy: &Option<Running>| {
        proxy
            .as_ref()
            .map_or(upstream.url.clone(), |p| p.url.clone())
    };
    // Warm up every target once, briefly.
    for (_, proxy) in &running {
        wrk(&url(proxy), Duration::from_secs(1), connections)?;
    }
    let mut results: Vec<Vec<Measured>> = vec![Vec::new(); running.len()];
    for round in 0..rounds {
        for i in 0..running.len() {
            let index = (i + round) % running.len();
            let measured = wrk(&url(&running[index].1), duration, connections)?;
            eprintln!(
                "round {round}: {:24} {:>9.0} req/s  p99 {:.2} ms",
                running[index].0, measured.requests_per_sec, measured.p99_ms
            );
            results[index].push(measured);
        }
    }
    let direct_index = running.len() - 1;
    let direct_rps = median(
        results[direct_index]
            .iter()
            .map(|m| m.requests_per_sec)
            .collect(),
    );
    let direct_p99 = median(results[direct_index].iter().map(|m| m.p99_ms).collect());
    println!(
        "wrk -t1 -c{connections} -d{}s, {rounds} interleaved rounds, medians\n",
        duration.as_secs()
    );
    println!("| target | req/s | p99 ms | req/s vs direct | p99 vs direct |");
    println!("|---|---:|---:|---:|---:|");
    for (i, (name, _)) in running.iter().enumerate() {
        let rps = median(results[i].iter().map(|m| m.requests_per_sec).collect());
        let p99 = median(results[i].iter().map(|m| m.p99_ms).collect());
        println!(
            "| {name} | {rps:.0} | {p99:.2} | {:.3} | {:.2} |",
            rps / direct_rps,
            p99 / direct_p99
        );
    }
    Ok(())
}

/// Latency percentiles of a probe, in microseconds.
fn percentiles(mut samples: Vec<Duration>) -> (f64, f64, f64) {
    samples.sort();
    let at = |q: f64| {
        let index = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[index].as_secs_f64() * 1e6
    };
    (at(0.5), at(0.99), at(1.0))
}

/// A keep-alive HTTP/1.1 connection that asks for the JWKS (a request the
/// proxy answers itself, without signing) and times each answer.
struct Probe {
    reader: BufReader<std::net::TcpStream>,
    writer: std::net::TcpStream,
}

impl Probe {
    fn connect(url: &str) -> Result<Self, BoxError> {
        let authority = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let writer = std::net::TcpStream::connect(&authority)?;
        writer.set_nodelay(true)?;
        writer.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Probe {
            reader: BufReader::new(writer.try_clone()?),
            writer,
        })
    }

    fn once(&mut self) -> Result<Duration, BoxError> {
        use std::io::{Read, Write};
        let sent = Instant::now();
        self.writer
            .write_all(format!("GET {JWKS_PATH} HTTP/1.1\r\nHost: proxy\r\n\r\n").as_bytes())?;
        let mut length = 0;
        let mut status = String::new();
        self.reader.read_line(&mut status)?;
        if !status.contains(" 200 ") {
            return Err(format!("probe got {status:?}").into());
        }
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line)?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse()?;
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body)?;
        Ok(sent.elapsed())
    }
}

fn offload_latency(seconds: Duration, alg: &str) -> Result<(), BoxError> {
    let here = std::env::current_exe()?;
    let proxy = here.parent().ok_or("no directory")?.join("signing_proxy");
    let upstream = start(&here, &["upstream"])?;
    let target = upstream.url.trim_end_matches('/').to_owned();
    let modes = ["inline", "blocking"];
    let mut proxies = Vec::new();
    for mode in modes {
        let args = [
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &target,
            "--alg",
            alg,
            "--offload",
            mode,
        ];
        proxies.push(start(&proxy, &args)?);
    }
    println!(
        "signing_proxy {alg} saturated by wrk -t1 -c64 -d{}s; a probe asks the same proxy for the JWKS (no signature) every 5 ms; 2 interleaved rounds, all samples pooled\n",
        seconds.as_secs()
    );
    println!("| signing | {alg} req/s (wrk) | probe p50 µs | probe p99 µs | probe max µs |");
    println!("|---|---:|---:|---:|---:|");
    // The probe alone first: the floor.
    let mut probe = Probe::connect(&proxies[0].url)?;
    let mut idle = Vec::new();
    let started = Instant::now();
    while started.elapsed() < seconds {
        idle.push(probe.once()?);
        std::thread::sleep(Duration::from_millis(5));
    }
    let (p50, p99, max) = percentiles(idle);
    println!("| no load | 0 | {p50:.0} | {p99:.0} | {max:.0} |");
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); modes.len()];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    for _round in 0..2 {
        for (index, running) in proxies.iter().enumerate() {
            let url = running.url.clone();
            let load = std::thread::spawn(move || wrk(&url, seconds, 64));
            std::thread::sleep(Duration::from_millis(500));
            let mut probe = Probe::connect(&running.url)?;
            while !load.is_finished() {
                samples[index].push(probe.once()?);
                std::thread::sleep(Duration::from_millis(5));
            }
            let measured = load.join().map_err(|_| "wrk thread panicked")??;
            rates[index].push(measured.requests_per_sec);
        }
    }
    for (index, mode) in modes.iter().enumerate() {
        let (p50, p99, max) = percentiles(std::mem::take(&mut samples[index]));
        let name = if *mode == "blocking" {
            "offloaded (signing threads)"
        } else {
            "inline"
        };
        println!(
            "| {name} | {:.0} | {p50:.0} | {p99:.0} | {max:.0} |",
            median(std::mem::take(&mut rates[index]))
        );
    }
    Ok(())
}

/// Resident memory of this process, in bytes.
fn resident() -> Result<u64, BoxError> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .ok_or("no resident field")?
        .parse()?;
    Ok(pages * 4096)
}

fn reuse_memory() -> Result<(), BoxError> {
    let here = std::env::current_exe()?;
    println!(
        "| alg | tokens cached | header value bytes | RSS growth | per token, measured | per token, computed |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for alg in ["ES256", "EdDSA", "RS256"] {
        // A fresh process per algorithm: nothing freed earlier can hide
        // the cache's growth.
        let output = Command::new(&here)
            .args(["reuse-memory-one", alg])
            .output()?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).into_owned().into());
        }
        print!("{}", String::from_utf8_lossy(&output.stdout));
    }
    Ok(())
}

/// Fills a reuse cache of 50 000 entries with 50 000 subjects and prints
/// one table row.
fn reuse_memory_one(alg: Algorithm) -> Result<(), BoxError> {
    const SUBJECTS: usize = 50_000;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let registry = KeyRegistry::generate(alg)?;
    let layer = JwtSignerLayer::builder(registry)
        .issuer("https://gateway.example")
        .audience("orders-api")
        .template_claim("sub", "${req.headers.x-user}")
        .offload(Offload::Inline)
        .reuse_tokens(TokenReuse::new().max_entries(SUBJECTS))
        .build()?;
    let value_len = Arc::new(AtomicU64::new(0));
    let seen_len = value_len.clone();
    let service = layer.layer(service_fn(move |request: Request<()>| {
        let len = request.headers()["authorization"].len() as u64;
        seen_len.store(len, Ordering::Relaxed);
        async { Ok::<_, Infallible>(Response::new(Full::<Bytes>::default())) }
    }));
    let send = |i: usize| {
        let request = Request::get("/")
            .header("x-user", format!("user-{i:08}"))
            .body(())
            .expect("request");
        runtime
            .block_on(service.clone().oneshot(request))
            .expect("infallible");
    };
    // A few requests first, so that the allocator's first growth is not
    // counted.
    for i in 0..100 {
        send(SUBJECTS + i);
    }
    let before = resident()?;
    for i in 0..SUBJECTS {
        send(i);
    }
    let after = resident()?;
    let cached = service.cached_tokens();
    let value = value_len.load(Ordering::Relaxed) as usize;
    // Per entry: the slot (hash 8, boxed key 16, HeaderValue, Arc<dyn>
    // 16, settings 8, iat 8, until 8), the key bytes (the claims after
    // jti), the value bytes, the `Bytes` shared header (24) and about 16
    // bytes of malloc overhead for each of the three allocations.
    let key = r#","iss":"https://gateway.example","aud":"orders-api","sub":"user-00000000""#.len();
    let slot = 8 + 16 + std::mem::size_of::<http::HeaderValue>() + 16 + 8 + 8 + 8;
    let computed = slot + key + value + 24 + 3 * 16;
    let growth = after.saturating_sub(before);
    println!(
        "| {alg} | {cached} | {value} | {:.1} MiB | {} B | {computed} B |",
        growth as f64 / (1024.0 * 1024.0),
        growth / cached.max(1) as u64,
    );
    Ok(())
}

//! The fleet as processes: three `signing_proxy` replicas on one Redis,
//! rotating every 2 s, clients spread over them for 30 s, `verify_backend`
//! behind them, reading the JWKS through a load balancer (as backends do:
//! from whichever replica answers). During the run: `kill -9` the leader,
//! `SIGSTOP` the next one past its lease and `SIGCONT` it, stop Redis for
//! 10 s (it comes back empty), `FLUSHALL`. Zero failed verifications, zero
//! 5xx. And the flags: the KEK file, exclusive and impossible settings.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustix::process::{Pid, Signal, kill_process};

use crate::redis_server::RedisServer;
use crate::support::process::{Example, LIMIT, Running};

const JWKS: &str = "/.well-known/otoroshi/security/jwks.json";

fn signal(process: &Running, signal: Signal) {
    let pid = Pid::from_raw(i32::try_from(process.pid()).unwrap()).unwrap();
    kill_process(pid, signal).unwrap();
}

/// The replicas a load balancer sends to: those that are up.
#[derive(Clone, Default)]
struct Pool {
    up: Arc<Mutex<Vec<(SocketAddr, bool)>>>,
    next: Arc<AtomicUsize>,
}

impl Pool {
    fn add(&self, addr: SocketAddr) {
        self.up.lock().unwrap().push((addr, true));
    }

    fn set(&self, addr: SocketAddr, up: bool) {
        for entry in self.up.lock().unwrap().iter_mut() {
            if entry.0 == addr {
                entry.1 = up;
            }
        }
    }

    fn pick(&self) -> SocketAddr {
        let up: Vec<SocketAddr> = self
            .up
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, up)| *up)
            .map(|(addr, _)| *addr)
            .collect();
        assert!(!up.is_empty(), "no replica is up");
        up[self.next.fetch_add(1, Ordering::Relaxed) % up.len()]
    }
}

/// What the clients saw.
struct Tally {
    started: Instant,
    ok: AtomicUsize,
    failures: Mutex<Vec<String>>,
    /// Each kid verified, with when it was first seen.
    kids: Mutex<BTreeMap<String, Instant>>,
}

/// A load balancer for the JWKS: each request goes to a replica that is
/// up (a real fleet's backends reach the JWKS through one).
async fn balancer(pool: Pool) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (pool, client) = (pool.clone(), client.clone());
            tokio::spawn(async move {
                if pool.up.lock().unwrap().is_empty() {
                    return; // no replica yet: the backend retries
                }
                let service =
                    hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        let (pool, client) = (pool.clone(), client.clone());
                        async move {
                            let uri = format!("http://{}{}", pool.pick(), request.uri().path());
                            let response = match client.get(uri.parse().unwrap()).await {
                                Ok(response) => {
                                    let (parts, body) = response.into_parts();
                                    let bytes = body
                                        .collect()
                                        .await
                                        .map(|b| b.to_bytes())
                                        .unwrap_or_default();
                                    Response::from_parts(parts, Full::new(bytes))
                                }
                                Err(_) => {
                                    let mut response = Response::new(Full::new(Bytes::new()));
                                    *response.status_mut() = StatusCode::BAD_GATEWAY;
                                    response
                                }
                            };
                            Ok::<_, Infallible>(response)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A client: requests through a replica that is up, until `stop`.
async fn client(pool: Pool, tally: Arc<Tally>, stop: Arc<AtomicBool>) {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let replica = pool.pick();
        n += 1;
        let uri = format!("http://{replica}/orders/{n}");
        let sent =
            tokio::time::timeout(Duration::from_secs(10), client.get(uri.parse().unwrap())).await;
        let outcome = match sent {
            Err(_) => Err(format!("{replica}: no answer within 10 s")),
            Ok(Err(err)) => Err(format!("{replica}: {err}")),
            Ok(Ok(response)) => {
                let status = response.status();
                let body = response.into_body().collect().await.map(|b| b.to_bytes());
                match (status, body) {
                    (StatusCode::OK, Ok(body)) => {
                        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
                        let kid = json["kid"].as_str().unwrap_or_default().to_owned();
                        tally
                            .kids
                            .lock()
                            .unwrap()
                            .entry(kid)
                            .or_insert_with(Instant::now);
                        Ok(())
                    }
                    (status, body) => Err(format!(
                        "{replica}: {status} {}",
                        body.map(|b| String::from_utf8_lossy(&b).into_owned())
                            .unwrap_or_default()
                    )),
                }
            }
        };
        match outcome {
            Ok(()) => {
                tally.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(failure) => tally
                .failures
                .lock()
                .unwrap()
                .push(format!("{:?} {failure}", tally.started.elapsed())),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The replica whose log says it took the lease last, among `candidates`.
fn leader_among<'a>(candidates: &[&'a Replica]) -> Option<&'a Replica> {
    candidates.iter().copied().find(|replica| {
        let acquired = replica
            .process
            .count(|l| l.contains("leader lease acquired"));
        let gone = replica
            .process
            .count(|l| l.contains("leader lease lost") || l.contains("leader lease released"));
        acquired > gone
    })
}

struct Replica {
    process: Running,
    addr: SocketAddr,
}

async fn start_replica(
    proxy: &Example,
    redis: &RedisServer,
    kek: &str,
    upstream: SocketAddr,
) -> Replica {
    let url = redis.url();
    let upstream = format!("http://{upstream}");
    let process = proxy.spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &upstream,
        "--redis-url",
        &url,
        "--kek-file",
        kek,
        "--redis-prefix",
        "fleet-test",
        "--rotate-every",
        "2",
        "--prepublish",
        "2",
        "--leader-lease",
        "3",
        "--redis-poll",
        "1",
        "--jwks-max-age",
        "1",
        "--ttl",
        "10",
    ]);
    let addr = process.address("signing proxy on").await;
    Replica { process, addr }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_survive_a_kill_a_stall_a_redis_outage_and_a_flush_with_zero_failures() {
    let proxy = Example::new("signing_proxy");
    let backend = Example::new("verify_backend");
    let mut redis = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let kek = tmp.path().join("fleet.kek");
    let kek = kek.to_str().unwrap();

    let pool = Pool::default();
    let jwks_balancer = balancer(pool.clone()).await;
    let jwks_url = format!("http://{jwks_balancer}{JWKS}");
    let verifier = backend.spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--jwks-url",
        &jwks_url,
        "--refresh-cooldown",
        "1",
    ]);
    let upstream = verifier.address("verifying backend on").await;

    // The first replica creates the KEK file and leads; the others join.
    let first = start_replica(&proxy, &redis, kek, upstream).await;
    first
        .process
        .line_async("the KEK file is created", |l| {
            l.contains("created the key-encryption key file")
        })
        .await;
    first
        .process
        .line_async("the first replica leads", |l| {
            l.contains("leader lease acquired")
        })
        .await;
    let second = start_replica(&proxy, &redis, kek, upstream).await;
    let third = start_replica(&proxy, &redis, kek, upstream).await;
    for replica in [&first, &second, &third] {
        pool.add(replica.addr);
    }

    // The backend fetches the JWKS (through the balancer) before the load.
    let probe: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    loop {
        let uri = format!("http://{}/ready", second.addr).parse().unwrap();
        if let Ok(response) = probe.get(uri).await
            && response.status() == StatusCode::OK
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tally = Arc::new(Tally {
        started: Instant::now(),
        ok: AtomicUsize::new(0),
        failures: Mutex::new(Vec::new()),
        kids: Mutex::new(BTreeMap::new()),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| tokio::spawn(client(pool.clone(), Arc::clone(&tally), Arc::clone(&stop))))
        .collect();
    let started = Instant::now();
    let at = |secs: u64| tokio::time::sleep_until((started + Duration::from_secs(secs)).into());

    // kill -9 the leader: another replica takes over.
    at(2).await;
    pool.set(first.addr, false);
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&first.process, Signal::KILL);
    let mut next = None;
    while next.is_none() {
        next = leader_among(&[&second, &third]);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(started.elapsed() < LIMIT, "no replica took over");
    }
    let stalled = next.unwrap();
    let other = if std::ptr::eq(stalled, &second) {
        &third
    } else {
        &second
    };

    // SIGSTOP the new leader past its lease (3 s) and a renewal interval;
    // the other one takes over; SIGCONT: the stalled one learns it lost.
    at(7).await;
    pool.set(stalled.addr, false);
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&stalled.process, Signal::STOP);
    other
        .process
        .line_async("the last replica takes over", |l| {
            l.contains("leader lease acquired")
        })
        .await;
    at(13).await;
    signal(&stalled.process, Signal::CONT);
    stalled
        .process
        .line_async("the stalled leader stops leading", |l| {
            l.contains("leader lease lost") || l.contains("write refused")
        })
        .await;
    // Back in the pool once its JWKS has caught up with the fleet's.
    let http: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let jwks_of = |addr: SocketAddr| {
        let http = http.clone();
        async move {
            let response = http
                .get(format!("http://{addr}{JWKS}").parse().unwrap())
                .await
                .unwrap();
            response.into_body().collect().await.unwrap().to_bytes()
        }
    };
    while jwks_of(stalled.addr).await != jwks_of(other.addr).await {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pool.set(stalled.addr, true);

    // Redis down for 10 s; it comes back empty (no persistence).
    at(15).await;
    redis.kill();
    at(25).await;
    redis.restart();
    let back = Instant::now();
    // FLUSHALL.
    at(27).await;
    let _: String = redis.cmd(&["FLUSHALL"]);
    let flushed = Instant::now();

    at(32).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }

    let failures = tally.failures.lock().unwrap().clone();
    let ok = tally.ok.load(Ordering::Relaxed);
    let transcripts = || {
        format!(
            "{}\n{}\n{}\n{}",
            second.process.transcript(),
            third.process.transcript(),
            verifier.transcript(),
            first.process.transcript()
        )
    };
    assert!(
        failures.is_empty(),
        "{} failure(s) out of {}: {:?}\n{}",
        failures.len(),
        ok + failures.len(),
        &failures[..failures.len().min(20)],
        transcripts()
    );
    assert!(ok > 100, "{ok} requests");
    let kids = tally.kids.lock().unwrap().clone();
    // Rotation went on through the faults, and resumed after Redis came
    // back (and after the flush).
    assert!(kids.len() >= 5, "{kids:?}");
    assert!(
        kids.values().any(|first_seen| *first_seen > back),
        "no key first used after Redis came back: {kids:?}\n{}",
        transcripts()
    );
    assert!(
        kids.values().any(|first_seen| *first_seen > flushed),
        "no key first used after the flush: {kids:?}"
    );
    // Rotation waited while Redis was down, with a warning each try.
    let waits = other.process.count(|l| l.contains("rotation waits"))
        + stalled.process.count(|l| l.contains("rotation waits"));
    assert!(waits >= 2, "{}", transcripts());
}

#[test]
fn the_kek_file_is_created_0600_and_bad_fleet_flags_are_refused_before_start() {
    use std::os::unix::fs::PermissionsExt;
    let proxy = Example::new("signing_proxy");
    let redis = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let kek = tmp.path().join("new.kek");
    let url = redis.url();
    let kek_arg = kek.to_str().unwrap();
    let running = proxy.spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        "http://127.0.0.1:1",
        "--redis-url",
        &url,
        "--kek-file",
        kek_arg,
    ]);
    running.line("the KEK file is created", |l| {
        l.contains("created the key-encryption key file") && l.contains(kek_arg)
    });
    running.line("it listens", |l| l.contains("signing proxy on"));
    let meta = std::fs::metadata(&kek).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.len(), 32);
    drop(running);

    let refused = |args: &[&str], expected: &str| {
        let mut all = vec!["--upstream", "http://127.0.0.1:1"];
        all.extend_from_slice(args);
        let finished = proxy.run(&all, LIMIT);
        assert_eq!(finished.code(), Some(2), "{args:?}: {}", finished.stderr);
        assert!(
            finished.stderr.contains(expected),
            "{args:?}: {}",
            finished.stderr
        );
    };
    refused(
        &[
            "--redis-url",
            &url,
            "--kek-file",
            kek_arg,
            "--key-dir",
            "/tmp/x",
        ],
        // clap names the two flags in either order.
        "cannot be used with '--",
    );
    refused(
        &["--redis-url", &url],
        "the following required arguments were not provided:\n  --kek-file <FILE>",
    );
    refused(
        &["--kek-file", kek_arg],
        "the following required arguments were not provided:\n  --redis-url <URL>",
    );
    refused(
        &[
            "--redis-url",
            &url,
            "--kek-file",
            kek_arg,
            "--rotate-every",
            "2",
        ],
        "invalid follower_poll_interval 5s: longer than the rotation period (2s)",
    );
    refused(
        &[
            "--redis-url",
            &url,
            "--kek-file",
            kek_arg,
            "--rotate-every",
            "2",
        ],
        "poll more often (--redis-poll)",
    );
    refused(
        &[
            "--redis-url",
            &url,
            "--kek-file",
            kek_arg,
            "--rotate-every",
            "60",
            "--redis-poll",
            "5",
            "--prepublish",
            "2",
        ],
        "invalid prepublish 2s: shorter than the followers' poll interval (5s)",
    );
    // A password in the URL is never printed, not even in an error.
    let finished = proxy.run(
        &[
            "--upstream",
            "http://127.0.0.1:1",
            "--redis-url",
            "redis://gw:Pr0xyS3cret@127.0.0.1:1/",
            "--kek-file",
            kek_arg,
        ],
        Duration::from_secs(120),
    );
    assert_ne!(finished.code(), Some(0));
    assert!(
        !format!("{}{}", finished.stdout, finished.stderr).contains("Pr0xyS3cret"),
        "{}",
        finished.stderr
    );
}

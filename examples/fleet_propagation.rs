//! How fast a change reaches a fleet: the time from the leader's commit in
//! Redis to every follower's new snapshot, over many rotations, with
//! pub/sub (and the default 5 s poll behind it) and with polling alone.
//!
//! ```text
//! cargo run --release --features redis --example fleet_propagation -- \
//!     [--rotations 100] [--followers 3] [--poll-ms 1000]
//! ```
//!
//! It starts its own `redis-server` on a free loopback port (no
//! persistence, a temporary directory) and stops it at the end. Every
//! replica (one leader, the followers) has its own `RedisKeyStore` handle,
//! so its own connections, as separate processes would.

#[path = "support/mod.rs"]
mod support;

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use tower_jwt_signer::registry::StoreFollower;
use tower_jwt_signer::store::redis::{Kek, LeaderLease};
use tower_jwt_signer::store::{KeyStore, StoreChange, StoreLock, StoreNotifications, StoredKey};
use tower_jwt_signer::{Algorithm, KeyRegistry, Kid, RedisKeyStore, SigningKey, StoreError};

/// The leader's store, noting when each commit returned.
#[derive(Debug, Clone)]
struct Timed {
    inner: RedisKeyStore,
    committed: Arc<Mutex<Option<Instant>>>,
}

impl KeyStore for Timed {
    fn load(&self) -> Result<Vec<StoredKey>, StoreError> {
        self.inner.load()
    }
    fn save(&self, key: &StoredKey) -> Result<(), StoreError> {
        self.inner.save(key)
    }
    fn remove(&self, kid: &Kid) -> Result<(), StoreError> {
        self.inner.remove(kid)
    }
    fn lock(&self) -> Result<StoreLock, StoreError> {
        self.inner.lock()
    }
    fn commit(&self, change: &StoreChange) -> Result<(), StoreError> {
        self.inner.commit(change)?;
        *self.committed.lock().unwrap() = Some(Instant::now());
        Ok(())
    }
    fn is_leader(&self) -> Result<bool, StoreError> {
        self.inner.is_leader()
    }
    fn notifications(&self) -> Option<StoreNotifications> {
        self.inner.notifications()
    }
}

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "fleet_propagation",
    about = "fleet_propagation: commit-to-every-follower latency of a RedisKeyStore fleet, with pub/sub and with polling alone",
    after_help = support::ENV_HELP,
)]
struct Args {
    /// Rotations to measure, per mode
    #[arg(long, env = "TJS_ROTATIONS", value_name = "N", default_value = "100", value_parser = clap::value_parser!(u16).range(1..))]
    rotations: u16,
    /// Followers (registries following the store)
    #[arg(long, env = "TJS_FOLLOWERS", value_name = "N", default_value = "3", value_parser = clap::value_parser!(u16).range(1..))]
    followers: u16,
    /// The followers' poll interval, in milliseconds
    #[arg(long = "poll-ms", env = "TJS_POLL_MS", value_name = "MS", default_value = "1000", value_parser = poll_ms)]
    poll: Duration,
}

/// `--poll-ms`: at least 1.
fn poll_ms(text: &str) -> Result<Duration, String> {
    match text.parse::<u64>().map_err(|err| err.to_string())? {
        0 => Err("must be at least 1".to_owned()),
        ms => Ok(Duration::from_millis(ms)),
    }
}

/// Our own redis-server, killed on drop.
struct Redis(
    std::process::Child,
    #[allow(dead_code)] tempfile::TempDir,
    u16,
);

impl Redis {
    fn start() -> Redis {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no", "--dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server: install it (apt-get install redis-server)");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis(child, dir, port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// One run: a leader, `followers` followers, `rotations` rotations.
async fn run(
    redis: &Redis,
    args: &Args,
    prefix: &str,
    pubsub: bool,
    poll: Duration,
) -> Vec<Duration> {
    let kek = Kek::generate();
    let open = || {
        let store = RedisKeyStore::builder(format!("redis://127.0.0.1:{}/", redis.2), kek.clone())
            .prefix(prefix)
            .build()
            .unwrap();
        store.connect().unwrap();
        store
    };
    let leader_store = open();
    let lease = LeaderLease::spawn(&leader_store).await;
    let committed = Arc::new(Mutex::new(None));
    let timed = Timed {
        inner: leader_store,
        committed: Arc::clone(&committed),
    };
    let leader = tokio::task::spawn_blocking(move || {
        KeyRegistry::builder()
            .store(timed)
            .generate_if_missing(Algorithm::ES256)
            .build()
    })
    .await
    .unwrap()
    .unwrap();
    let mut followers = Vec::new();
    for _ in 0..args.followers {
        let registry = KeyRegistry::builder().store(open()).build().unwrap();
        let follower = StoreFollower::builder(registry.clone(), poll)
            .notifications(pubsub)
            .spawn()
            .unwrap();
        followers.push((registry, follower));
    }
    // Let the followers subscribe.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut latencies = Vec::with_capacity(usize::from(args.rotations));
    for _ in 0..args.rotations {
        let key = SigningKey::generate(Algorithm::ES256).unwrap();
        let kid = key.kid().clone();
        let rotating = leader.clone();
        tokio::task::spawn_blocking(move || rotating.rotate_to(key, Duration::from_secs(3600)))
            .await
            .unwrap()
            .unwrap();
        let at = committed.lock().unwrap().expect("committed");
        let mut slowest = Duration::ZERO;
        for (registry, _) in &followers {
            let mut changes = registry.subscribe();
            let seen = changes
                .wait_for(|snapshot| snapshot.active().map(|k| k.kid()) == Some(&kid))
                .await;
            assert!(seen.is_ok());
            slowest = slowest.max(at.elapsed());
        }
        // `elapsed` above is read after the follower's snapshot is there:
        // the wait for the last follower bounds every one of them.
        latencies.push(slowest);
    }
    for (_, follower) in followers {
        follower.stop().await;
    }
    lease.stop().await;
    latencies
}

fn report(label: &str, mut latencies: Vec<Duration>) {
    latencies.sort();
    println!(
        "{label:<34} rotations {:>4}  p50 {:>10}  p99 {:>10}  max {:>10}",
        latencies.len(),
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
        ms(*latencies.last().unwrap()),
    );
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let redis = Redis::start();
    println!(
        "propagation from the leader's commit to every follower's snapshot ({} followers, {} rotations, Redis on loopback)",
        args.followers, args.rotations
    );
    let pubsub = runtime.block_on(run(
        &redis,
        &args,
        "bench-pubsub",
        true,
        Duration::from_secs(5),
    ));
    report("pub/sub (poll 5 s behind it)", pubsub);
    let label = format!("polling alone, every {} ms", args.poll.as_millis());
    let polling = runtime.block_on(run(&redis, &args, "bench-poll", false, args.poll));
    report(&label, polling);
}

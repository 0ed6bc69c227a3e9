//! What the fleet's tests share: stores on the test's own Redis, a log
//! capture, and waiting without timing assertions.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tower_jwt_signer::RedisKeyStore;
use tower_jwt_signer::store::redis::Kek;

use crate::redis_server::RedisServer;

/// The KEK most tests share.
pub(crate) fn kek() -> Kek {
    Kek::from_bytes(&[42; 32]).unwrap()
}

/// A store on `server` with `prefix`, connected.
pub(crate) fn store(server: &RedisServer, prefix: &str) -> RedisKeyStore {
    store_with(server, prefix, |b| b)
}

/// A store on `server` with `prefix` and more settings, connected.
pub(crate) fn store_with(
    server: &RedisServer,
    prefix: &str,
    more: impl FnOnce(
        tower_jwt_signer::store::redis::RedisKeyStoreBuilder,
    ) -> tower_jwt_signer::store::redis::RedisKeyStoreBuilder,
) -> RedisKeyStore {
    let builder = RedisKeyStore::builder(server.url(), kek()).prefix(prefix);
    let store = more(builder).build().unwrap();
    store.connect().unwrap();
    store
}

/// Every line logged by the whole test binary (all threads, all runtimes),
/// captured once: tests pick their own lines by their store's name.
pub(crate) fn logs() -> Logs {
    static CAPTURE: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    let buffer = CAPTURE.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = Arc::clone(&buffer);
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || Capture(Arc::clone(&writer)))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber per binary");
        buffer
    });
    Logs {
        buffer: Arc::clone(buffer),
    }
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The captured log.
#[derive(Clone)]
pub(crate) struct Logs {
    buffer: Arc<Mutex<Vec<u8>>>,
}

impl Logs {
    /// The lines that contain every one of `words`.
    pub(crate) fn lines_with(&self, words: &[&str]) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.buffer.lock().unwrap()).into_owned();
        text.lines()
            .filter(|line| words.iter().all(|word| line.contains(word)))
            .map(str::to_owned)
            .collect()
    }

    /// Everything captured so far.
    pub(crate) fn all(&self) -> String {
        String::from_utf8_lossy(&self.buffer.lock().unwrap()).into_owned()
    }
}

/// Waits (up to a generous bound that only guards against a hang) until
/// `done` holds; panics with `what` otherwise.
pub(crate) fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

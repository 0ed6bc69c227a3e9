//! The log lines of the whole test binary: one global `tracing`
//! subscriber (DEBUG and up, each line naming the thread that emitted it)
//! that writes into memory, installed on first use. Every test of a binary
//! shares it, so a test looks only for lines that name its own keys,
//! directory or URL.

use std::io;
use std::sync::{Arc, Mutex, OnceLock};

/// The log lines of this process (`tracing`, DEBUG and up, as
/// `<time> <LEVEL> <thread name> <target>: <message>`), captured by a global
/// subscriber installed on first use.
pub fn logs() -> &'static Logs {
    static LOGS: OnceLock<Logs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs::default();
        let writer = logs.clone();
        let _ = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_thread_names(true)
            .with_max_level(tracing::Level::DEBUG)
            .try_init();
        logs
    })
}

#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.matching(&[])
    }

    /// The lines that contain every one of `parts`.
    pub fn matching(&self, parts: &[&str]) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|line| parts.iter().all(|part| line.contains(part)))
            .map(str::to_owned)
            .collect()
    }
}

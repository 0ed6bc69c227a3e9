//! The signer's own thread pool for slow signatures: one thread per core,
//! shared by every signer in the process.
//!
//! Why not `tokio::task::spawn_blocking`: under load it starts a thread per
//! waiting signature (up to 512), and that many CPU-bound threads take the
//! cores from the runtime's workers, whose cheap requests then wait for the
//! kernel's scheduler (see `BENCHMARKS.md`). A pool as large as the
//! machine keeps at most one signature per core in flight; the others wait
//! in the queue, costing nothing.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

type Job = Box<dyn FnOnce() + Send>;

/// The most threads the pool starts, whatever the core count.
const MAX_THREADS: usize = 16;

struct Pool {
    jobs: Sender<Job>,
}

static POOL: OnceLock<Option<Pool>> = OnceLock::new();

/// How many signing threads the pool starts (at most): one per core, at
/// most 16. A device's session pool (PKCS#11) is sized to match.
pub(crate) fn signing_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(MAX_THREADS)
}

fn pool() -> Option<&'static Pool> {
    POOL.get_or_init(|| {
        let threads = signing_threads();
        let (sender, receiver) = channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let mut started = 0;
        for index in 0..threads {
            let receiver = Arc::clone(&receiver);
            let spawned = std::thread::Builder::new()
                .name(format!("jwt-signer-{index}"))
                .spawn(move || work(&receiver));
            match spawned {
                Ok(_) => started += 1,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot start a signing thread");
                }
            }
        }
        (started > 0).then_some(Pool { jobs: sender })
    })
    .as_ref()
}

fn work(receiver: &Mutex<Receiver<Job>>) {
    loop {
        // One idle thread waits on the queue at a time; the lock is
        // released before the job runs.
        let job = receiver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .recv();
        let Ok(job) = job else { return };
        // A panicking signer must not take the thread with it; the job's
        // answer channel is dropped, which fails the request closed.
        let _ = catch_unwind(AssertUnwindSafe(job));
    }
}

/// Runs `job` on the pool. Gives the job back when the pool cannot run it
/// (no thread could be started), for the caller to run inline.
pub(crate) fn execute<F>(job: F) -> Result<(), F>
where
    F: FnOnce() + Send + 'static,
{
    let Some(pool) = pool() else {
        return Err(job);
    };
    // The threads never stop (they catch panics), so the queue stays open.
    // Were it closed, the job would be dropped with its answer channel and
    // the request would fail closed.
    let _ = pool.jobs.send(Box::new(job));
    Ok(())
}

//! An in-process readers-writer lock that knows which thread writes, so
//! that the writer can read inside its own write lock without waiting.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, ThreadId};

#[derive(Debug, Default)]
pub(crate) struct TxLock {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    writer: Option<ThreadId>,
    readers: usize,
}

impl TxLock {
    fn state(&self) -> MutexGuard<'_, State> {
        // The state is two counters, consistent after any panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until no one reads or writes, then writes until the guard is
    /// dropped.
    pub(crate) fn write(self: &Arc<Self>) -> WriteGuard {
        let me = thread::current().id();
        let mut state = self.state();
        while state.writer.is_some() || state.readers > 0 {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        state.writer = Some(me);
        WriteGuard(Arc::clone(self))
    }

    /// Waits until no other thread writes, then reads until the guard is
    /// dropped. `None` when the calling thread is the writer: it may read
    /// what it is writing.
    pub(crate) fn read(self: &Arc<Self>) -> Option<ReadGuard> {
        let me = thread::current().id();
        let mut state = self.state();
        if state.writer == Some(me) {
            return None;
        }
        while state.writer.is_some() {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        state.readers += 1;
        Some(ReadGuard(Arc::clone(self)))
    }
}

#[derive(Debug)]
#[must_use = "the write ends when the guard is dropped"]
pub(crate) struct WriteGuard(Arc<TxLock>);

impl Drop for WriteGuard {
    fn drop(&mut self) {
        self.0.state().writer = None;
        self.0.changed.notify_all();
    }
}

#[derive(Debug)]
#[must_use = "the read ends when the guard is dropped"]
pub(crate) struct ReadGuard(Arc<TxLock>);

impl Drop for ReadGuard {
    fn drop(&mut self) {
        self.0.state().readers -= 1;
        self.0.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[test]
    fn the_writer_reads_without_waiting_others_wait() {
        let lock = Arc::new(TxLock::default());
        let write = lock.write();
        assert!(lock.read().is_none(), "the writer itself does not wait");

        let released = Arc::new(AtomicBool::new(false));
        let reader = {
            let lock = Arc::clone(&lock);
            let released = Arc::clone(&released);
            thread::spawn(move || {
                let guard = lock.read();
                assert!(guard.is_some());
                // Only possible once the writer has let go.
                released.load(Ordering::SeqCst)
            })
        };
        // Give the reader a chance to try while the lock is held (the
        // assertion does not depend on how long this takes).
        thread::sleep(Duration::from_millis(20));
        released.store(true, Ordering::SeqCst);
        drop(write);
        assert!(reader.join().unwrap(), "a reader got in during a write");
    }
}

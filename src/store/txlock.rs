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
    /// Threads waiting for their turn: a release wakes them only if any.
    waiting: usize,
}

impl TxLock {
    fn state(&self) -> MutexGuard<'_, State> {
        // The state is counters, consistent after any panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for the next release, counted among the waiting threads.
    fn wait<'a>(&self, mut state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        state.waiting += 1;
        let mut state = self
            .changed
            .wait(state)
            .unwrap_or_else(PoisonError::into_inner);
        state.waiting -= 1;
        state
    }

    /// Wakes the waiting threads, if any, after a release.
    fn released(&self, state: MutexGuard<'_, State>) {
        if state.waiting > 0 {
            drop(state);
            self.changed.notify_all();
        }
    }

    /// Waits until no one reads or writes, then writes until the guard is
    /// dropped.
    pub(crate) fn write(self: &Arc<Self>) -> WriteGuard {
        let me = thread::current().id();
        let mut state = self.state();
        while state.writer.is_some() || state.readers > 0 {
            state = self.wait(state);
        }
        state.writer = Some(me);
        WriteGuard(Arc::clone(self))
    }

    /// [`write`](Self::write), unless the calling thread already writes:
    /// then `None`, and its write goes on.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn write_if_not_held(self: &Arc<Self>) -> Option<WriteGuard> {
        if self.state().writer == Some(thread::current().id()) {
            return None;
        }
        Some(self.write())
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
            state = self.wait(state);
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
        let mut state = self.0.state();
        state.writer = None;
        self.0.released(state);
    }
}

#[derive(Debug)]
#[must_use = "the read ends when the guard is dropped"]
pub(crate) struct ReadGuard(Arc<TxLock>);

impl Drop for ReadGuard {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.readers -= 1;
        self.0.released(state);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::{self, Receiver, TryRecvError};

    use super::*;

    /// Waits until `lock` counts a waiting thread, failing if `through`
    /// reports that the thread got the lock instead. No timing: a thread
    /// that does not wait gets through, and the loop sees it.
    fn until_one_waits(lock: &TxLock, through: &Receiver<()>, what: &str) {
        while lock.state().waiting == 0 {
            assert_eq!(through.try_recv(), Err(TryRecvError::Empty), "{what}");
            thread::yield_now();
        }
        assert_eq!(through.try_recv(), Err(TryRecvError::Empty), "{what}");
    }

    #[test]
    fn the_writer_reads_without_waiting_others_wait() {
        let lock = Arc::new(TxLock::default());
        let write = lock.write();
        assert!(lock.read().is_none(), "the writer itself does not wait");

        let (got_in, through) = mpsc::channel();
        let reader = {
            let lock = Arc::clone(&lock);
            thread::spawn(move || {
                let guard = lock.read();
                got_in.send(()).unwrap();
                guard.is_some()
            })
        };
        until_one_waits(&lock, &through, "a reader got in during a write");
        drop(write);
        through.recv().unwrap();
        assert!(reader.join().unwrap(), "another thread reads under a guard");
    }

    #[test]
    fn a_writer_waits_for_the_readers() {
        let lock = Arc::new(TxLock::default());
        let read = lock.read().expect("no writer");

        let (got_in, through) = mpsc::channel();
        let writer = {
            let lock = Arc::clone(&lock);
            thread::spawn(move || {
                let _write = lock.write();
                got_in.send(()).unwrap();
            })
        };
        until_one_waits(&lock, &through, "a writer got in during a read");
        drop(read);
        through.recv().unwrap();
        writer.join().unwrap();
        assert_eq!(lock.state().waiting, 0);
    }
}

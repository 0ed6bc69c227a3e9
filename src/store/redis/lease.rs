//! [`LeaderLease`]: which replica of the fleet leads (rotates and writes).

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::{Either, select};
use redis::aio::MultiplexedConnection;
use std::time::Instant;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::kek::random_bytes;
use super::{RedisKeyStore, lock, scripts};
use crate::store::StoreError;

/// What this process knows of its lease; shared by the store's clones, the
/// lease task, and the commit that finds the lease lost.
#[derive(Debug, Default)]
pub(super) struct LeaseState {
    inner: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    /// A [`LeaderLease`] runs for this store.
    campaigning: bool,
    /// Its handle was stopped or dropped: this process no longer writes,
    /// and the task is releasing the lease.
    stopping: bool,
    /// Our token and until when (by our clock, conservatively) the lease is
    /// ours: the moment the acquiring or renewing command was sent, plus
    /// the TTL, minus a margin for the two clocks' drift.
    token: Option<(String, Instant)>,
    /// Why the last attempt to acquire or renew failed, if it did.
    last_error: Option<String>,
}

impl LeaseState {
    /// Our token while the lease is ours.
    pub(super) fn token(&self) -> Option<String> {
        let held = lock(&self.inner);
        match &held.token {
            Some((token, until)) if !held.stopping && Instant::now() < *until => {
                Some(token.clone())
            }
            _ => None,
        }
    }

    /// [`KeyStore::is_leader`](crate::store::KeyStore::is_leader): ours,
    /// someone else's (or nobody campaigns here), or unknown because Redis
    /// cannot be reached.
    pub(super) fn is_leader(&self, store: &str) -> Result<bool, StoreError> {
        if self.token().is_some() {
            return Ok(true);
        }
        let held = lock(&self.inner);
        match &held.last_error {
            Some(err) if held.campaigning => Err(StoreError::Unavailable {
                store: store.to_owned(),
                source: err.clone().into(),
            }),
            _ => Ok(false),
        }
    }

    /// The store refused our write as fenced: the lease is not ours.
    pub(super) fn lost(&self) {
        lock(&self.inner).token = None;
    }
}

/// Campaigns for the fleet's leader lease and keeps it while this process
/// holds it: the replica that holds it leads (its rotator rotates, it
/// writes the first key and writes back a store found empty), and every
/// write is fenced by it. See the [module docs](super).
///
/// The lease is the Redis key `{prefix}:lease`, set with `NX` and a TTL
/// ([`leader_lease`](super::RedisKeyStoreBuilder::leader_lease), default
/// 10 s) to a random token. The task tries to take it at once, then every
/// third of the TTL renews it (compare-and-`PEXPIRE`) or, while another
/// process holds it, tries to take it again. When the leader dies, another
/// replica takes over within the TTL plus one renewal interval.
///
/// This process counts itself the leader only until the TTL after it sent
/// the last successful command (minus 1 % for clock drift), so a process
/// that stalls past its lease stops writing before another one can take
/// over; and should a write still be in flight, Redis refuses it
/// ([`StoreError::Fenced`]).
///
/// [`stop`](Self::stop) releases the lease at once (compare-and-delete), so
/// another replica takes over without waiting for the TTL. Dropping the
/// handle stops the task too and releases the lease if the runtime still
/// runs; otherwise the lease expires after its TTL.
#[must_use = "the lease is released when dropped: keep it for as long as this process should lead"]
pub struct LeaderLease {
    store: RedisKeyStore,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl LeaderLease {
    /// Spawns the task that campaigns for `store`'s lease. Returns once
    /// the first attempt is done: a process that starts alone leads when
    /// this returns. An attempt that fails (Redis down) is logged and tried
    /// again every third of the TTL. The lease's TTL is the store's
    /// [`leader_lease`](super::RedisKeyStoreBuilder::leader_lease).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, or if a `LeaderLease` already runs for this
    /// store (or a clone of it).
    pub async fn spawn(store: &RedisKeyStore) -> LeaderLease {
        {
            let mut held = lock(&store.inner.lease.inner);
            assert!(
                !held.campaigning,
                "a LeaderLease already runs for this RedisKeyStore"
            );
            held.campaigning = true;
            held.stopping = false;
            held.last_error = None;
        }
        let (stop, stopped) = watch::channel(false);
        let (first_tx, first_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(campaign(store.clone(), stopped, first_tx));
        let _ = first_rx.await;
        LeaderLease {
            store: store.clone(),
            stop,
            task: Some(task),
        }
    }

    /// Whether this process holds the lease now.
    pub fn is_held(&self) -> bool {
        self.store.inner.lease.token().is_some()
    }

    /// Stops campaigning and releases the lease if this process holds it
    /// (compare-and-delete: a lease another process took meanwhile is left
    /// alone); waits until done.
    pub async fn stop(mut self) {
        lock(&self.store.inner.lease.inner).stopping = true;
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for LeaderLease {
    fn drop(&mut self) {
        if self.task.is_some() {
            // From now on this process no longer writes; the task releases
            // the lease and ends (if the runtime still runs).
            lock(&self.store.inner.lease.inner).stopping = true;
            let _ = self.stop.send(true);
        }
    }
}

impl fmt::Debug for LeaderLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaderLease")
            .field("store", &self.store.inner.name)
            .field("held", &self.is_held())
            .finish_non_exhaustive()
    }
}

/// The lease task: attempt, wait a third of the TTL (or the stop signal),
/// again; on stop, release.
async fn campaign(
    store: RedisKeyStore,
    mut stopped: watch::Receiver<bool>,
    first: tokio::sync::oneshot::Sender<()>,
) {
    let ttl = store.inner.lease_ttl;
    let every = ttl / 3;
    let mut connection = None;
    let mut first = Some(first);
    loop {
        attempt(&store, &mut connection, every).await;
        if let Some(first) = first.take() {
            let _ = first.send(());
        }
        let sleep = std::pin::pin!(tokio::time::sleep(every));
        let stop = std::pin::pin!(stopped.wait_for(|stop| *stop));
        if let Either::Right(_) = select(sleep, stop).await {
            break;
        }
    }
    release(&store, &mut connection, every).await;
    let mut held = lock(&store.inner.lease.inner);
    held.campaigning = false;
    held.stopping = false;
    held.token = None;
    held.last_error = None;
}

/// A connection for the lease's commands: connect and response timeouts no
/// longer than a renewal interval.
async fn connection<'a>(
    store: &RedisKeyStore,
    slot: &'a mut Option<MultiplexedConnection>,
    every: Duration,
) -> Result<&'a mut MultiplexedConnection, redis::RedisError> {
    if slot.is_none() {
        let inner = &store.inner;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(inner.connect_timeout.min(every)))
            .set_response_timeout(Some(inner.command_timeout.min(every)));
        *slot = Some(
            inner
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await?,
        );
    }
    Ok(slot.as_mut().expect("just connected"))
}

/// Renews the lease if we hold it, else tries to take it.
async fn attempt(store: &RedisKeyStore, slot: &mut Option<MultiplexedConnection>, every: Duration) {
    let inner = &store.inner;
    let state = &inner.lease;
    let ttl = inner.lease_ttl;
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    // Redlock's allowance for the drift between our clock and Redis's.
    let drift = ttl / 100 + Duration::from_millis(2);
    let held_token = lock(&state.inner).token.as_ref().map(|(t, _)| t.clone());
    let sent = Instant::now();
    let result: Result<bool, redis::RedisError> = async {
        let con = connection(store, slot, every).await?;
        if let Some(token) = &held_token {
            let renewed: i64 = scripts::RENEW
                .key(&inner.lease_key)
                .arg(token)
                .arg(ttl_ms)
                .invoke_async(con)
                .await?;
            if renewed == 1 {
                return Ok(true);
            }
            let mut held = lock(&state.inner);
            held.token = None;
            drop(held);
            tracing::warn!(
                store = %inner.name,
                "leader lease lost: it expired or another process took it; this process stops leading"
            );
        }
        let token: String = random_bytes::<16>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let sent = Instant::now();
        let taken: Option<String> = redis::cmd("SET")
            .arg(&inner.lease_key)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .query_async(con)
            .await?;
        if taken.is_some() {
            lock(&state.inner).token = Some((token, sent + ttl - drift));
            tracing::info!(store = %inner.name, ttl = ?ttl, "leader lease acquired: this process leads the key store");
        }
        Ok(false)
    }
    .await;
    match result {
        Ok(renewed) => {
            let mut held = lock(&state.inner);
            if renewed && let Some((_, until)) = &mut held.token {
                *until = sent + ttl - drift;
            }
            if held.last_error.take().is_some() {
                drop(held);
                tracing::info!(store = %inner.name, "reached Redis again for the leader lease");
            }
        }
        Err(err) => {
            if super::is_connection_error(&err) {
                *slot = None;
            }
            let leading = state.token().is_some();
            lock(&state.inner).last_error = Some(err.to_string());
            tracing::warn!(
                store = %inner.name,
                error = %err,
                leading,
                "cannot reach Redis to renew or take the leader lease; a leader stops leading when its lease runs out"
            );
        }
    }
}

/// Compare-and-delete: releases the lease if it still holds our token.
async fn release(store: &RedisKeyStore, slot: &mut Option<MultiplexedConnection>, every: Duration) {
    let inner = &store.inner;
    let Some((token, _)) = lock(&inner.lease.inner).token.take() else {
        return;
    };
    let released: Result<i64, _> = async {
        let con = connection(store, slot, every).await?;
        scripts::RELEASE
            .key(&inner.lease_key)
            .arg(&token)
            .invoke_async(con)
            .await
    }
    .await;
    match released {
        Ok(1) => tracing::info!(store = %inner.name, "leader lease released"),
        Ok(_) => {}
        Err(err) => tracing::warn!(
            store = %inner.name,
            error = %err,
            "cannot release the leader lease; it expires after its TTL"
        ),
    }
}

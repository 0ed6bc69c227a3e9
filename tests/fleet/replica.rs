//! A replica in one process: its own store handle (own connections), its
//! lease, its registry, follower and rotator, on a runtime of its own, so
//! that a test can let it die without releasing anything.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tower_jwt_signer::registry::StoreFollower;
use tower_jwt_signer::store::redis::LeaderLease;
use tower_jwt_signer::store::{KeyStore, StoreChange, StoreLock, StoreNotifications, StoredKey};
use tower_jwt_signer::{
    Algorithm, KeyRegistry, KeyRotator, Kid, RedisKeyStore, RotationPolicy, StoreError,
};

/// A store that counts how often its lock was taken: a writer's change
/// takes it, a replica that leaves the change to the leader never does.
#[derive(Debug, Clone)]
pub(crate) struct Counting {
    pub(crate) inner: RedisKeyStore,
    pub(crate) locks: Arc<AtomicUsize>,
}

impl KeyStore for Counting {
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
        self.locks.fetch_add(1, Ordering::SeqCst);
        self.inner.lock()
    }
    fn commit(&self, change: &StoreChange) -> Result<(), StoreError> {
        self.inner.commit(change)
    }
    fn is_leader(&self) -> Result<bool, StoreError> {
        self.inner.is_leader()
    }
    fn notifications(&self) -> Option<StoreNotifications> {
        self.inner.notifications()
    }
}

pub(crate) struct Replica {
    pub(crate) store: RedisKeyStore,
    pub(crate) registry: KeyRegistry,
    pub(crate) locks: Arc<AtomicUsize>,
    runtime: Option<tokio::runtime::Runtime>,
    lease: Option<LeaderLease>,
    follower: Option<StoreFollower>,
    rotator: Option<KeyRotator>,
}

impl Replica {
    /// Starts a replica: lease, registry (first key by the leader), a
    /// follower polling every `poll` (and listening), a rotator if given a
    /// policy. A replica that does not lead waits for the leader's key.
    pub(crate) fn start(
        store: RedisKeyStore,
        poll: Duration,
        policy: Option<RotationPolicy>,
    ) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let lease = runtime.block_on(LeaderLease::spawn(&store));
        let locks = Arc::new(AtomicUsize::new(0));
        let counting = Counting {
            inner: store.clone(),
            locks: Arc::clone(&locks),
        };
        // The registry settings every test replica shares, as a fleet must:
        // tokens of 1 s and a JWKS cached for 1 s, for periods of seconds.
        let registry = KeyRegistry::builder()
            .token_ttl(Duration::from_secs(1))
            .jwks_max_age(Duration::from_secs(1))
            .store(counting)
            .generate_if_missing(Algorithm::ES256)
            .build()
            .unwrap();
        let (follower, rotator) = runtime.block_on(async {
            let follower = StoreFollower::spawn(registry.clone(), poll).unwrap();
            let rotator = policy.map(|policy| KeyRotator::spawn(registry.clone(), policy).unwrap());
            (follower, rotator)
        });
        let replica = Replica {
            store,
            registry,
            locks,
            runtime: Some(runtime),
            lease: Some(lease),
            follower: Some(follower),
            rotator,
        };
        crate::util::eventually("the replica has an active key", || {
            replica.registry.current().active().is_some()
        });
        replica
    }

    pub(crate) fn leads(&self) -> bool {
        self.lease.as_ref().is_some_and(LeaderLease::is_held)
    }

    /// Dies: every task stops at once, nothing is released (a kill -9).
    pub(crate) fn crash(mut self) {
        let runtime = self.runtime.take().unwrap();
        std::mem::forget(self.lease.take());
        std::mem::forget(self.follower.take());
        std::mem::forget(self.rotator.take());
        runtime.shutdown_background();
    }

    pub(crate) fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().unwrap()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            let (lease, follower, rotator) =
                (self.lease.take(), self.follower.take(), self.rotator.take());
            runtime.block_on(async move {
                if let Some(rotator) = rotator {
                    rotator.stop().await;
                }
                if let Some(follower) = follower {
                    follower.stop().await;
                }
                if let Some(lease) = lease {
                    lease.stop().await;
                }
            });
        }
    }
}

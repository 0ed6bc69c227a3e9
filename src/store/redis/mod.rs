//! [`RedisKeyStore`]: one key set for a fleet of gateways, in Redis
//! (feature `redis`).
//!
//! Several replicas of a gateway (a Kubernetes Deployment, a few VMs behind
//! a load balancer) share one key set: every replica signs with a key that
//! every replica's JWKS publishes, and keys rotate once for the fleet.
//!
//! * **Records.** Each key is one field of a Redis hash (kid → record). The
//!   private key is encrypted with AES-256-GCM under a key-encryption key
//!   ([`Kek`]) with a random 96-bit nonce; the associated data binds it to
//!   the fleet's prefix, the kid, the KEK's id and the record's state and
//!   times, so a record copied under another kid or into another fleet, or
//!   edited in Redis, does not decrypt. Redis sees ciphertext and public
//!   data only (kid, algorithm, state, times, KEK id). A key kept in a
//!   PKCS#11 token is a record of format 2: its
//!   [`KeyReference`](crate::keys::KeyReference) (where the key is, its
//!   public key) is sealed the same way, so it stays bound to its metadata;
//!   records of format 1 read as before.
//! * **Changes.** Every registry change is one Lua script (`EVALSHA`):
//!   fence check, version check, `HDEL`/`HSET`, `INCR` of the version and
//!   `PUBLISH` of a notification, all or nothing. A reader never sees half
//!   a change (two active keys, or none).
//! * **Leader.** A [`LeaderLease`] (a Redis key set with `NX` and a TTL,
//!   holding a random token, renewed every third of its TTL, released on
//!   shutdown by compare-and-delete) says which replica leads: only the
//!   leader rotates ([`KeyStore::is_leader`]), and every write is
//!   **fenced**: applied only if the lease still holds the writer's token,
//!   checked in the same script. A leader that stalled past its lease (a
//!   long pause, `SIGSTOP`) and wakes up cannot overwrite the new leader's
//!   change: its write is refused with [`StoreError::Fenced`] and a
//!   `tracing` warning.
//! * **Followers.** After each change the writer publishes on a channel
//!   every replica's [`StoreFollower`](crate::registry::StoreFollower)
//!   listens to ([`KeyStore::notifications`]): replicas are current within
//!   milliseconds. The follower's poll (default 5 s) covers lost messages
//!   and reconnections; give the rotation policy that poll interval
//!   ([`RotationPolicyBuilder::follower_poll_interval`](crate::rotation::RotationPolicyBuilder::follower_poll_interval)),
//!   so that a key is published on every replica before any replica signs
//!   with it.
//!
//! # Redis keys
//!
//! With the prefix `P` (default `tower-jwt-signer`), every key has the
//! hash tag `{P}`, so all of them live in one slot and the same code works
//! on Redis Cluster:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{P}:keys` | hash | kid → record (JSON; the private key encrypted) |
//! | `{P}:version` | string | a counter, incremented by every change |
//! | `{P}:lease` | string | the leader's random token, with a TTL |
//!
//! and changes are announced on the channel `{P}:changes`. Several fleets
//! share one Redis with different prefixes. Tested against Redis 7.0;
//! Valkey speaks the same protocol but is not tested here.
//!
//! # Faults
//!
//! * **Redis unreachable at start-up:** [`RedisKeyStore::connect`] retries
//!   (logged, with backoff) for [`startup_retry`](RedisKeyStoreBuilder::startup_retry)
//!   and then fails with [`StoreError::Unavailable`]: a gateway without
//!   keys would only answer 503.
//! * **Redis down while running:** every replica keeps signing with the
//!   keys it holds and keeps serving the JWKS (reloads fail and are
//!   logged); the rotator waits, with a warning each time it tries, and
//!   resumes when Redis is back. Changes are written before they are
//!   published, so no replica ever signs with a key it could not store.
//! * **Redis restarted empty** (no persistence, or `FLUSHALL`): a reload
//!   that finds the store empty publishes nothing; the leader writes back
//!   the keys it holds (see [`KeyRegistry::reload`](crate::registry::KeyRegistry::reload));
//!   no replica generates a different key, and tokens issued before keep
//!   verifying, as long as the replica that leads then has been running
//!   (see the known gaps below).
//! * **A record that cannot be decrypted or parsed** (a wrong KEK, a
//!   corrupted or moved record): the load fails with
//!   [`StoreError::CorruptRecord`] naming the kid and the reason, so a
//!   start-up stops; the record is never overwritten or deleted.
//!
//! Credentials never appear in logs, errors or `Debug`: the URL's password
//! is redacted, a [`Kek`] shows only its id.
//!
//! # Known gaps
//!
//! Redis is the one copy of the key set that outlives the processes; an
//! empty Redis is repaired only from what a running leader holds. Two
//! cases are not covered (`SECURITY.md` lists them too):
//!
//! * **A leader that starts while Redis is empty.** A `FLUSHALL` or a
//!   Redis restarted without persistence also deletes the lease, so the
//!   lead goes to whichever process takes it first. A process that has
//!   just started (a gateway restarted or scaled up at that moment, or the
//!   whole fleet restarted) holds no keys: leading an empty store, its
//!   [`generate_if_missing`](crate::registry::KeyRegistryBuilder::generate_if_missing)
//!   makes a new key and activates it at once, and the running replicas
//!   adopt the stored set. The new key signs without being prepublished
//!   (verifiers refuse its tokens until they refetch the JWKS; this
//!   crate's `RemoteJwks` does on an unknown kid, once per cooldown), and
//!   the old keys leave every JWKS while their tokens may still be valid,
//!   for up to the token lifetime. Run Redis with persistence (or a
//!   replica), and do not restart gateways while it is empty.
//! * **A flush and a change of leader in the same moment.** The leader
//!   that writes the keys back writes the set it holds. A change the
//!   previous leader committed just before the flush, which the new leader
//!   had not loaded yet (milliseconds with notifications, up to one poll
//!   interval when a notification was lost), is then undone: a next key
//!   just published is dropped (the rotator publishes another), a key just
//!   activated is next again (and activated at the rotator's next step), a
//!   key just removed is back. An
//!   [`emergency_rotate`](crate::rotation::KeyRotator::emergency_rotate)
//!   made in that moment is lost: its fresh key leaves the JWKS (its first
//!   tokens stop verifying) and, with `OldKeys::Revoke`, the revoked keys
//!   are published again; check the JWKS after an emergency rotation, and
//!   repeat it if needed.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use tower_jwt_signer::registry::StoreFollower;
//! use tower_jwt_signer::store::redis::{Kek, LeaderLease};
//! use tower_jwt_signer::{Algorithm, KeyRegistry, KeyRotator, RedisKeyStore, RotationPolicy};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Every replica runs the same code with the same KEK.
//! let kek = Kek::from_file("/etc/gateway/kek")?;
//! let store = RedisKeyStore::builder("rediss://gateway:secret@redis.internal:6379/0", kek)
//!     .prefix("orders-gateway")
//!     .build()?;
//! let connecting = store.clone();
//! tokio::task::spawn_blocking(move || connecting.connect()).await??;
//!
//! // Campaign for the lead: the replica that holds the lease rotates.
//! let lease = LeaderLease::spawn(&store).await;
//!
//! let building = store.clone();
//! let registry = tokio::task::spawn_blocking(move || {
//!     KeyRegistry::builder()
//!         .token_ttl(Duration::from_secs(60)) // the same on every replica
//!         .jwks_max_age(Duration::from_secs(300))
//!         .store(building)
//!         .generate_if_missing(Algorithm::ES256) // by the leader only
//!         .build()
//! })
//! .await??;
//! // Reload on every change notification, and every 5 s whatever happens.
//! let follower = StoreFollower::spawn(registry.clone(), Duration::from_secs(5))?;
//! // Every replica runs a rotator; only the leader's acts.
//! let policy = RotationPolicy::builder(Duration::from_secs(24 * 3600))
//!     .follower_poll_interval(follower.interval())
//!     .build()?;
//! let rotator = KeyRotator::spawn(registry.clone(), policy)?;
//!
//! // ... serve, then on shutdown:
//! rotator.stop().await;
//! follower.stop().await;
//! lease.stop().await; // released at once: another replica takes over
//! # Ok(())
//! # }
//! ```

mod kek;
mod lease;
mod notify;
mod record;
mod scripts;
mod url;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use redis::RedisError;

use super::txlock::TxLock;
use super::{KeyStore, StoreChange, StoreError, StoreLock, StoreNotifications, StoredKey};
use crate::error::ConfigError;
use crate::keys::Kid;

pub use kek::{Kek, KekBuilder};
pub use lease::LeaderLease;

use lease::LeaseState;

/// The prefix by default: `tower-jwt-signer` (keys `{tower-jwt-signer}:...`).
const DEFAULT_PREFIX: &str = "tower-jwt-signer";
/// The leader lease's TTL by default: 10 s (renewed every 3.3 s).
const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);
/// How long connecting may take by default: 2 s.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a command may take by default: 2 s.
const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long [`RedisKeyStore::connect`] retries by default: 30 s.
const DEFAULT_STARTUP_RETRY: Duration = Duration::from_secs(30);

/// The longest prefix.
const MAX_PREFIX_LEN: usize = 64;
/// No timeout, TTL or retry may be longer (one hour).
const MAX_SETTING: Duration = Duration::from_secs(3600);

/// A [`KeyStore`] in Redis, shared by a fleet of gateways. See the
/// [module docs](self).
///
/// Cloning is cheap: clones share the connection, the cache and the lease
/// state. The [`KeyStore`] operations are blocking (with connect and
/// command timeouts), as the trait asks; the registry calls them from
/// blocking threads. [`LeaderLease`] and the change notifications run as
/// tokio tasks.
#[derive(Clone)]
pub struct RedisKeyStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    /// The URL with its password redacted, and the prefix: what logs and
    /// errors name.
    name: String,
    redacted_url: String,
    prefix: String,
    keys_key: String,
    version_key: String,
    lease_key: String,
    channel: String,
    keks: Vec<Kek>,
    connect_timeout: Duration,
    command_timeout: Duration,
    startup_retry: Duration,
    lease_ttl: Duration,
    connection: Mutex<Option<redis::Connection>>,
    /// Records already decrypted, by kid: the bytes and what they hold.
    cache: Mutex<HashMap<Vec<u8>, CachedRecord>>,
    /// Writers of this process take turns; the writer reads inside its turn.
    tx: Arc<TxLock>,
    /// The version the writer loaded, checked by its commit.
    loaded_version: Mutex<Option<u64>>,
    lease: LeaseState,
}

/// A record's bytes and the key they hold.
type CachedRecord = (Vec<u8>, StoredKey);

/// Configures a [`RedisKeyStore`]; see [`RedisKeyStore::builder`]. The
/// setters only record their value; [`build`](Self::build) checks them
/// all.
#[must_use]
#[derive(Clone)]
pub struct RedisKeyStoreBuilder {
    url: String,
    prefix: String,
    /// The encrypting KEK first, then the previous ones.
    keks: Vec<Kek>,
    connect_timeout: Duration,
    command_timeout: Duration,
    startup_retry: Duration,
    lease_ttl: Duration,
    tls_root_certificates: Option<Vec<u8>>,
}

impl RedisKeyStore {
    /// A store at `url` whose records `kek` encrypts, with the default
    /// settings (prefix `tower-jwt-signer`, a 10 s leader lease, 2 s
    /// connect and command timeouts, 30 s of retries at start-up). Nothing
    /// is sent to Redis yet: call [`connect`](Self::connect) at start-up.
    ///
    /// # Errors
    ///
    /// As [`RedisKeyStoreBuilder::build`]: a [`ConfigError`] for `url`.
    pub fn new(url: impl Into<String>, kek: Kek) -> Result<Self, ConfigError> {
        Self::builder(url, kek).build()
    }

    /// A builder for a store at `url` whose records `kek` encrypts.
    ///
    /// `url` is `redis://[user:password@]host[:port][/db]`, or `rediss://`
    /// for TLS (rustls; the system's root certificates, or
    /// [`tls_root_certificates`](RedisKeyStoreBuilder::tls_root_certificates)).
    /// A user and password log in with Redis ACLs; see `SECURITY.md` for
    /// the commands the user needs. Every replica of the fleet needs the
    /// same `kek`; during a KEK rotation, give the old one with
    /// [`previous_kek`](RedisKeyStoreBuilder::previous_kek).
    pub fn builder(url: impl Into<String>, kek: Kek) -> RedisKeyStoreBuilder {
        RedisKeyStoreBuilder {
            url: url.into(),
            prefix: DEFAULT_PREFIX.to_owned(),
            keks: vec![kek],
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            startup_retry: DEFAULT_STARTUP_RETRY,
            lease_ttl: DEFAULT_LEASE_TTL,
            tls_root_certificates: None,
        }
    }

    /// Connects now, retrying with a logged backoff (100 ms, doubling, at
    /// most 2 s apart) for up to the builder's `startup_retry` while Redis
    /// cannot be reached; a refused login or a TLS failure is not retried.
    /// Call it once at start-up, before building the registry. Blocking.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] naming the store (password redacted) and
    /// the last failure.
    pub fn connect(&self) -> Result<(), StoreError> {
        let deadline = Instant::now() + self.inner.startup_retry;
        let mut delay = Duration::from_millis(100);
        let mut attempt = 1u32;
        loop {
            let result = self.with_connection(|con| redis::cmd("PING").query::<String>(con));
            let err = match result {
                Ok(_) => {
                    if attempt > 1 {
                        tracing::info!(store = %self.inner.name, attempt, "connected to Redis");
                    }
                    return Ok(());
                }
                Err(err) => err,
            };
            let retry = err.is_unavailable() && Instant::now() + delay < deadline;
            if !retry {
                tracing::error!(store = %self.inner.name, attempt, error = %err, "cannot connect to Redis; giving up");
                return Err(err);
            }
            tracing::warn!(
                store = %self.inner.name,
                attempt,
                error = %err,
                retry_in = ?delay,
                "cannot connect to Redis yet; retrying"
            );
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_secs(2));
            attempt += 1;
        }
    }

    /// Re-encrypts under the store's KEK (the one given to
    /// [`builder`](Self::builder)) every record encrypted under a
    /// [`previous_kek`](RedisKeyStoreBuilder::previous_kek): the last step
    /// of a KEK rotation (see the README). Returns how many records were
    /// rewritten. Blocking.
    ///
    /// Every KEK a record may still be encrypted under must be given. The
    /// records keep their kid, key, state and times, and the
    /// rewrite is applied only if the store has not changed since it was
    /// read (the version check), so it can never overwrite a change: unlike
    /// the registry's changes it needs no lease, and can run from any
    /// process (`signing_proxy --rewrap`).
    ///
    /// # Errors
    ///
    /// [`StoreError::CorruptRecord`] for a record no KEK opens;
    /// [`StoreError::Conflict`] if the store changed meanwhile (try again);
    /// [`StoreError::Unavailable`].
    pub fn rewrap(&self) -> Result<usize, StoreError> {
        let _turn = self.inner.tx.write();
        let (version, records) = self.read_records()?;
        let first = &self.inner.keks[0];
        let mut saves = Vec::new();
        for (field, bytes) in &records {
            let opened = record::open(
                &self.inner.prefix,
                field,
                bytes,
                &self.inner.keks,
                &self.inner.name,
            )?;
            if opened.kek != first.id() {
                saves.push((
                    field.clone(),
                    record::seal(&self.inner.prefix, &opened.key, first)?,
                ));
            }
        }
        if saves.is_empty() {
            return Ok(0);
        }
        let count = saves.len();
        self.run_commit(Mode::Rewrap, Some(version), &[], &saves)?;
        tracing::info!(store = %self.inner.name, records = count, kek = first.id(), "re-encrypted the key records under the store's key-encryption key");
        Ok(count)
    }

    /// The prefix (namespace) of this store's Redis keys.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The leader lease's TTL.
    pub fn lease_ttl(&self) -> Duration {
        self.inner.lease_ttl
    }

    /// The ids of the configured KEKs, the encrypting one first.
    pub fn kek_ids(&self) -> Vec<&str> {
        self.inner.keks.iter().map(Kek::id).collect()
    }

    /// The Redis keys this store uses: the keys hash, the version, the
    /// lease; and the notification channel.
    pub fn redis_keys(&self) -> [&str; 4] {
        [
            &self.inner.keys_key,
            &self.inner.version_key,
            &self.inner.lease_key,
            &self.inner.channel,
        ]
    }

    /// Runs `work` on the store's connection, opening it if needed. A
    /// connection-level failure drops the connection; on a connection that
    /// had been used before (Redis may have restarted since) the work is
    /// tried once more on a fresh one.
    fn with_connection<T>(
        &self,
        mut work: impl FnMut(&mut redis::Connection) -> Result<T, RedisError>,
    ) -> Result<T, StoreError> {
        let mut slot = lock(&self.inner.connection);
        let reused = slot.is_some();
        for attempt in 0..2 {
            if slot.is_none() {
                *slot = Some(self.open_connection()?);
            }
            let con = slot.as_mut().expect("just opened");
            match work(con) {
                Ok(value) => return Ok(value),
                Err(err) if is_connection_error(&err) => {
                    *slot = None;
                    if attempt == 0 && reused {
                        continue;
                    }
                    return Err(self.unavailable(err));
                }
                Err(err) => return Err(self.failed(err)),
            }
        }
        unreachable!("the loop returns")
    }

    fn open_connection(&self) -> Result<redis::Connection, StoreError> {
        let inner = &self.inner;
        let con = inner
            .client
            .get_connection_with_timeout(inner.connect_timeout)
            .map_err(|err| self.unavailable(err))?;
        con.set_read_timeout(Some(inner.command_timeout))
            .and_then(|()| con.set_write_timeout(Some(inner.command_timeout)))
            .map_err(|err| self.unavailable(err))?;
        Ok(con)
    }

    fn unavailable(&self, err: RedisError) -> StoreError {
        StoreError::Unavailable {
            store: self.inner.name.clone(),
            source: Box::new(err),
        }
    }

    fn failed(&self, err: RedisError) -> StoreError {
        if is_connection_error(&err) {
            return self.unavailable(err);
        }
        StoreError::Other(format!("key store {}: Redis answered: {err}", self.inner.name).into())
    }

    /// The version and every record, raw: `GET` then `HGETALL`, pipelined.
    /// (A change between the two shows as a newer key set under an older
    /// version: the commit's version check then refuses, never the reverse.)
    #[allow(clippy::type_complexity)]
    fn read_records(&self) -> Result<(u64, Vec<(Vec<u8>, Vec<u8>)>), StoreError> {
        let inner = &self.inner;
        let (version, records): (Option<u64>, HashMap<Vec<u8>, Vec<u8>>) =
            self.with_connection(|con| {
                redis::pipe()
                    .cmd("GET")
                    .arg(&inner.version_key)
                    .cmd("HGETALL")
                    .arg(&inner.keys_key)
                    .query(con)
            })?;
        let mut records: Vec<_> = records.into_iter().collect();
        records.sort();
        Ok((version.unwrap_or(0), records))
    }

    /// Runs the commit script. `saves` are kid/record pairs.
    fn run_commit(
        &self,
        mode: Mode,
        expected: Option<u64>,
        removals: &[&Kid],
        saves: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<u64, StoreError> {
        let inner = &self.inner;
        let token = match mode {
            Mode::Lease => match inner.lease.token() {
                Some(token) => token,
                None => {
                    return Err(StoreError::NotLeader {
                        store: inner.name.clone(),
                    });
                }
            },
            Mode::Rewrap => String::new(),
        };
        let reply: Vec<redis::Value> = self.with_connection(|con| {
            let mut invocation = scripts::COMMIT.prepare_invoke();
            invocation
                .key(&inner.keys_key)
                .key(&inner.version_key)
                .key(&inner.lease_key)
                .arg(mode.as_str())
                .arg(&token)
                .arg(expected.map_or_else(String::new, |v| v.to_string()))
                .arg(&inner.channel)
                .arg(removals.len());
            for kid in removals {
                invocation.arg(kid.as_str());
            }
            for (kid, record) in saves {
                invocation.arg(kid).arg(record);
            }
            invocation.invoke(con)
        })?;
        let int = |value: Option<&redis::Value>| match value {
            Some(redis::Value::Int(n)) => u64::try_from(*n).ok(),
            _ => None,
        };
        match (int(reply.first()), reply.get(1)) {
            (Some(1), version) => Ok(int(version).unwrap_or(0)),
            (Some(0), Some(redis::Value::BulkString(what))) if what == b"fenced" => {
                inner.lease.lost();
                tracing::warn!(
                    store = %inner.name,
                    "write refused: the leader lease no longer holds this process's token (it stalled past its lease and another process leads); nothing was written"
                );
                Err(StoreError::Fenced {
                    store: inner.name.clone(),
                })
            }
            (Some(0), Some(redis::Value::BulkString(what))) if what == b"conflict" => {
                let found = int(reply.get(2)).unwrap_or(0);
                let loaded = expected.unwrap_or(0);
                tracing::warn!(
                    store = %inner.name,
                    loaded,
                    found,
                    "write refused: the key store changed since this change was loaded; nothing was written"
                );
                Err(StoreError::Conflict {
                    store: inner.name.clone(),
                    loaded,
                    found,
                })
            }
            _ => Err(StoreError::Other(
                format!("key store {}: unexpected reply to a commit", inner.name).into(),
            )),
        }
    }
}

/// Who may write: the lease holder, or a rewrap (version check only).
#[derive(Clone, Copy)]
enum Mode {
    Lease,
    Rewrap,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Lease => "lease",
            Mode::Rewrap => "rewrap",
        }
    }
}

/// Whether `err` means the connection is unusable (so the store is
/// unavailable) rather than a refusal by the server.
fn is_connection_error(err: &RedisError) -> bool {
    err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_unrecoverable_error()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its value consistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl KeyStore for RedisKeyStore {
    fn load(&self) -> Result<Vec<StoredKey>, StoreError> {
        let reading = self.inner.tx.read();
        let (version, records) = self.read_records()?;
        let mut cache = lock(&self.inner.cache);
        let mut keys = Vec::with_capacity(records.len());
        for (field, bytes) in &records {
            if let Some((cached, key)) = cache.get(field)
                && cached == bytes
            {
                keys.push(key.clone());
                continue;
            }
            let opened = record::open(
                &self.inner.prefix,
                field,
                bytes,
                &self.inner.keks,
                &self.inner.name,
            )?;
            cache.insert(field.clone(), (bytes.clone(), opened.key.clone()));
            keys.push(opened.key);
        }
        cache.retain(|field, _| records.iter().any(|(f, _)| f == field));
        if reading.is_none() {
            // The writer's load: its commit checks this version.
            *lock(&self.inner.loaded_version) = Some(version);
        }
        Ok(keys)
    }

    fn save(&self, key: &StoredKey) -> Result<(), StoreError> {
        self.commit(&StoreChange::new().save(key.clone(), None))
    }

    fn remove(&self, kid: &Kid) -> Result<(), StoreError> {
        let _turn = self.inner.tx.write_if_not_held();
        self.run_commit(Mode::Lease, None, &[kid], &[]).map(drop)
    }

    fn lock(&self) -> Result<StoreLock, StoreError> {
        let turn = self.inner.tx.write();
        // Refused before anything is loaded or generated: only the leader
        // writes (and its commit is fenced in Redis all the same).
        if self.inner.lease.token().is_none() {
            return Err(StoreError::NotLeader {
                store: self.inner.name.clone(),
            });
        }
        *lock(&self.inner.loaded_version) = None;
        Ok(StoreLock::new(turn))
    }

    /// One Lua script: fence check, version check (against the load made
    /// under the same [`lock`](KeyStore::lock), if any), `HDEL`/`HSET`,
    /// `INCR` version, `PUBLISH`; all or nothing.
    fn commit(&self, change: &StoreChange) -> Result<(), StoreError> {
        let turn = self.inner.tx.write_if_not_held();
        let first = &self.inner.keks[0];
        let mut saves = Vec::with_capacity(change.saves().len());
        for save in change.saves() {
            saves.push((
                save.key().kid().as_str().as_bytes().to_vec(),
                record::seal(&self.inner.prefix, save.key(), first)?,
            ));
        }
        let removals: Vec<&Kid> = change.removals().iter().map(StoredKey::kid).collect();
        // Inside a registry change (this thread holds the turn): the
        // version its load saw. A commit made on its own checks none.
        let expected = match turn {
            None => lock(&self.inner.loaded_version).take(),
            Some(_) => None,
        };
        self.run_commit(Mode::Lease, expected, &removals, &saves)
            .map(drop)
    }

    fn is_leader(&self) -> Result<bool, StoreError> {
        self.inner.lease.is_leader(&self.inner.name)
    }

    fn notifications(&self) -> Option<StoreNotifications> {
        notify::spawn(self)
    }
}

impl fmt::Debug for RedisKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("RedisKeyStore")
            .field("url", &inner.redacted_url)
            .field("prefix", &inner.prefix)
            .field("keks", &self.kek_ids())
            .field("lease_ttl", &inner.lease_ttl)
            .field("leader", &inner.lease.token().is_some())
            .finish_non_exhaustive()
    }
}

impl RedisKeyStoreBuilder {
    /// The namespace of this fleet's Redis keys (default
    /// `tower-jwt-signer`): 1 to 64 characters among `A-Z a-z 0-9 - _ . :`.
    /// Fleets with different prefixes share one Redis without seeing each
    /// other's keys, and a record copied from one to the other does not
    /// decrypt.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Adds a key-encryption key that decrypts but no longer encrypts
    /// (repeatable; none by default). To rotate the KEK: give every replica
    /// the new KEK to [`RedisKeyStore::builder`] and the old one here, run
    /// [`RedisKeyStore::rewrap`], then drop the old one.
    pub fn previous_kek(mut self, kek: Kek) -> Self {
        self.keks.push(kek);
        self
    }

    /// How long connecting may take (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a command may take, read and write (default 2 s).
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// How long [`RedisKeyStore::connect`] retries while Redis cannot be
    /// reached (default 30 s).
    pub fn startup_retry(mut self, retry: Duration) -> Self {
        self.startup_retry = retry;
        self
    }

    /// The leader lease's TTL (default 10 s): it is
    /// renewed every third of it, and when the leader dies another replica
    /// takes over within the TTL plus one renewal interval.
    pub fn leader_lease(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// Trusts these root certificates (PEM) for a `rediss://` URL instead
    /// of the system's: a Redis with a private CA.
    pub fn tls_root_certificates(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_root_certificates = Some(pem.into());
        self
    }

    /// Checks the settings and builds the store. Nothing is sent to Redis
    /// yet: call [`RedisKeyStore::connect`] at start-up.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for the first refused setting, in this order:
    /// `url` (not a `redis://` or `rediss://` URL; shown with its password
    /// redacted), `prefix`, `previous_kek` (a KEK given twice),
    /// `connect_timeout`, `command_timeout`, `startup_retry`,
    /// `leader_lease` (zero or longer than an hour; the lease at least
    /// 1 s), `tls_root_certificates` (without `rediss://`), and `url` again
    /// if the `redis` crate cannot use it.
    pub fn build(self) -> Result<RedisKeyStore, ConfigError> {
        let redacted_url = url::redact(&self.url);
        let scheme = self.url.split_once("://").map(|(scheme, _)| scheme);
        let tls = match scheme {
            Some("redis") => false,
            Some("rediss") => true,
            _ => {
                return Err(ConfigError::new(
                    "url",
                    &redacted_url,
                    "a Redis URL starts with redis:// (or rediss:// for TLS)",
                ));
            }
        };
        check_prefix(&self.prefix)?;
        for (i, kek) in self.keks.iter().enumerate() {
            if self.keks[..i].iter().any(|k| k.id() == kek.id()) {
                return Err(ConfigError::new(
                    "previous_kek",
                    kek.id(),
                    "the same key-encryption key is given twice (as the encrypting one, or as a previous one)",
                ));
            }
        }
        for (setting, value, min) in [
            ("connect_timeout", self.connect_timeout, Duration::ZERO),
            ("command_timeout", self.command_timeout, Duration::ZERO),
            ("startup_retry", self.startup_retry, Duration::ZERO),
            ("leader_lease", self.lease_ttl, Duration::from_millis(999)),
        ] {
            if value <= min || value > MAX_SETTING {
                return Err(ConfigError::new(
                    setting,
                    value,
                    if min.is_zero() {
                        "must be more than zero and at most an hour"
                    } else {
                        "must be at least 1 s and at most an hour"
                    },
                ));
            }
        }
        let client = match (&self.tls_root_certificates, tls) {
            (Some(_), false) => {
                return Err(ConfigError::without_value(
                    "tls_root_certificates",
                    "root certificates need a rediss:// URL",
                ));
            }
            (Some(pem), true) => redis::Client::build_with_tls(
                self.url.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
            (None, _) => redis::Client::open(self.url.as_str()),
        }
        .map_err(|err| {
            // The message never holds the URL; its kind says what is wrong.
            ConfigError::new(
                "url",
                &redacted_url,
                format!("not a usable Redis URL ({:?})", err.kind()),
            )
        })?;
        let tag = format!("{{{}}}", self.prefix);
        Ok(RedisKeyStore {
            inner: Arc::new(Inner {
                client,
                name: format!("{redacted_url} {tag}"),
                redacted_url,
                keys_key: format!("{tag}:keys"),
                version_key: format!("{tag}:version"),
                lease_key: format!("{tag}:lease"),
                channel: format!("{tag}:changes"),
                prefix: self.prefix,
                keks: self.keks,
                connect_timeout: self.connect_timeout,
                command_timeout: self.command_timeout,
                startup_retry: self.startup_retry,
                lease_ttl: self.lease_ttl,
                connection: Mutex::new(None),
                cache: Mutex::new(HashMap::new()),
                tx: Arc::new(TxLock::default()),
                loaded_version: Mutex::new(None),
                lease: LeaseState::default(),
            }),
        })
    }
}

impl fmt::Debug for RedisKeyStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisKeyStoreBuilder")
            .field("url", &url::redact(&self.url))
            .field("prefix", &self.prefix)
            .field("keks", &self.keks)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("startup_retry", &self.startup_retry)
            .field("leader_lease", &self.lease_ttl)
            .field(
                "tls_root_certificates",
                &self.tls_root_certificates.is_some(),
            )
            .finish()
    }
}

fn check_prefix(prefix: &str) -> Result<(), ConfigError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
    if prefix.is_empty() || prefix.len() > MAX_PREFIX_LEN || !prefix.chars().all(allowed) {
        return Err(ConfigError::new(
            "prefix",
            prefix,
            "a prefix is 1 to 64 characters among A-Z a-z 0-9 - _ . : (it becomes the hash tag {prefix})",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder() -> RedisKeyStoreBuilder {
        RedisKeyStore::builder("redis://gw:s3cret@127.0.0.1:6379/0", Kek::generate())
    }

    #[test]
    fn settings_that_cannot_work_are_refused_and_the_password_never_shows() {
        let refused = |b: RedisKeyStoreBuilder| b.build().unwrap_err();
        let err = refused(RedisKeyStore::builder(
            "http://gw:s3cret@host/",
            Kek::generate(),
        ));
        assert_eq!(err.setting(), "url");
        assert!(!err.to_string().contains("s3cret"), "{err}");
        assert!(err.to_string().contains("gw:***@host"), "{err}");
        let kek = Kek::generate();
        let err =
            refused(RedisKeyStore::builder("redis://127.0.0.1/", kek.clone()).previous_kek(kek));
        assert_eq!(err.setting(), "previous_kek");
        let (old, older) = (Kek::generate(), Kek::generate());
        let err = refused(
            builder()
                .previous_kek(old.clone())
                .previous_kek(older)
                .previous_kek(old),
        );
        assert_eq!(err.setting(), "previous_kek");
        assert!(
            RedisKeyStore::new("redis://127.0.0.1/", Kek::generate()).is_ok(),
            "the defaults"
        );
        for bad in ["", "{x}", "a b", &"x".repeat(65)] {
            assert_eq!(
                refused(builder().prefix(bad)).setting(),
                "prefix",
                "{bad:?}"
            );
        }
        assert_eq!(
            refused(builder().leader_lease(Duration::from_millis(500))).setting(),
            "leader_lease"
        );
        assert_eq!(
            refused(builder().command_timeout(Duration::ZERO)).setting(),
            "command_timeout"
        );
        assert_eq!(
            refused(builder().tls_root_certificates(b"pem".to_vec())).setting(),
            "tls_root_certificates"
        );
        let store = builder().prefix("fleet-a").build().unwrap();
        assert_eq!(
            store.redis_keys(),
            [
                "{fleet-a}:keys",
                "{fleet-a}:version",
                "{fleet-a}:lease",
                "{fleet-a}:changes"
            ]
        );
        let debug = format!("{store:?} {:?}", builder());
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("redis://gw:***@127.0.0.1:6379/0"), "{debug}");
    }

    #[test]
    fn a_store_that_holds_no_lease_leads_nothing_and_refuses_to_write() {
        let store = builder().build().unwrap();
        assert!(!store.is_leader().unwrap());
        let err = store.lock().unwrap_err();
        assert!(matches!(err, StoreError::NotLeader { .. }), "{err}");
        assert!(err.is_not_leader());
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
}

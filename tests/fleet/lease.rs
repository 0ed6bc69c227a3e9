//! The leader lease: one replica leads, another takes over when it stops
//! or dies, a stalled leader's write is fenced, and only the leader's
//! rotator acts.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tower_jwt_signer::store::KeyStore;
use tower_jwt_signer::store::redis::LeaderLease;
use tower_jwt_signer::{
    Algorithm, KeyRegistry, RegistryError, RotationPolicy, SigningKey, StoreError,
};

use crate::redis_server::RedisServer;
use crate::replica::Replica;
use crate::util::{self, eventually, store_with};

fn lease_of(
    ttl: Duration,
) -> impl FnOnce(
    tower_jwt_signer::store::redis::RedisKeyStoreBuilder,
) -> tower_jwt_signer::store::redis::RedisKeyStoreBuilder {
    move |builder| builder.leader_lease(ttl)
}

#[test]
fn one_replica_leads_and_another_takes_over_when_it_stops_or_dies() {
    let server = RedisServer::start();
    let ttl = Duration::from_secs(2);
    let poll = Duration::from_secs(3600);
    let first = Replica::start(store_with(&server, "lead", lease_of(ttl)), poll, None);
    let second = Replica::start(store_with(&server, "lead", lease_of(ttl)), poll, None);
    assert!(first.leads());
    assert!(!second.leads());
    assert!(!second.store.is_leader().unwrap());
    assert_eq!(
        second.registry.current().jwks_bytes(),
        first.registry.current().jwks_bytes(),
        "the second replica took the first one's key"
    );
    // A clean stop releases the lease: the second takes over at its next
    // attempt, without waiting for the TTL.
    drop(first);
    eventually("the second replica leads", || second.leads());
    // A crash releases nothing: a third takes over once the TTL has run.
    let third = Replica::start(store_with(&server, "lead", lease_of(ttl)), poll, None);
    assert!(!third.leads());
    second.crash();
    let held: Option<String> = server.cmd(&["GET", "{lead}:lease"]);
    assert!(held.is_some(), "the dead leader's lease is still there");
    eventually("the third replica takes over after the TTL", || {
        third.leads()
    });
}

#[test]
fn a_stalled_leader_is_fenced_and_the_new_leaders_change_stands() {
    let logs = util::logs();
    let server = RedisServer::start();
    // A long TTL: the stalled leader still believes it leads.
    let ttl = Duration::from_secs(60);
    let stalled = store_with(&server, "fence", lease_of(ttl));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let lease = runtime.block_on(LeaderLease::spawn(&stalled));
    let old = KeyRegistry::builder()
        .store(stalled.clone())
        .generate_if_missing(Algorithm::ES256)
        .build()
        .unwrap();
    assert!(lease.is_held());
    // Its lease runs out in Redis while it sleeps; another replica takes it.
    let _: i64 = server.cmd(&["DEL", "{fence}:lease"]);
    let new_store = store_with(&server, "fence", lease_of(ttl));
    let new_lease = runtime.block_on(LeaderLease::spawn(&new_store));
    assert!(new_lease.is_held());
    let new = KeyRegistry::builder().store(new_store).build().unwrap();
    let next = new
        .rotate_to(
            SigningKey::generate(Algorithm::ES256).unwrap(),
            Duration::from_secs(60),
        )
        .unwrap();
    let stored: std::collections::HashMap<Vec<u8>, Vec<u8>> =
        server.cmd(&["HGETALL", "{fence}:keys"]);

    // The stalled leader wakes up and writes: refused, atomically.
    assert!(stalled.is_leader().unwrap(), "it still believes it leads");
    let err = old
        .rotate_to(
            SigningKey::generate(Algorithm::ES256).unwrap(),
            Duration::from_secs(60),
        )
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::Store(StoreError::Fenced { .. })),
        "{err}"
    );
    let after: std::collections::HashMap<Vec<u8>, Vec<u8>> =
        server.cmd(&["HGETALL", "{fence}:keys"]);
    assert_eq!(after, stored, "the new leader's change stands");
    assert_eq!(new.current().active().unwrap().kid(), &next);
    assert!(!stalled.is_leader().unwrap(), "it knows now");
    let port = server.port().to_string();
    assert_eq!(
        logs.lines_with(&[&port, "write refused", "leader lease"])
            .len(),
        1,
        "{}",
        logs.all()
    );
    // Its next change is refused before anything is sent.
    let err = old.rotate(Duration::from_secs(60)).unwrap_err();
    assert!(
        matches!(err, RegistryError::Store(StoreError::NotLeader { .. })),
        "{err}"
    );
    runtime.block_on(async {
        new_lease.stop().await;
        lease.stop().await;
    });
}

#[test]
fn only_the_leaders_rotator_acts_and_every_replica_follows() {
    let server = RedisServer::start();
    let policy = || {
        RotationPolicy::builder(Duration::from_secs(2))
            .verifier_leeway(Duration::from_secs(1))
            .prepublish(Duration::from_millis(1000))
            .follower_poll_interval(Duration::from_millis(500))
            .build()
            .unwrap()
    };
    let poll = Duration::from_millis(500);
    let leader = Replica::start(util::store(&server, "rotate"), poll, Some(policy()));
    let follower = Replica::start(util::store(&server, "rotate"), poll, Some(policy()));
    let first = leader.registry.current().active().unwrap().kid().clone();
    eventually("two rotations", || {
        let active = follower.registry.current().active().unwrap().kid().clone();
        active != first && leader.registry.current().keys().len() >= 3
    });
    assert!(leader.locks.load(Ordering::SeqCst) > 0);
    assert_eq!(
        follower.locks.load(Ordering::SeqCst),
        0,
        "the follower's rotator never started a change"
    );
}

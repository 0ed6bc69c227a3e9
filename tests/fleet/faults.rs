//! Faults: Redis down (replicas keep signing, rotation waits with a
//! warning each time and resumes), Redis flushed or restarted empty (the
//! leader writes back the keys it holds, no active key changes).

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use tower_jwt_signer::RotationPolicy;

use crate::redis_server::RedisServer;
use crate::replica::Replica;
use crate::util::{self, eventually, store_with};

fn stored_kids(server: &RedisServer, prefix: &str) -> BTreeSet<String> {
    let records: HashMap<String, String> = server.cmd(&["HGETALL", &format!("{{{prefix}}}:keys")]);
    records.into_keys().collect()
}

/// Every replica has an active key that signs and that its JWKS publishes.
fn all_sign(replicas: &[&Replica]) {
    for replica in replicas {
        let snapshot = replica.registry.current();
        let active = snapshot.active().expect("an active key");
        active.backend().sign(b"payload").expect("it signs");
        let jwks = String::from_utf8(snapshot.jwks_bytes().to_vec()).unwrap();
        assert!(jwks.contains(active.kid().as_str()), "{jwks}");
    }
}

#[test]
fn while_redis_is_down_replicas_keep_signing_and_rotation_waits_then_resumes() {
    let logs = util::logs();
    let mut server = RedisServer::start();
    let policy = || {
        RotationPolicy::builder(Duration::from_secs(2))
            .verifier_leeway(Duration::from_secs(1))
            .prepublish(Duration::from_secs(1))
            .follower_poll_interval(Duration::from_millis(300))
            .retry_after(Duration::from_millis(300))
            .build()
            .unwrap()
    };
    let open = || {
        store_with(&server, "down", |b| {
            b.leader_lease(Duration::from_secs(1))
                .connect_timeout(Duration::from_millis(300))
                .command_timeout(Duration::from_millis(300))
        })
    };
    let poll = Duration::from_millis(300);
    let leader = Replica::start(open(), poll, Some(policy()));
    let follower = Replica::start(open(), poll, Some(policy()));
    let first = leader.registry.current().active().unwrap().kid().clone();
    eventually("a first rotation", || {
        follower.registry.current().active().unwrap().kid() != &first
    });

    server.kill();
    let port = server.port().to_string();
    let before = leader.registry.current().active().unwrap().kid().clone();
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(4) {
        all_sign(&[&leader, &follower]);
        std::thread::sleep(Duration::from_millis(50));
    }
    let waits = logs.lines_with(&[&port, "rotation waits"]);
    assert!(
        waits.len() >= 2,
        "a warning each time the rotator tries: {}",
        logs.all()
    );

    server.restart();
    let during = leader.registry.current().active().unwrap().kid().clone();
    eventually("the keys are written back and rotation resumes", || {
        all_sign(&[&leader, &follower]);
        let stored = stored_kids(&server, "down");
        let active = follower.registry.current().active().unwrap().kid().clone();
        !stored.is_empty() && active != during && stored.contains(active.as_str())
    });
    let _ = before;
}

#[test]
fn a_flushed_or_empty_restarted_redis_gets_the_same_keys_back_and_no_active_key_changes() {
    let mut server = RedisServer::start();
    // Nothing rotates during the test: any change of the key set would be
    // a replica replacing keys it should have written back.
    let policy = || {
        RotationPolicy::builder(Duration::from_secs(3600))
            .follower_poll_interval(Duration::from_millis(200))
            .retry_after(Duration::from_millis(200))
            .build()
            .unwrap()
    };
    let open = || store_with(&server, "empty", |b| b.leader_lease(Duration::from_secs(1)));
    let poll = Duration::from_millis(200);
    let replicas = [
        Replica::start(open(), poll, Some(policy())),
        Replica::start(open(), poll, Some(policy())),
        Replica::start(open(), poll, Some(policy())),
    ];
    assert!(replicas[0].leads(), "the first replica started leads");
    replicas[0]
        .registry
        .add_next(
            tower_jwt_signer::SigningKey::generate(tower_jwt_signer::Algorithm::ES256).unwrap(),
        )
        .unwrap();
    let jwks = replicas[0].registry.current().jwks_bytes().clone();
    eventually("every replica has the next key", || {
        replicas
            .iter()
            .all(|r| r.registry.current().jwks_bytes() == &jwks)
    });
    let kids = stored_kids(&server, "empty");
    assert_eq!(kids.len(), 2, "the active key and its next");
    let unchanged = || {
        for replica in &replicas {
            assert_eq!(replica.registry.current().jwks_bytes(), &jwks);
        }
    };

    let _: String = server.cmd(&["FLUSHALL"]);
    eventually("the keys are written back after FLUSHALL", || {
        unchanged();
        stored_kids(&server, "empty") == kids
    });

    server.kill();
    std::thread::sleep(Duration::from_millis(500));
    unchanged();
    server.restart();
    eventually("the keys are written back after an empty restart", || {
        unchanged();
        stored_kids(&server, "empty") == kids
    });
    // And they stay: every replica keeps the same JWKS a while longer.
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(1) {
        unchanged();
        std::thread::sleep(Duration::from_millis(50));
    }
}

//! Followers: pub/sub brings each change at once, the poll covers lost
//! notifications, and a follower subscribes again after Redis restarts.

use std::time::Duration;

use tower_jwt_signer::registry::StoreFollower;
use tower_jwt_signer::{Algorithm, KeyRegistry, SigningKey};

use crate::redis_server::RedisServer;
use crate::replica::Replica;
use crate::util::{eventually, store};

/// Far longer than any test: only a notification can bring a change.
const NO_POLL: Duration = Duration::from_secs(3600);

fn rotate(registry: &KeyRegistry) {
    registry
        .rotate_to(
            SigningKey::generate(Algorithm::ES256).unwrap(),
            Duration::from_secs(60),
        )
        .unwrap();
}

#[test]
fn pub_sub_brings_every_change_to_every_follower_without_a_poll() {
    let server = RedisServer::start();
    let leader = Replica::start(store(&server, "pubsub"), NO_POLL, None);
    let followers: Vec<Replica> = (0..3)
        .map(|_| Replica::start(store(&server, "pubsub"), NO_POLL, None))
        .collect();
    for round in 0..5 {
        rotate(&leader.registry);
        let jwks = leader.registry.current().jwks_bytes().clone();
        for follower in &followers {
            eventually(&format!("rotation {round} reaches a follower"), || {
                follower.registry.current().jwks_bytes() == &jwks
            });
        }
    }
}

#[test]
fn polling_alone_brings_the_change_too() {
    let server = RedisServer::start();
    let leader = Replica::start(store(&server, "polling"), NO_POLL, None);
    let registry = KeyRegistry::builder()
        .store(store(&server, "polling"))
        .build()
        .unwrap();
    let _follower = leader.runtime().block_on(async {
        StoreFollower::builder(registry.clone(), Duration::from_millis(100))
            .notifications(false)
            .spawn()
            .unwrap()
    });
    rotate(&leader.registry);
    let jwks = leader.registry.current().jwks_bytes().clone();
    eventually("the poll brings the rotation", || {
        registry.current().jwks_bytes() == &jwks
    });
}

#[test]
fn followers_subscribe_again_after_redis_restarts() {
    let mut server = RedisServer::start();
    let replicas = [
        Replica::start(store(&server, "again"), NO_POLL, None),
        Replica::start(store(&server, "again"), NO_POLL, None),
    ];
    server.restart();
    // Whichever replica takes the lease in the empty Redis makes a change
    // (which writes the keys back); it reaches the other one through its
    // new subscription.
    let mut writer = None;
    eventually("a replica leads again and makes a change", || {
        writer = replicas.iter().position(|replica| {
            replica.leads()
                && replica
                    .registry
                    .add_next(SigningKey::generate(Algorithm::ES256).unwrap())
                    .is_ok()
        });
        writer.is_some()
    });
    let writer = writer.unwrap();
    let jwks = replicas[writer].registry.current().jwks_bytes().clone();
    eventually("the other replica hears of it", || {
        replicas[1 - writer].registry.current().jwks_bytes() == &jwks
    });
}

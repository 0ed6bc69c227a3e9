//! Several registries on one key directory: a replica following the
//! directory sees the writer's rotations within its poll interval and
//! publishes the very same JWKS; two writers with their own rotators do
//! not rotate twice.

use std::path::Path;
use std::time::Duration;

use crate::support::lifecycle::{published_kids, sign, verify_with_jwks};
use tower_jwt_signer::clock::Clock;
use tower_jwt_signer::registry::{KeyState, StoreFollower};
use tower_jwt_signer::rotation::OldKeys;
use tower_jwt_signer::{
    Algorithm, DirKeyStore, KeyRegistry, KeyRotator, RegistryError, RotationPolicy, StoreError,
};

const PERIOD: Duration = Duration::from_secs(3600);
const POLL: Duration = Duration::from_secs(5);
const TTL: u64 = 60;
const LEEWAY: u64 = 60;

fn policy() -> RotationPolicy {
    RotationPolicy::builder(PERIOD)
        .verifier_leeway(Duration::from_secs(LEEWAY))
        .follower_poll_interval(POLL)
        .build()
        .unwrap()
}

fn open(dir: &Path, clock: &Clock, create: bool) -> KeyRegistry {
    let mut builder = KeyRegistry::builder()
        .clock(clock.clone())
        .store(DirKeyStore::builder(dir).create(create).open().unwrap());
    if create {
        builder = builder.generate_if_missing(Algorithm::ES256);
    }
    builder.build().unwrap()
}

async fn settle() {
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_replica_sees_each_rotation_within_its_poll_interval() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let clock = Clock::tokio();
    let writer = open(&dir, &clock, true);
    let replica = open(&dir, &clock, false);
    assert_eq!(replica.current().etag(), writer.current().etag());
    let rotator = KeyRotator::spawn(writer.clone(), policy()).unwrap();
    let follower = StoreFollower::spawn(replica.clone(), POLL).unwrap();
    settle().await;

    // A rotation by hand: the next key reaches the replica within POLL.
    let scheduled = rotator.rotate_now().await.unwrap();
    assert!(replica.current().get(scheduled.kid()).is_none());
    tokio::time::sleep(POLL).await;
    settle().await;
    let seen = replica.current();
    assert_eq!(seen.get(scheduled.kid()).unwrap().state(), KeyState::Next);
    // Not only the same keys: the same bytes and ETag, so verifiers that
    // reach either process see one JWKS.
    assert_eq!(seen.jwks_bytes(), writer.current().jwks_bytes());
    assert_eq!(seen.etag(), writer.current().etag());

    // Its activation, too.
    tokio::time::sleep(rotator.prepublish()).await;
    assert_eq!(writer.current().active().unwrap().kid(), scheduled.kid());
    tokio::time::sleep(POLL).await;
    settle().await;
    assert_eq!(replica.current().active().unwrap().kid(), scheduled.kid());

    // An emergency revocation: the replica stops signing with the old key
    // within POLL.
    let old = replica.current().active().unwrap().kid().clone();
    let new = rotator.emergency_rotate(OldKeys::Revoke).await.unwrap();
    tokio::time::sleep(POLL).await;
    settle().await;
    let seen = replica.current();
    assert_eq!(seen.active().unwrap().kid(), &new);
    assert!(seen.get(&old).is_none());
    assert_eq!(seen.etag(), writer.current().etag());

    rotator.stop().await;
    follower.stop().await;
}

#[tokio::test(start_paused = true)]
async fn tokens_a_replica_signs_verify_everywhere_for_their_whole_life() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let clock = Clock::tokio();
    let writer = open(&dir, &clock, true);
    let replica = open(&dir, &clock, false);
    let rotator = KeyRotator::spawn(writer.clone(), policy()).unwrap();
    let start = clock.now();
    // The worst phase: the replica polls 4 s after each activation, so it
    // signs with the old key for 4 s after the writer switched.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let follower = StoreFollower::spawn(replica.clone(), POLL).unwrap();
    let mut lagged = Duration::ZERO;
    let mut live: Vec<(String, String, u64)> = Vec::new();
    let mut kids = Vec::new();
    let run = async {
        while clock.now() < start + PERIOD * 3 + Duration::from_secs(300) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = clock.unix_seconds();
            let (token, kid) = sign(&replica.current(), now, TTL);
            if writer.current().active().unwrap().kid().as_str() != kid {
                lagged += Duration::from_secs(1);
            }
            if kids.last() != Some(&kid) {
                kids.push(kid.clone());
            }
            live.push((token, kid.clone(), now + TTL));
            live.retain(|(_, _, exp)| exp + LEEWAY > now);
            // Every live token of the replica verifies against the JWKS of
            // the writer and of the replica (one token per key is enough:
            // what matters is that the key is published).
            let mut checked = Vec::new();
            for (token, kid, _) in &live {
                if checked.contains(&kid) {
                    continue;
                }
                checked.push(kid);
                for jwks in [writer.current(), replica.current()] {
                    verify_with_jwks(token, jwks.jwks_bytes()).unwrap_or_else(|err| {
                        panic!("at +{}s: {err}", now - lifecycle_secs(start))
                    });
                }
            }
        }
    };
    tokio::time::timeout(PERIOD * 4, run).await.unwrap();
    assert_eq!(kids.len(), 4, "three rotations seen by the replica");
    // The replica did sign with an old key after the writer switched.
    assert!(lagged >= Duration::from_secs(9), "{lagged:?}");
    rotator.stop().await;
    follower.stop().await;
}

fn lifecycle_secs(time: std::time::SystemTime) -> u64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(start_paused = true)]
async fn two_writers_with_rotators_rotate_once_per_period() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let clock = Clock::tokio();
    let a = open(&dir, &clock, true);
    let b = open(&dir, &clock, false);
    let rotators = [
        KeyRotator::spawn(a.clone(), policy()).unwrap(),
        KeyRotator::spawn(b.clone(), policy()).unwrap(),
    ];
    let followers = [
        StoreFollower::spawn(a.clone(), POLL).unwrap(),
        StoreFollower::spawn(b.clone(), POLL).unwrap(),
    ];
    let store = DirKeyStore::open(&dir).unwrap();
    let mut every_kid = Vec::new();
    let start = clock.now();
    while clock.now() < start + PERIOD * 3 + Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_secs(11)).await;
        let stored = tower_jwt_signer::store::KeyStore::load(&store).unwrap();
        let count = |state| stored.iter().filter(|k| k.state() == state).count();
        assert_eq!(count(KeyState::Active), 1);
        assert!(count(KeyState::Next) <= 1, "two next keys: {stored:?}");
        for key in &stored {
            if !every_kid.contains(key.kid()) {
                every_kid.push(key.kid().clone());
            }
        }
    }
    // The first key and one per period: nobody rotated twice.
    assert_eq!(every_kid.len(), 4, "{every_kid:?}");
    for rotator in rotators {
        rotator.stop().await;
    }
    for follower in followers {
        follower.stop().await;
    }
    settle().await;
    a.reload().unwrap();
    b.reload().unwrap();
    assert_eq!(a.current().jwks_bytes(), b.current().jwks_bytes());
    // The last rotation's old key is still retained.
    let published = published_kids(a.current().jwks_bytes());
    assert_eq!(published.len(), 2);
    assert_eq!(published[0], a.current().active().unwrap().kid().as_str());
}

#[test]
fn a_replica_keeps_its_keys_while_the_directory_is_broken() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let clock = Clock::system();
    let writer = open(&dir, &clock, true);
    let replica = open(&dir, &clock, false);
    let before = replica.current();
    let bad = dir.join("half-written-by-hand.key.json");
    // Half written, with the mode the store writes (0600): the store
    // refuses it for its content, not for its permissions.
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&bad)
            .unwrap()
            .write_all(b"{\"version\": 1,")
            .unwrap();
    }
    let err = replica.reload().unwrap_err();
    assert!(
        matches!(&err, RegistryError::Store(StoreError::Corrupt { path, .. }) if *path == bad),
        "{err:?}"
    );
    assert!(err.to_string().contains("half-written-by-hand.key.json"));
    assert_eq!(replica.current().version(), before.version());
    // The writer cannot change anything either: it works from what is
    // stored, and that cannot be read.
    let writer_version = writer.current().version();
    let err = writer.rotate(Duration::from_secs(60)).unwrap_err();
    assert!(
        matches!(&err, RegistryError::Store(StoreError::Corrupt { path, .. }) if *path == bad),
        "{err:?}"
    );
    assert_eq!(writer.current().version(), writer_version);
    // Fixed by hand: both go on.
    std::fs::remove_file(&bad).unwrap();
    let new = writer.rotate(Duration::from_secs(60)).unwrap();
    assert!(replica.reload().unwrap());
    assert_eq!(replica.current().active().unwrap().kid(), &new);
    assert!(!replica.reload().unwrap(), "nothing changed since");
}

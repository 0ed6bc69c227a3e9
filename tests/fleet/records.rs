//! What Redis holds and what it can do to us: ciphertext and public data
//! only; a wrong KEK, a corrupted record, a record moved to another kid or
//! fleet are clear errors naming the kid, and nothing is overwritten;
//! rewrap; credentials never in logs, errors or `Debug`; the ACL of
//! SECURITY.md is enough; rediss:// with a private CA; an unreachable
//! Redis at start-up.

use std::collections::HashMap;
use std::time::Duration;

use tower_jwt_signer::registry::StoreFollower;
use tower_jwt_signer::store::KeyStore;
use tower_jwt_signer::store::redis::{Kek, LeaderLease};
use tower_jwt_signer::{
    Algorithm, KeyRegistry, RedisKeyStore, RegistryError, SigningKey, StoreError,
};

use crate::redis_server::{RedisServer, free_port};
use crate::util::{self, kek, store};

/// A store on `server` with these KEKs (the first encrypts, the others are
/// previous ones), connected.
fn with_keks(server: &RedisServer, prefix: &str, keks: &[Kek]) -> RedisKeyStore {
    let mut builder = RedisKeyStore::builder(server.url(), keks[0].clone()).prefix(prefix);
    for kek in &keks[1..] {
        builder = builder.previous_kek(kek.clone());
    }
    let store = builder.build().unwrap();
    store.connect().unwrap();
    store
}

/// Every string value in Redis, and every field and value of every hash.
fn everything_in(server: &RedisServer) -> Vec<Vec<u8>> {
    let mut values = Vec::new();
    let keys: Vec<String> = server.cmd(&["KEYS", "*"]);
    for key in keys {
        let kind: String = server.cmd(&["TYPE", &key]);
        values.push(key.clone().into_bytes());
        match kind.as_str() {
            "string" => values.push(server.cmd::<Vec<u8>>(&["GET", &key])),
            "hash" => {
                let map: HashMap<Vec<u8>, Vec<u8>> = server.cmd(&["HGETALL", &key]);
                for (field, value) in map {
                    values.push(field);
                    values.push(value);
                }
            }
            other => panic!("unexpected Redis type {other} at {key}"),
        }
    }
    values
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A registry on `store`, which leads (its lease held by `runtime`).
fn leading_registry(
    runtime: &tokio::runtime::Runtime,
    store: &RedisKeyStore,
    alg: Algorithm,
) -> (KeyRegistry, LeaderLease) {
    let lease = runtime.block_on(LeaderLease::spawn(store));
    let registry = KeyRegistry::builder()
        .store(store.clone())
        .generate_if_missing(alg)
        .build()
        .unwrap();
    (registry, lease)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn redis_holds_ciphertext_and_public_data_only() {
    let server = RedisServer::start();
    let rt = runtime();
    let store = store(&server, "scan");
    let (registry, _lease) = leading_registry(&rt, &store, Algorithm::RS256);
    let mut secrets: Vec<Vec<u8>> = Vec::new();
    for alg in [Algorithm::ES256, Algorithm::EdDSA, Algorithm::PS384] {
        registry
            .add_next(SigningKey::generate(alg).unwrap())
            .unwrap();
    }
    assert_eq!(registry.current().keys().len(), 4);
    for stored in store.load().unwrap() {
        let signing = stored.key().unwrap();
        let jwk: serde_json::Value =
            serde_json::from_str(&signing.to_private_jwk().unwrap()).unwrap();
        for member in ["d", "p", "q", "dp", "dq", "qi"] {
            if let Some(value) = jwk[member].as_str() {
                secrets.push(value.as_bytes().to_vec());
            }
        }
        let der = signing.to_pkcs8_der().unwrap();
        // The private key's DER, raw, and a slice from its middle (past
        // the public algorithm identifier), in base64 too.
        secrets.push(der[der.len() / 2..der.len() / 2 + 16].to_vec());
        let pem = signing.to_pkcs8_pem().unwrap();
        let body: String = pem.lines().nth(2).unwrap().to_owned();
        secrets.push(body.into_bytes());
    }
    secrets.push(vec![42; 32]); // the KEK itself
    let values = everything_in(&server);
    assert!(values.len() > 8, "{} values", values.len());
    for value in &values {
        for secret in &secrets {
            assert!(
                !contains(value, secret),
                "key material found in Redis: {}",
                String::from_utf8_lossy(value)
            );
        }
    }
    // What it does hold in the clear: the public metadata.
    let kid = registry.current().active().unwrap().kid().to_string();
    assert!(values.iter().any(|v| contains(v, kid.as_bytes())));
}

/// The raw records, to compare before and after.
fn records(server: &RedisServer, prefix: &str) -> HashMap<Vec<u8>, Vec<u8>> {
    server.cmd(&["HGETALL", &format!("{{{prefix}}}:keys")])
}

fn corrupt_record(err: RegistryError) -> (String, String) {
    match err {
        RegistryError::Store(StoreError::CorruptRecord { kid, reason, .. }) => (kid, reason),
        other => panic!("not a corrupt record: {other}"),
    }
}

#[test]
fn a_wrong_kek_a_corrupt_or_moved_record_stop_the_start_naming_the_kid_and_nothing_is_overwritten()
{
    let server = RedisServer::start();
    let rt = runtime();
    let writer = store(&server, "bad");
    let (registry, lease) = leading_registry(&rt, &writer, Algorithm::ES256);
    let kid = registry.current().active().unwrap().kid().to_string();
    rt.block_on(lease.stop());
    let before = records(&server, "bad");

    // A replica with another KEK, leading, with generate_if_missing: it
    // stops, and writes nothing.
    let start = |store: RedisKeyStore| {
        let lease = rt.block_on(LeaderLease::spawn(&store));
        let built = KeyRegistry::builder()
            .store(store)
            .generate_if_missing(Algorithm::ES256)
            .build();
        rt.block_on(lease.stop());
        built
    };
    let wrong = with_keks(&server, "bad", &[Kek::from_bytes(&[7; 32]).unwrap()]);
    let (named, reason) = corrupt_record(start(wrong).unwrap_err());
    assert_eq!(named, kid);
    assert!(reason.contains("not configured here"), "{reason}");
    assert_eq!(records(&server, "bad"), before, "nothing overwritten");

    // A corrupted ciphertext.
    let key = "{bad}:keys".to_owned();
    let record = before[kid.as_bytes()].clone();
    let mut text = String::from_utf8(record.clone()).unwrap();
    let at = text.find("\"ciphertext\":\"").unwrap() + 20;
    let flipped = if &text[at..=at] == "A" { "B" } else { "A" };
    text.replace_range(at..=at, flipped);
    let _: i64 = server.cmd(&["HSET", &key, &kid, &text]);
    let (named, reason) = corrupt_record(start(store(&server, "bad")).unwrap_err());
    assert_eq!(named, kid);
    assert!(reason.contains("does not decrypt"), "{reason}");
    assert_eq!(records(&server, "bad")[kid.as_bytes()], text.as_bytes());

    // A record moved to another kid.
    let _: i64 = server.cmd(&["HDEL", &key, &kid]);
    let record_text = String::from_utf8(record.clone()).unwrap();
    let _: i64 = server.cmd(&["HSET", &key, "moved-kid", &record_text]);
    let (named, reason) = corrupt_record(start(store(&server, "bad")).unwrap_err());
    assert_eq!(named, "moved-kid");
    assert!(reason.contains("moved from another kid"), "{reason}");
    // ... with its kid edited to match: the associated data still says no.
    let edited = record_text.replace(&kid, "moved-kid");
    let _: i64 = server.cmd(&["HSET", &key, "moved-kid", &edited]);
    let (_, reason) = corrupt_record(start(store(&server, "bad")).unwrap_err());
    assert!(reason.contains("does not decrypt"), "{reason}");
    let _: i64 = server.cmd(&["HDEL", &key, "moved-kid"]);

    // A record copied from another fleet (prefix).
    let _: i64 = server.cmd(&["HSET", "{other}:keys", &kid, &record_text]);
    let (_, reason) = corrupt_record(start(store(&server, "other")).unwrap_err());
    assert!(reason.contains("another fleet"), "{reason}");
    let after: HashMap<Vec<u8>, Vec<u8>> = server.cmd(&["HGETALL", "{other}:keys"]);
    assert_eq!(after.len(), 1, "nothing written next to it");
}

#[test]
fn rewrap_moves_every_record_to_the_first_kek() {
    let server = RedisServer::start();
    let rt = runtime();
    let old = store(&server, "kek");
    let (registry, lease) = leading_registry(&rt, &old, Algorithm::ES256);
    registry
        .add_next(SigningKey::generate(Algorithm::ES256).unwrap())
        .unwrap();
    rt.block_on(lease.stop());
    let new_kek = Kek::from_bytes(&[9; 32]).unwrap();
    let only_new = || with_keks(&server, "kek", std::slice::from_ref(&new_kek));
    assert!(KeyRegistry::builder().store(only_new()).build().is_err());

    // Both KEKs, the new one first: rewrap (no lease needed).
    let both = with_keks(&server, "kek", &[new_kek.clone(), kek()]);
    assert_eq!(both.rewrap().unwrap(), 2);
    assert_eq!(both.rewrap().unwrap(), 0, "nothing left to rewrap");

    let reloaded = KeyRegistry::builder().store(only_new()).build().unwrap();
    assert_eq!(
        reloaded.current().jwks_bytes(),
        registry.current().jwks_bytes()
    );
    let err = KeyRegistry::builder()
        .store(store(&server, "kek"))
        .build()
        .unwrap_err();
    let (_, reason) = corrupt_record(err);
    assert!(reason.contains(new_kek.id()), "{reason}");
}

#[test]
fn credentials_never_appear_in_logs_errors_or_debug() {
    let logs = util::logs();
    let server = RedisServer::start_with(&["--requirepass", "Sup3rS3cretPw"]);
    // The right password works; Debug redacts it.
    let url = format!("redis://:Sup3rS3cretPw@127.0.0.1:{}/", server.port());
    let good = RedisKeyStore::builder(&url, kek())
        .prefix("creds")
        .build()
        .unwrap();
    good.connect().unwrap();
    assert!(good.load().unwrap().is_empty());
    // A wrong password, and a Redis that is down: errors and their logs.
    let wrong = RedisKeyStore::builder(
        format!("redis://gw:Wr0ngS3cretPw@127.0.0.1:{}/", server.port()),
        kek(),
    )
    .prefix("creds")
    .startup_retry(Duration::from_millis(300))
    .build()
    .unwrap();
    let refused = wrong.connect().unwrap_err();
    let down = RedisKeyStore::builder(
        format!("redis://gw:D0wnS3cretPw@127.0.0.1:{}/", free_port()),
        kek(),
    )
    .prefix("creds")
    .startup_retry(Duration::from_millis(300))
    .build()
    .unwrap();
    let unreachable = down.connect().unwrap_err();
    let text = format!(
        "{good:?} {wrong:?} {refused} {refused:?} {unreachable} {unreachable:?} {}",
        logs.all()
    );
    for secret in ["Sup3rS3cretPw", "Wr0ngS3cretPw", "D0wnS3cretPw"] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    assert!(text.contains(":***@127.0.0.1"), "{text}");
}

#[test]
fn an_unreachable_redis_at_start_up_is_a_clear_error_after_a_bounded_logged_retry() {
    let logs = util::logs();
    let port = free_port();
    let store = RedisKeyStore::builder(format!("redis://127.0.0.1:{port}/"), kek())
        .prefix("startup")
        .startup_retry(Duration::from_millis(800))
        .build()
        .unwrap();
    let err = store.connect().unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    let retries = logs.lines_with(&[&format!("127.0.0.1:{port}"), "retrying"]);
    assert!(!retries.is_empty(), "{}", logs.all());
    assert_eq!(
        logs.lines_with(&[&format!("127.0.0.1:{port}"), "giving up"])
            .len(),
        1
    );
}

/// The ACL SECURITY.md gives the gateway: exactly these commands, on keys
/// and channels of its prefix.
pub(crate) const ACL_COMMANDS: &str = "+ping +get +set +hgetall +evalsha +script|load +subscribe +hset +hdel +incr +publish +pexpire +del";

#[test]
fn the_acl_of_security_md_is_all_a_replica_needs() {
    let server = RedisServer::start();
    let security = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/SECURITY.md"))
        .unwrap_or_default();
    assert!(
        security.contains(ACL_COMMANDS),
        "SECURITY.md gives the ACL `{ACL_COMMANDS}`"
    );
    let mut setuser = vec![
        "ACL",
        "SETUSER",
        "gateway",
        "on",
        ">gw-pass",
        "resetkeys",
        "~{acl}:*",
        "resetchannels",
        "&{acl}:*",
        "-@all",
    ];
    setuser.extend(ACL_COMMANDS.split(' '));
    let _: String = server.cmd(&setuser);
    let url = format!("redis://gateway:gw-pass@127.0.0.1:{}/", server.port());
    let open = || {
        let store = RedisKeyStore::builder(&url, kek())
            .prefix("acl")
            .build()
            .unwrap();
        store.connect().unwrap();
        store
    };
    let rt = runtime();
    // A leader: lease, first key, a rotation, a removal.
    let leader = open();
    let (registry, lease) = leading_registry(&rt, &leader, Algorithm::ES256);
    assert!(lease.is_held());
    // A follower hears of the change through pub/sub.
    let follower_store = open();
    let follower = KeyRegistry::builder()
        .store(follower_store)
        .build()
        .unwrap();
    let following = rt.block_on(async {
        StoreFollower::spawn(follower.clone(), Duration::from_secs(3600)).unwrap()
    });
    let old = registry.current().active().unwrap().kid().clone();
    // Let the follower subscribe before the change it must hear of.
    std::thread::sleep(Duration::from_millis(300));
    let new = registry
        .rotate_to(
            SigningKey::generate(Algorithm::ES256).unwrap(),
            Duration::from_secs(60),
        )
        .unwrap();
    util::eventually("the follower hears of the rotation", || {
        follower.current().active().map(|k| k.kid().clone()) == Some(new.clone())
    });
    registry.remove(&old).unwrap();
    // rewrap and the lease's release.
    assert_eq!(open().rewrap().unwrap(), 0);
    rt.block_on(lease.stop());
    let lease_key: Option<String> = server.cmd(&["GET", "{acl}:lease"]);
    assert_eq!(lease_key, None, "released");
    drop(following);
    // The ACL is enforced: outside the prefix, or another command, refused.
    let mut con = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    assert!(
        redis::cmd("GET")
            .arg("{other}:keys")
            .query::<Option<String>>(&mut con)
            .is_err()
    );
    assert!(
        redis::cmd("KEYS")
            .arg("*")
            .query::<Vec<String>>(&mut con)
            .is_err()
    );
}

#[test]
fn rediss_with_a_private_ca_works_and_an_unknown_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server_params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let server_cert = server_params.signed_by(&server_key, &ca, &ca_key).unwrap();
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let ca_file = write("ca.pem", ca.pem());
    let cert_file = write("server.pem", server_cert.pem());
    let key_file = write("server.key", server_key.serialize_pem());
    let tls_port = free_port().to_string();
    let server = RedisServer::start_with(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &cert_file,
        "--tls-key-file",
        &key_file,
        "--tls-ca-cert-file",
        &ca_file,
        "--tls-auth-clients",
        "no",
    ]);
    let url = format!("rediss://127.0.0.1:{tls_port}/");
    let store = RedisKeyStore::builder(&url, kek())
        .prefix("tls")
        .tls_root_certificates(ca.pem().into_bytes())
        .build()
        .unwrap();
    store.connect().unwrap();
    let rt = runtime();
    let (registry, _lease) = leading_registry(&rt, &store, Algorithm::ES256);
    let kid = registry.current().active().unwrap().kid().to_string();
    assert!(records(&server, "tls").contains_key(kid.as_bytes()));

    // Without the CA (the system's roots only), the handshake fails.
    let untrusted = RedisKeyStore::builder(&url, kek())
        .prefix("tls")
        .startup_retry(Duration::from_millis(200))
        .build()
        .unwrap();
    assert!(untrusted.connect().is_err());
}

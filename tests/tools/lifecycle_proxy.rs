//! The signing proxy's key flags, through the real binary: `--key-dir`
//! keeps the keys (and kids) across restarts, `--rotate-every`,
//! `--prepublish` and `--retain` set the rotation the proxy reports when
//! it starts, and settings that cannot work are refused before it
//! listens. (How such a policy rotates the keys of a directory over time,
//! which needs tokio's paused clock, is
//! `lifecycle::rotation_lifecycle::rotate_every_rotates_the_keys_in_the_key_dir`,
//! built from the same library pieces.)

use super::signing_proxy::{get, jwks, proxy};
use crate::support::lifecycle::{published_kids, verify_with_jwks};
use crate::support::process::{Example, Finished, LIMIT};
use crate::support::upstream::Upstream;

/// The rotation line the proxy prints at start with `flags`.
async fn rotation_line(flags: &[&str]) -> String {
    let mut all = vec!["--upstream", "http://127.0.0.1:1", "--alg", "EdDSA"];
    all.extend_from_slice(flags);
    let (running, _) = proxy(&all).await;
    running
        .line_async("the rotation line", |line| {
            line.starts_with("rotating every")
        })
        .await
}

/// Runs the proxy with `flags` after `--upstream`; it must exit.
fn refused(flags: &[&str]) -> Finished {
    let mut all = vec![
        "--upstream",
        "http://127.0.0.1:1",
        "--listen",
        "127.0.0.1:0",
    ];
    all.extend_from_slice(flags);
    Example::new("signing_proxy").run(&all, LIMIT)
}

#[tokio::test]
async fn rotation_flags_and_their_defaults() {
    // No --rotate-every: no rotation.
    let upstream = Upstream::start().await;
    let (plain, addr) = proxy(&["--upstream", &upstream.url()]).await;
    // The start lines are printed before it serves: once it has answered,
    // they are all out.
    let _ = get(addr, "/").await;
    plain
        .line_async("the start line", |line| line.contains("signing proxy on"))
        .await;
    assert!(
        !plain.transcript().contains("rotating every"),
        "{}",
        plain.transcript()
    );
    drop(plain);

    // prepublish: the smaller of half the period and the JWKS max-age;
    // retain: ttl + 60 s of leeway.
    assert_eq!(
        rotation_line(&["--rotate-every", "86400"]).await,
        "rotating every 86400 s; each next key published 300 s ahead; old keys kept 120 s"
    );
    assert_eq!(
        rotation_line(&["--rotate-every", "120", "--ttl", "30"]).await,
        "rotating every 120 s; each next key published 60 s ahead; old keys kept 90 s"
    );
    assert_eq!(
        rotation_line(&[
            "--rotate-every",
            "3600",
            "--jwks-max-age",
            "60",
            "--prepublish",
            "900",
            "--retain",
            "7200",
        ])
        .await,
        "rotating every 3600 s; each next key published 900 s ahead; old keys kept 7200 s"
    );

    // Settings that cannot work: refused before anything listens, with the
    // policy's own error (the minimum retention follows --ttl, which the
    // registry holds).
    for (flags, expected) in [
        (&["--rotate-every", "0"][..], "invalid rotate_every 0ns"),
        (
            &["--rotate-every", "3600", "--prepublish", "3601"][..],
            "invalid prepublish 3601s: longer than the rotation period (3600s)",
        ),
        (
            &["--rotate-every", "3600", "--retain", "100"][..],
            "invalid retain 100s: shorter than its minimum, 120s",
        ),
        (
            &["--rotate-every", "3600", "--ttl", "600", "--retain", "600"][..],
            "invalid retain 600s: shorter than its minimum, 660s",
        ),
        (
            &["--prepublish", "10"][..],
            "the following required arguments were not provided:\n  --rotate-every <SECS>",
        ),
        (
            &["--retain", "10"][..],
            "the following required arguments were not provided:\n  --rotate-every <SECS>",
        ),
        (
            &["--rotate-every", "daily"][..],
            "invalid value 'daily' for '--rotate-every <SECS>'",
        ),
        (
            &["--key-dir"][..],
            "a value is required for '--key-dir <DIR>'",
        ),
    ] {
        let finished = tokio::task::spawn_blocking({
            let flags: Vec<String> = flags.iter().map(|s| (*s).to_owned()).collect();
            move || refused(&flags.iter().map(String::as_str).collect::<Vec<_>>())
        })
        .await
        .unwrap();
        assert_eq!(finished.code(), Some(2), "{flags:?}: {finished:?}");
        assert!(
            finished.stderr.starts_with(&format!("error: {expected}")),
            "{flags:?}: {}",
            finished.stderr
        );
    }
}

#[tokio::test]
async fn key_dir_keeps_the_kid_across_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let dir_flag = dir.to_str().unwrap().to_owned();
    let upstream = Upstream::start().await;
    let upstream_url = upstream.url();
    let flags = ["--upstream", &upstream_url, "--key-dir", &dir_flag];

    // First run: a key is created in the directory and signs.
    let (first, addr) = proxy(&flags).await;
    let (status, _) = get(addr, "/orders").await;
    assert_eq!(status, http::StatusCode::CREATED);
    let token = upstream.tokens()[0].clone();
    let first_jwks = jwks(addr).await;
    let kids = published_kids(&first_jwks);
    assert_eq!(kids.len(), 1);
    verify_with_jwks(&token, &first_jwks).unwrap();
    assert!(dir.join(format!("{}.key.json", kids[0])).exists());
    drop(first);

    // Second run: the same kid; the old token verifies through the new
    // proxy's JWKS, and new tokens use the same key.
    let (_proxy, addr) = proxy(&flags).await;
    let jwks_again = jwks(addr).await;
    assert_eq!(published_kids(&jwks_again), kids);
    verify_with_jwks(&token, &jwks_again).unwrap();
    let (status, _) = get(addr, "/again").await;
    assert_eq!(status, http::StatusCode::CREATED);
    let second = upstream.tokens()[1].clone();
    let header = jsonwebtoken::decode_header(&second).unwrap();
    assert_eq!(header.kid.as_deref(), Some(kids[0].as_str()));

    // Without --key-dir a restart gets a new key.
    let (_memory, addr) = proxy(&["--upstream", &upstream_url]).await;
    assert_ne!(published_kids(&jwks(addr).await), kids);
}

#[tokio::test]
async fn key_dir_with_keys_of_another_algorithm_does_not_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let dir_flag = dir.to_str().unwrap().to_owned();
    // An ES256 key is made and kept.
    let (first, _) = proxy(&["--upstream", "http://127.0.0.1:1", "--key-dir", &dir_flag]).await;
    drop(first);
    let finished =
        tokio::task::spawn_blocking(move || refused(&["--key-dir", &dir_flag, "--alg", "RS256"]))
            .await
            .unwrap();
    // Not a usage error: the store refused the directory, naming the file.
    assert_eq!(finished.code(), Some(1), "{finished:?}");
    let message = &finished.stderr;
    assert!(message.contains(".key.json"), "{message}");
    assert!(
        message.contains("its key is for ES256, but this key store is for RS256"),
        "{message}"
    );
    assert!(!finished.stdout.contains("signing proxy on"));
}

//! Short rotation periods, in real time, over real sockets (issue 10).
//!
//! With a 12 s period and the backend's `RemoteJwks` at its defaults (a
//! copy kept at least 60 s, one unknown-kid refresh per 30 s), the backend
//! refused every token of a new key for about 18 s after each rotation.
//! The rotation docs ("Short rotation periods") give the settings that fit
//! a short period; with them a gateway rotating every few seconds, for a
//! few rotations, has no token refused. The second test is the control: the
//! same gateway with the backend left at its defaults does refuse tokens,
//! so the first test can fail.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use tokio::net::TcpListener;
use tower_jwt_signer::verifier::RemoteJwksBuilder;
use tower_jwt_signer::{Algorithm, KeyRegistry, KeyRotator, RemoteJwks, RotationPolicy, Verifier};

use crate::support::chain::{AUDIENCE, Backend, Gateway, ISSUER, jwks_url};
use crate::support::verifier::get;

/// The rotation period: a few seconds.
const PERIOD: Duration = Duration::from_secs(3);
/// The registry's JWKS max-age, which is the prepublish time: at most the
/// period (a third of it here; max-age counts in whole seconds).
const MAX_AGE: Duration = Duration::from_secs(1);
/// The registry's token lifetime.
const TOKEN_TTL: Duration = Duration::from_secs(2);
/// The verifiers' leeway, given to the policy and to the verifier.
const LEEWAY: Duration = Duration::from_secs(1);
/// How many rotations the run waits for.
const ROTATIONS: usize = 4;
/// The whole run's bound: the rotations take `ROTATIONS * PERIOD`.
const LIMIT: Duration = Duration::from_secs(60);
/// The pause between two requests of the client.
const GAP: Duration = Duration::from_millis(20);

/// What the client saw: the kids that signed accepted tokens, in order,
/// and every refusal.
#[derive(Debug, Default)]
struct Seen {
    kids: Vec<String>,
    refused: Vec<String>,
}

impl Seen {
    fn distinct_kids(&self) -> usize {
        self.kids.iter().collect::<BTreeSet<_>>().len()
    }
}

/// A gateway on a registry of short tokens with a short JWKS max-age,
/// rotating every [`PERIOD`], and a backend whose `RemoteJwks` is `remote`.
async fn start(remote: impl FnOnce(String) -> RemoteJwksBuilder) -> (KeyRotator, Gateway, Backend) {
    let registry = KeyRegistry::builder()
        .token_ttl(TOKEN_TTL)
        .jwks_max_age(MAX_AGE)
        .generate_if_missing(Algorithm::ES256)
        .build()
        .unwrap();
    let policy = RotationPolicy::builder(PERIOD)
        .verifier_leeway(LEEWAY)
        .build()
        .unwrap();
    let rotator = KeyRotator::spawn(registry.clone(), policy).unwrap();
    // The docs' defaults on this registry: published one max-age ahead,
    // kept the token lifetime plus the leeway.
    assert_eq!(rotator.prepublish(), MAX_AGE);
    assert_eq!(rotator.retain(), TOKEN_TTL + LEEWAY);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let remote: RemoteJwks = remote(jwks_url(&listener)).build().unwrap();
    let verifier = Verifier::builder(remote)
        .issuer(ISSUER)
        .audience(AUDIENCE)
        .leeway(LEEWAY)
        .build()
        .unwrap();
    let backend = Backend::start(verifier).await;
    let gateway = Gateway::start(registry, listener, backend.addr);
    (rotator, gateway, backend)
}

/// Sends requests through the gateway until `done` says so or [`LIMIT`]
/// passes, recording the kid of each accepted token and each refusal.
async fn drive(gateway: SocketAddr, done: impl Fn(&Seen) -> bool) -> Seen {
    let mut seen = Seen::default();
    let run = async {
        while !done(&seen) {
            let reply = get(gateway, "/orders", &[("x-user", "alice")]).await;
            if reply.status == StatusCode::OK {
                let kid = reply.json()["kid"].as_str().unwrap().to_owned();
                if seen.kids.last() != Some(&kid) {
                    eprintln!("tokens now signed by {kid}");
                }
                seen.kids.push(kid);
            } else {
                let refusal = format!(
                    "{} after {} accepted tokens: {}",
                    reply.status,
                    seen.kids.len(),
                    reply.challenge().unwrap_or("no challenge")
                );
                eprintln!("refused: {refusal}");
                seen.refused.push(refusal);
            }
            tokio::time::sleep(GAP).await;
        }
    };
    let finished = tokio::time::timeout(LIMIT, run).await;
    assert!(finished.is_ok(), "not done within {LIMIT:?}: {seen:?}");
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_period_with_the_documented_settings_refuses_no_token() {
    // The backend as the rotation docs say: a cache minimum of at most the
    // max-age, so the max-age is honoured, and a cooldown of at most the
    // max-age.
    let (rotator, gateway, _backend) = start(|url| {
        RemoteJwks::builder(url)
            .cache_ttl_bounds(MAX_AGE, Duration::from_secs(3600))
            .refresh_cooldown(MAX_AGE)
    })
    .await;
    let seen = drive(gateway.addr, |seen| {
        seen.distinct_kids() > ROTATIONS || !seen.refused.is_empty()
    })
    .await;
    rotator.stop().await;
    assert!(
        seen.refused.is_empty(),
        "tokens refused during the rotations: {:?}",
        seen.refused
    );
    assert!(
        seen.distinct_kids() > ROTATIONS,
        "{} kids signed accepted tokens",
        seen.distinct_kids()
    );
}

/// The control: the same gateway, the backend's `RemoteJwks` at its
/// defaults (a copy kept at least 60 s, one unknown-kid refresh per 30 s).
/// The first rotation is rescued by the unknown-kid refresh; the next one
/// falls in the cooldown and its tokens are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_period_with_remote_jwks_defaults_refuses_tokens() {
    let (rotator, gateway, _backend) = start(RemoteJwks::builder).await;
    let seen = drive(gateway.addr, |seen| {
        !seen.refused.is_empty() || seen.distinct_kids() > ROTATIONS
    })
    .await;
    rotator.stop().await;
    assert!(
        !seen.refused.is_empty(),
        "no token refused over {} kids: the short-period test proves nothing",
        seen.distinct_kids()
    );
}

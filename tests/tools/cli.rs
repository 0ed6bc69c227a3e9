//! The examples' command lines, one style for all (clap): every example's
//! `--help` runs, every flag of the clap tools names its `TJS_` variable in
//! `--help`, and for each tool a few variables set in the environment take
//! effect (seen in what it prints and does).

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;

use crate::support::process::{Example, LIMIT};
use crate::support::signer::{fetch, segment, verify_against};
use crate::support::upstream::Upstream;

/// The tools with clap command lines (fleet_propagation only exists with
/// the `redis` feature).
fn clap_tools() -> Vec<&'static str> {
    let mut tools = vec!["signing_proxy", "quickstart", "soak", "verify_backend"];
    if cfg!(feature = "redis") {
        tools.push("fleet_propagation");
    }
    tools
}

/// The long flags `--help` lists, each with the text of its entry.
fn flags_in_help(help: &str) -> Vec<(String, String)> {
    let mut flags: Vec<(String, String)> = Vec::new();
    for line in help.lines() {
        let trimmed = line.trim_start();
        let entry = trimmed.strip_prefix("-h, ").unwrap_or(trimmed);
        if line.starts_with("  ") && entry.starts_with("--") {
            let name = entry[2..].split([' ', '<', '=']).next().unwrap().to_owned();
            flags.push((name, format!("{line}\n")));
        } else if let Some((_, text)) = flags.last_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    flags
}

#[test]
fn every_example_help_runs_and_every_flag_has_a_variable() {
    for tool in clap_tools() {
        let help = Example::new(tool).run(&["--help"], LIMIT);
        assert_eq!(help.code(), Some(0), "{tool}: {help:?}");
        assert!(
            help.stdout.contains(&format!("Usage: {tool}")),
            "{tool}: {}",
            help.stdout
        );
        assert!(
            help.stdout.contains("prefix TJS_"),
            "{tool}: {}",
            help.stdout
        );
        let flags = flags_in_help(&help.stdout);
        assert!(flags.len() >= 3, "{tool}: {flags:?}");
        for (flag, text) in flags {
            if flag == "help" {
                continue;
            }
            let variable = format!("[env: TJS_{}", flag.to_uppercase().replace('-', "_"));
            assert!(
                text.contains(&variable),
                "{tool} --{flag} has no {variable}]: {text}"
            );
        }
        // -h is the short help, in the same style.
        let short = Example::new(tool).run(&["-h"], LIMIT);
        assert_eq!(short.code(), Some(0), "{tool}");
        assert!(short.stdout.contains(&format!("Usage: {tool}")), "{tool}");
    }
    // The benchmark tools (another branch's) print their usage too.
    for tool in ["bench_report", "load"] {
        let help = Example::new(tool).run(&["--help"], LIMIT);
        assert_eq!(help.code(), Some(0), "{tool}: {help:?}");
        assert!(!help.stdout.is_empty(), "{tool}");
    }
}

/// `TJS_*` variables: the upstream, the listener, the algorithm, a claim
/// per line, the timeout, the body limit and a boolean flag take effect;
/// a flag on the command line wins over its variable.
#[tokio::test]
async fn signing_proxy_reads_its_variables() {
    let upstream = Upstream::start().await;
    let url = upstream.url();
    let env = [
        ("TJS_UPSTREAM", url.as_str()),
        ("TJS_LISTEN", "127.0.0.1:0"),
        ("TJS_ALG", "EdDSA"),
        ("TJS_ISSUER", "from-env"),
        ("TJS_AUDIENCE", "env-audience"),
        ("TJS_CLAIM", "team=core\nverb=${req.method}"),
        ("TJS_TIMEOUT", "7"),
        ("TJS_MAX_BODY", "4"),
        ("TJS_TRUST_FORWARDED", "true"),
    ];
    let proxy = Example::new("signing_proxy").spawn_with_env(&["--issuer", "from-flag"], &env);
    let started = proxy
        .line_async("the start line", |l| l.contains("signing proxy on"))
        .await;
    assert!(started.contains(&format!("-> {url} (EdDSA")), "{started}");
    assert!(
        started.contains("timeout 7 s, max body 4 bytes"),
        "{started}"
    );
    assert!(started.contains("forwarded headers appended"), "{started}");
    let addr = crate::support::process::address_in(&started);

    let (parts, _) = fetch(
        Request::builder()
            .method(Method::POST)
            .uri(format!("http://{addr}/x"))
            .body(Full::new(Bytes::from_static(b"12345")))
            .unwrap(),
    )
    .await;
    assert_eq!(parts.status, StatusCode::PAYLOAD_TOO_LARGE, "TJS_MAX_BODY");
    let (parts, _) = fetch(
        Request::builder()
            .method(Method::PUT)
            .uri(format!("http://{addr}/x"))
            .body(Full::new(Bytes::from_static(b"1234")))
            .unwrap(),
    )
    .await;
    assert_eq!(parts.status, StatusCode::CREATED);
    let token = upstream.received()[0].bearer().unwrap();
    let (status, jwks) = super::signing_proxy::get(addr, tower_jwt_signer::JWKS_PATH).await;
    assert_eq!(status, StatusCode::OK);
    let claims = verify_against(&token, &jwks).unwrap().claims;
    assert_eq!(segment(token.split('.').next().unwrap())["alg"], "EdDSA");
    assert_eq!(claims["iss"], "from-flag", "the flag wins");
    assert_eq!(claims["aud"], "env-audience");
    assert_eq!(claims["team"], "core");
    assert_eq!(claims["verb"], "PUT");
}

#[test]
fn quickstart_reads_its_variables() {
    let finished = Example::new("quickstart").run_with_env(
        &[],
        &[("TJS_ONCE", "1"), ("TJS_ALG", "ES384")],
        LIMIT,
    );
    assert_eq!(finished.code(), Some(0), "{finished:?}");
    assert!(
        finished.stdout.contains("\"alg\": \"ES384\""),
        "{}",
        finished.stdout
    );
    assert!(
        finished.stdout.contains("verified claims:"),
        "{}",
        finished.stdout
    );

    // A bad value in a variable names the flag.
    let finished =
        Example::new("quickstart").run_with_env(&[], &[("TJS_LISTEN", "nowhere")], LIMIT);
    assert_eq!(finished.code(), Some(2), "{finished:?}");
    assert!(
        finished
            .stderr
            .contains("invalid value 'nowhere' for '--listen <ADDR>'"),
        "{}",
        finished.stderr
    );
}

#[test]
fn soak_reads_its_variables() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let finished = Example::new("soak").run_with_env(
        &[],
        &[
            ("TJS_DURATION", "1"),
            ("TJS_CLIENTS", "2"),
            ("TJS_REPORT_EVERY", "1"),
            ("TJS_TTL", "3"),
            ("TJS_ALG", "EdDSA"),
            ("TJS_KEY_DIR", dir.to_str().unwrap()),
            ("TJS_REUSE", "true"),
        ],
        Duration::from_secs(120),
    );
    assert_eq!(finished.code(), Some(0), "{finished:?}");
    assert!(
        finished.stdout.starts_with(
            "soak: 2 clients for 1 s, EdDSA keys rotating every 1 s, tokens valid 3 s, tokens reused"
        ),
        "{}",
        finished.stdout
    );
    assert!(
        std::fs::read_dir(&dir).unwrap().count() > 0,
        "TJS_KEY_DIR holds the keys"
    );
}

#[tokio::test]
async fn verify_backend_reads_its_variables() {
    let backend = Example::new("verify_backend").spawn_with_env(
        &[],
        &[
            ("TJS_LISTEN", "127.0.0.1:0"),
            ("TJS_JWKS_URL", "http://127.0.0.1:1/jwks"),
            ("TJS_ISSUER", "env-issuer"),
            ("TJS_AUDIENCE", "env-audience"),
            ("TJS_LEEWAY", "5"),
            ("TJS_REFRESH_COOLDOWN", "2"),
        ],
    );
    let line = backend
        .line_async("the start line", |l| l.contains("verifying backend on"))
        .await;
    assert!(
        line.contains(
            "with JWKS http://127.0.0.1:1/jwks, issuer env-issuer, audience env-audience"
        ),
        "{line}"
    );
    // An unknown variable value is refused, naming the flag.
    let finished = Example::new("verify_backend").run_with_env(
        &[],
        &[
            ("TJS_LISTEN", "127.0.0.1:0"),
            ("TJS_JWKS_URL", "http://127.0.0.1:1/jwks"),
            ("TJS_LEEWAY", "soon"),
        ],
        LIMIT,
    );
    assert_eq!(finished.code(), Some(2));
    assert!(
        finished.stderr.contains("for '--leeway <SECS>'"),
        "{}",
        finished.stderr
    );
}

#[cfg(feature = "redis")]
#[test]
fn fleet_propagation_reads_its_variables() {
    let finished = Example::new("fleet_propagation").run_with_env(
        &[],
        &[
            ("TJS_ROTATIONS", "2"),
            ("TJS_FOLLOWERS", "1"),
            ("TJS_POLL_MS", "50"),
        ],
        Duration::from_secs(120),
    );
    assert_eq!(finished.code(), Some(0), "{finished:?}");
    assert!(
        finished.stdout.contains("(1 followers, 2 rotations"),
        "{}",
        finished.stdout
    );
    assert!(
        finished.stdout.contains("polling alone, every 50 ms"),
        "{}",
        finished.stdout
    );
}

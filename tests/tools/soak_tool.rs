//! The soak example, the real binary: its flags, and a short run whose
//! report (counts and memory over time, a verdict) is read from what it
//! prints. The soak itself, with its assertions, is
//! `lifecycle::soak::thirty_two_clients_through_a_gateway_that_rotates_every_second`.

use tower_jwt_signer::store::KeyStore as _;
use tower_jwt_signer::{Algorithm, DirKeyStore};

use crate::support::process::{Example, Finished, LIMIT};

fn soak(args: &[&str]) -> Finished {
    Example::new("soak").run(args, LIMIT)
}

/// One line of the report's table.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    elapsed: u64,
    requests: u64,
    failures: u64,
    server_errors: u64,
    refused: u64,
    unsigned: u64,
    fetches: u64,
    keys_published: u64,
    keys_now: u64,
    rss_kib: u64,
    peak_kib: u64,
}

/// The table's rows (the lines between the header and `total:`).
fn rows(stdout: &str) -> Vec<Row> {
    stdout
        .lines()
        .skip_while(|line| !line.starts_with("elapsed"))
        .skip(1)
        .take_while(|line| !line.starts_with("total:"))
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(fields.len(), 11, "{line}");
            let number = |i: usize| -> u64 {
                fields[i]
                    .parse()
                    .unwrap_or_else(|_| panic!("column {i} of {line}"))
            };
            let (all, now) = fields[8].split_once('/').expect("keys all/now");
            Row {
                elapsed: fields[0].trim_end_matches('s').parse().unwrap(),
                requests: number(1),
                failures: number(3),
                server_errors: number(4),
                refused: number(5),
                unsigned: number(6),
                fetches: number(7),
                keys_published: all.parse().unwrap(),
                keys_now: now.parse().unwrap(),
                rss_kib: number(9),
                peak_kib: number(10),
            }
        })
        .collect()
}

#[test]
fn the_soak_tool_reads_its_flags() {
    let help = soak(&["-h"]);
    assert_eq!(help.code(), Some(0));
    assert!(help.stdout.contains("Usage: soak"), "{}", help.stdout);
    assert!(soak(&["--help"]).stdout.contains("Usage: soak"));

    // The defaults, as it reports them when it starts (then stopped).
    let running = Example::new("soak").spawn(&[]);
    let first = running.line("the first line", |line| line.starts_with("soak:"));
    assert_eq!(
        first,
        "soak: 32 clients for 60 s, ES256 keys rotating every 1 s, tokens valid 5 s"
    );
    drop(running);

    // Every flag, in both spellings.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let finished = soak(&[
        "--duration",
        "2",
        "--clients=3",
        "--report-every",
        "1",
        "--rotate-every",
        "2",
        "--ttl",
        "10",
        "--alg",
        "EdDSA",
        "--key-dir",
        dir.to_str().unwrap(),
        "--reuse",
    ]);
    assert_eq!(finished.code(), Some(0), "{finished:?}");
    assert_eq!(
        finished.stdout.lines().next(),
        Some(
            "soak: 3 clients for 2 s, EdDSA keys rotating every 2 s, tokens valid 10 s, tokens reused"
        )
    );
    // The gateway kept its keys in --key-dir, of --alg.
    let stored = DirKeyStore::builder(&dir)
        .create(false)
        .open()
        .unwrap()
        .load()
        .unwrap();
    assert!(!stored.is_empty());
    assert!(stored.iter().all(|key| key.algorithm() == Algorithm::EdDSA));

    for (bad, expected) in [
        (
            &["--clients", "0"][..],
            "invalid value '0' for '--clients <N>'",
        ),
        (
            &["--duration", "0"],
            "invalid value '0' for '--duration <SECS>': must be at least 1",
        ),
        (
            &["--duration", "soon"],
            "invalid value 'soon' for '--duration <SECS>'",
        ),
        (&["--alg", "HS256"], "HS256"),
        (&["--verbose"], "unexpected argument '--verbose'"),
        (&["--reuse=yes"], "unexpected value 'yes' for '--reuse'"),
        (&["600"], "unexpected argument '600'"),
    ] {
        let finished = soak(bad);
        assert_eq!(finished.code(), Some(2), "{bad:?}: {finished:?}");
        assert!(
            finished.stderr.starts_with("error: ") && finished.stderr.contains(expected),
            "{bad:?}: {}",
            finished.stderr
        );
        assert!(finished.stdout.is_empty(), "{bad:?}");
    }
}

#[test]
fn the_soak_tool_reports_counts_and_memory_over_time() {
    // The gateway's token cache (--reuse), under rotation too.
    let finished = soak(&[
        "--duration",
        "3",
        "--clients",
        "4",
        "--report-every",
        "1",
        "--reuse",
    ]);
    eprintln!("{}", finished.stdout);
    assert_eq!(finished.code(), Some(0), "{finished:?}");
    let lines: Vec<&str> = finished.stdout.lines().collect();
    assert_eq!(lines.last(), Some(&"PASS"));
    let total = lines[lines.len() - 2];
    assert!(total.starts_with("total: "), "{total}");
    assert!(
        total.contains(" 0 failures, 0 5xx, 0 refused, 0 unsigned"),
        "{total}"
    );
    let rows = rows(&finished.stdout);
    // A line a second, and one at the end.
    assert!(rows.len() >= 3, "{rows:?}");
    let last = rows.last().unwrap();
    assert_eq!(
        (
            last.failures,
            last.server_errors,
            last.refused,
            last.unsigned
        ),
        (0, 0, 0, 0),
        "{last:?}"
    );
    assert!(last.requests > 0);
    assert!(last.fetches >= 1);
    assert!(last.keys_published >= 2, "{last:?}");
    assert!(last.keys_now >= 1 && last.keys_now <= last.keys_published);
    assert!(last.rss_kib > 0);
    assert!(last.peak_kib >= last.rss_kib);
    // Counts never go back.
    for pair in rows.windows(2) {
        assert!(pair[1].requests >= pair[0].requests, "{pair:?}");
        assert!(pair[1].elapsed >= pair[0].elapsed, "{pair:?}");
        assert!(pair[1].keys_published >= pair[0].keys_published, "{pair:?}");
    }
    assert!(
        total.starts_with(&format!("total: {} requests", last.requests)),
        "{total}"
    );
}

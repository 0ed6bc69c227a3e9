//! Metrics (feature `metrics`), through the [`metrics`](https://docs.rs/metrics)
//! facade: install any recorder (for Prometheus,
//! `metrics-exporter-prometheus`) and the signer, the JWKS service, the
//! verifier and `RemoteJwks` record into it. Without the feature nothing
//! is recorded and nothing is measured: the recording points compile to
//! nothing.
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `tjs_tokens_signed_total` | counter | `alg`, `kid` | tokens the signer signed (a reused token is not signed again) |
//! | `tjs_signing_failures_total` | counter | `error` | requests the signer answered itself, by its error code: `token_present`, `claim_unavailable`, `token_too_large`, `unauthorized`, `forbidden`, `claims_failed`, `no_signing_key`, `signing_failed` |
//! | `tjs_signing_duration_seconds` | histogram | `alg` | the time to sign one token (the signature, its encoding, the size check), on whichever thread signs |
//! | `tjs_token_reuse_hits_total` | counter | | tokens handed out again by [`TokenReuse`](crate::signer::TokenReuse) |
//! | `tjs_token_reuse_misses_total` | counter | | lookups in the reuse cache that found no token to hand out (a new one was signed) |
//! | `tjs_jwks_requests_total` | counter | | `GET`/`HEAD` requests [`JwksService`](crate::JwksService) answered (304s included) |
//! | `tjs_jwks_not_modified_total` | counter | | of those, the ones answered `304 Not Modified` |
//! | `tjs_verifier_refusals_total` | counter | `reason` | requests the verifier refused ([`JwtVerifierLayer`](crate::JwtVerifierLayer) or the tower-http authorizer), by [`VerifyError`](crate::VerifyError) variant in snake case: `missing_token`, `expired`, `invalid_signature`, `unknown_kid`, `wrong_audience`, ... |
//! | `tjs_remote_jwks_fetches_total` | counter | | fetches of a [`RemoteJwks`](crate::RemoteJwks) (304s included) |
//! | `tjs_remote_jwks_fetch_failures_total` | counter | | of those, the ones that failed |
//! | `tjs_active_key_age_seconds` | gauge | | seconds since the active key started signing (since it was created, for a key that never recorded it), set on each signed token and each JWKS request |
//! | `tjs_published_keys` | gauge | | keys the JWKS publishes, set on each change of the key set and each JWKS request |
//!
//! Names follow the Prometheus conventions (`_total` for counters,
//! `_seconds` and base units); the constants below hold them. Labels never
//! hold a token, a claim or key material: `kid` is the key's public id.
//! The gauges describe one registry: a process with several registries
//! sees the last one set. A `JwksService` on several registries
//! ([`JwksSource::merged`](crate::jwks::JwksSource::merged)) sets
//! `tjs_published_keys` to the merged count and leaves the active key's age
//! to the signers.
//!
//! Handles are made when a key first signs: install the recorder before
//! the first request (at start-up), as every recorder asks.
//!
//! # Example
//!
//! ```
//! # #[cfg(feature = "metrics")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use tower_jwt_signer::metrics::TOKENS_SIGNED;
//!
//! // With metrics-exporter-prometheus: install the recorder at start-up,
//! // then serve `handle.render()` at /metrics on a listener of its own.
//! let handle = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder().handle();
//! let text = handle.render();
//! assert!(!text.contains(TOKENS_SIGNED), "nothing signed yet");
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "metrics"))]
//! # fn main() {}
//! ```

/// `tjs_tokens_signed_total{alg, kid}`: tokens signed.
pub const TOKENS_SIGNED: &str = "tjs_tokens_signed_total";
/// `tjs_signing_failures_total{error}`: requests the signer refused.
pub const SIGNING_FAILURES: &str = "tjs_signing_failures_total";
/// `tjs_signing_duration_seconds{alg}`: the time to sign a token.
pub const SIGNING_DURATION: &str = "tjs_signing_duration_seconds";
/// `tjs_token_reuse_hits_total`: tokens handed out again.
pub const TOKEN_REUSE_HITS: &str = "tjs_token_reuse_hits_total";
/// `tjs_token_reuse_misses_total`: reuse lookups without a token.
pub const TOKEN_REUSE_MISSES: &str = "tjs_token_reuse_misses_total";
/// `tjs_jwks_requests_total`: JWKS requests answered.
pub const JWKS_REQUESTS: &str = "tjs_jwks_requests_total";
/// `tjs_jwks_not_modified_total`: JWKS requests answered 304.
pub const JWKS_NOT_MODIFIED: &str = "tjs_jwks_not_modified_total";
/// `tjs_verifier_refusals_total{reason}`: requests the verifier refused.
pub const VERIFIER_REFUSALS: &str = "tjs_verifier_refusals_total";
/// `tjs_remote_jwks_fetches_total`: remote JWKS fetches.
pub const REMOTE_JWKS_FETCHES: &str = "tjs_remote_jwks_fetches_total";
/// `tjs_remote_jwks_fetch_failures_total`: failed remote JWKS fetches.
pub const REMOTE_JWKS_FETCH_FAILURES: &str = "tjs_remote_jwks_fetch_failures_total";
/// `tjs_active_key_age_seconds`: the active key's age.
pub const ACTIVE_KEY_AGE: &str = "tjs_active_key_age_seconds";
/// `tjs_published_keys`: keys in the JWKS.
pub const PUBLISHED_KEYS: &str = "tjs_published_keys";

#[cfg(feature = "metrics")]
pub(crate) use on::*;

#[cfg(not(feature = "metrics"))]
pub(crate) use off::*;

/// The recording points, with the feature.
#[cfg(feature = "metrics")]
mod on {
    use std::time::{Instant, SystemTime};

    use ::metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

    use super::*;

    /// One key's handles, made when it first signs.
    pub(crate) struct KeyMetrics {
        signed: Counter,
        duration: Histogram,
        age: Gauge,
        /// When the key started signing, in Unix seconds.
        since: u64,
    }

    /// The start of a signature.
    pub(crate) struct Timer(Instant);

    impl Timer {
        #[inline]
        pub(crate) fn start() -> Self {
            Timer(Instant::now())
        }
    }

    fn unix(at: SystemTime) -> u64 {
        at.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs())
    }

    impl KeyMetrics {
        /// `since`: when the key started signing.
        pub(crate) fn new(alg: &'static str, kid: &str, since: SystemTime) -> Self {
            KeyMetrics {
                signed: counter!(TOKENS_SIGNED, "alg" => alg, "kid" => kid.to_owned()),
                duration: histogram!(SIGNING_DURATION, "alg" => alg),
                age: gauge!(ACTIVE_KEY_AGE),
                since: unix(since),
            }
        }

        /// A token signed at `now` (Unix seconds), started at `timer`.
        #[inline]
        pub(crate) fn signed(&self, timer: Timer, now: u64) {
            self.duration.record(timer.0.elapsed());
            self.signed.increment(1);
            self.age.set(now.saturating_sub(self.since) as f64);
        }
    }

    #[inline]
    pub(crate) fn signing_refused(error: &'static str) {
        counter!(SIGNING_FAILURES, "error" => error).increment(1);
    }

    #[inline]
    pub(crate) fn reuse(hit: bool) {
        if hit {
            counter!(TOKEN_REUSE_HITS).increment(1);
        } else {
            counter!(TOKEN_REUSE_MISSES).increment(1);
        }
    }

    #[inline]
    pub(crate) fn jwks_request(
        not_modified: bool,
        published: usize,
        active_since: Option<SystemTime>,
        now: SystemTime,
    ) {
        counter!(JWKS_REQUESTS).increment(1);
        if not_modified {
            counter!(JWKS_NOT_MODIFIED).increment(1);
        }
        published_keys(published);
        if let Some(since) = active_since {
            gauge!(ACTIVE_KEY_AGE).set(unix(now).saturating_sub(unix(since)) as f64);
        }
    }

    #[inline]
    pub(crate) fn published_keys(count: usize) {
        gauge!(PUBLISHED_KEYS).set(count as f64);
    }

    #[inline]
    pub(crate) fn verifier_refused(reason: &'static str) {
        counter!(VERIFIER_REFUSALS, "reason" => reason).increment(1);
    }

    #[inline]
    pub(crate) fn remote_fetch(ok: bool) {
        counter!(REMOTE_JWKS_FETCHES).increment(1);
        if !ok {
            counter!(REMOTE_JWKS_FETCH_FAILURES).increment(1);
        }
    }
}

/// The recording points without the feature: nothing, inlined away.
#[cfg(not(feature = "metrics"))]
mod off {

    pub(crate) struct KeyMetrics;

    pub(crate) struct Timer;

    impl Timer {
        #[inline(always)]
        pub(crate) fn start() -> Self {
            Timer
        }
    }

    impl KeyMetrics {
        #[inline(always)]
        pub(crate) fn new(_: &'static str, _: &str, _: std::time::SystemTime) -> Self {
            KeyMetrics
        }

        #[inline(always)]
        pub(crate) fn signed(&self, _: Timer, _: u64) {}
    }

    #[inline(always)]
    pub(crate) fn signing_refused(_: &'static str) {}

    #[inline(always)]
    pub(crate) fn reuse(_: bool) {}

    #[inline(always)]
    pub(crate) fn published_keys(_: usize) {}

    #[inline(always)]
    pub(crate) fn verifier_refused(_: &'static str) {}

    #[inline(always)]
    pub(crate) fn remote_fetch(_: bool) {}
}

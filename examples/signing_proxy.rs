//! A signing reverse proxy: every request is forwarded to one upstream
//! with a freshly signed JWT, and the public keys are served at the JWKS
//! path on the same listener.
//!
//! ```text
//! cargo run --example signing_proxy -- --listen 127.0.0.1:8080 --upstream http://127.0.0.1:3000 \
//!     --issuer gateway --audience orders --claim 'tenant=${req.headers.x-tenant:public}'
//! ```
//!
//! With `--key-dir DIR` the keys live in `DIR` and survive restarts (same
//! kids); with `--rotate-every SECS` they rotate on their own:
//!
//! ```text
//! cargo run --example signing_proxy -- --upstream http://127.0.0.1:3000 \
//!     --key-dir /var/lib/gateway/keys --rotate-every 86400
//! ```
//!
//! With `--redis-url URL --kek-file FILE` (feature `redis`) the replicas of
//! a fleet share one key set in Redis: one of them (the holder of the
//! leader lease) rotates, every one follows within milliseconds:
//!
//! ```text
//! cargo run --features redis --example signing_proxy -- --upstream http://127.0.0.1:3000 \
//!     --redis-url redis://127.0.0.1:6379/ --kek-file /etc/gateway/kek --rotate-every 86400
//! ```
//!
//! With `--pkcs11-module PATH --pkcs11-token LABEL --pkcs11-pin-file FILE`
//! (feature `pkcs11`) the keys never leave a PKCS#11 token (an HSM,
//! SoftHSM2): `--pkcs11-key LABEL` signs with a key provisioned in it;
//! without it, a key is made in the token on first start and `--key-dir`
//! keeps a reference to it; `--rotate-every` rotates inside the token:
//!
//! ```text
//! cargo run --features pkcs11 --example signing_proxy -- --upstream http://127.0.0.1:3000 \
//!     --pkcs11-module /usr/lib/softhsm/libsofthsm2.so --pkcs11-token gateway \
//!     --pkcs11-pin-file /etc/gateway/token-pin --key-dir /var/lib/gateway/keys --rotate-every 86400
//! ```
//!
//! With `--route PREFIX=ALG` (repeatable) requests under each prefix are
//! signed with a key of that algorithm (the longest prefix wins, `--alg`
//! elsewhere), every key in the one JWKS; with `--issuer` an http(s) URL,
//! the OpenID discovery document is served too (its `jwks_uri` is
//! `--jwks-uri`, or the issuer plus the JWKS path):
//!
//! ```text
//! cargo run --example signing_proxy -- --listen 127.0.0.1:8080 --upstream http://127.0.0.1:3000 \
//!     --issuer http://127.0.0.1:8080 --route /legacy=RS256 --route /partners=EdDSA
//! ```
//!
//! With `--cert-file FILE --key-file FILE` it signs with a key issued by
//! a PKI (the `tls.crt` / `tls.key` pair cert-manager writes) and
//! publishes its chain (`x5c`, `x5t#S256`); the files are polled
//! (`--cert-poll`), and a renewed certificate with a new key becomes the
//! next key, then the active one:
//!
//! ```text
//! cargo run --example signing_proxy -- --upstream http://127.0.0.1:3000 \
//!     --cert-file /etc/gateway/tls/tls.crt --key-file /etc/gateway/tls/tls.key
//! ```
//!
//! It is a real proxy: the library's `upstream::Forwarder` (hop-by-hop
//! headers removed, `X-Forwarded-For`/`Forwarded`, 502/504), tower-http's
//! `TraceLayer` (one line per request on stderr, `Authorization` and
//! `Cookie` marked sensitive so they never show), an upstream timeout
//! (`--timeout`), a request body limit (`--max-body`, 413), graceful
//! shutdown on SIGTERM or Ctrl-C (requests in flight finish), and, with the
//! `metrics` feature, Prometheus metrics on a listener of their own
//! (`--metrics-listen`). Every flag is also an environment variable
//! (`TJS_UPSTREAM`, ...). Run with `--help` for every flag.

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use clap::Parser;
use clap::builder::BoolishValueParser;
use http::{Request, Response, StatusCode, header};
use support::{AnyBody, boxed};
use tokio::net::TcpListener;
use tower::{ServiceBuilder, ServiceExt};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tower_jwt_signer::clock::Clock;
use tower_jwt_signer::registry::KeyRegistryBuilder;
use tower_jwt_signer::signer::{ExistingToken, Offload, TokenReuse};
use tower_jwt_signer::upstream::{self, ClientAddr, ForwardedHeaders};
use tower_jwt_signer::{
    Algorithm, ConfigError, DirKeyStore, Forwarder, JWKS_PATH, JwksService, JwtSignerLayer,
    KeyRegistry, KeyRotator, RegistryError, RotationPolicy,
};

const ABOUT: &str = "\
signing_proxy: forward every request to an upstream with a short-lived signed JWT

The JWKS is served at /.well-known/otoroshi/security/jwks.json on the same
listener and is never forwarded. Hop-by-hop headers are removed (RFC 9110:
Connection and every header it names, Keep-Alive, TE, Trailer,
Transfer-Encoding, Upgrade, Proxy-*). The client's X-Forwarded-For,
X-Forwarded-Host and Forwarded are replaced by the proxy's (appended to
with --trust-forwarded). Paths are normalised (dot-segments, also as %2e,
removed) before they are signed and forwarded; a path that would climb
above the upstream's base path, or holds %2f, %5c or '..;', is refused with
400, as are OPTIONS * (400) and CONNECT (405). An unreachable upstream
gives 502, one that does not answer within --timeout 504, a body over
--max-body 413. One line per request goes to stderr (Authorization and
Cookie never shown). SIGTERM or Ctrl-C stops accepting connections and lets
the requests in flight finish. Without --key-dir or --redis-url the key
lives in memory and a restart publishes a new one. With --cert-file and
--key-file the key and its certificate chain come from those files (a
cert-manager Secret), polled every --cert-poll seconds for a renewal.

With --redis-url, every replica runs with the same flags: --ttl and
--jwks-max-age set each replica's registry and the leader's rotation plans
with them, and --rotate-every on each is safe and recommended (only the
holder of the leader lease rotates). If Redis goes down, every replica
keeps signing and serving its JWKS and rotation waits; SIGTERM or Ctrl-C
releases the lease so another replica takes over at once.";

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "signing_proxy",
    about = "signing_proxy: forward every request to an upstream with a short-lived signed JWT",
    long_about = ABOUT,
    after_help = support::ENV_HELP,
)]
pub(crate) struct Cli {
    /// Address to listen on
    #[arg(
        long,
        env = "TJS_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:8080"
    )]
    listen: SocketAddr,
    /// Where to forward: http://host:port[/base-path]
    #[arg(
        long,
        env = "TJS_UPSTREAM",
        value_name = "URL",
        required_unless_present = "rewrap"
    )]
    upstream: Option<String>,
    /// The signing algorithm: RS256..RS512, PS256..PS512, ES256, ES384, ES512, EdDSA
    #[arg(long, env = "TJS_ALG", value_name = "ALG", default_value = "ES256")]
    alg: Algorithm,
    /// The iss claim; an http(s) URL (without query or fragment) also
    /// serves the OpenID discovery document (see --jwks-uri)
    #[arg(long, env = "TJS_ISSUER", value_name = "S")]
    issuer: Option<String>,
    /// The aud claim
    #[arg(long, env = "TJS_AUDIENCE", value_name = "S")]
    audience: Option<String>,
    /// The sub claim
    #[arg(long, env = "TJS_SUBJECT", value_name = "S")]
    subject: Option<String>,
    /// Token lifetime in seconds, 1 to 86400
    #[arg(long, env = "TJS_TTL", value_name = "SECS", default_value = "60", value_parser = support::seconds)]
    ttl: Duration,
    /// A request that already has the header: replace, keep or reject
    #[arg(
        long,
        env = "TJS_EXISTING",
        value_name = "POLICY",
        default_value = "replace"
    )]
    existing: ExistingToken,
    /// Where signatures are computed: inline, blocking or auto
    #[arg(long, env = "TJS_OFFLOAD", value_name = "MODE", default_value = "auto")]
    offload: Offload,
    /// Hand out a recent token again for equal claims (jti no longer unique)
    #[arg(long, env = "TJS_REUSE", value_parser = BoolishValueParser::new())]
    reuse: bool,
    /// The header the token goes in [default: Authorization]
    #[arg(long, env = "TJS_HEADER", value_name = "NAME")]
    header: Option<String>,
    /// The scheme before the token [default: Bearer]; '' for a bare token
    #[arg(long, env = "TJS_SCHEME", value_name = "S")]
    scheme: Option<String>,
    /// A claim, NAME=VALUE (repeatable). VALUE may hold ${req.headers.NAME},
    /// ${req.query.NAME}, ${req.path}, ${req.method}, ${req.host}, each with
    /// :default, and ${number:...} / ${boolean:...} alone for typed values
    #[arg(long = "claim", env = "TJS_CLAIM", value_name = "NAME=VALUE", value_delimiter = '\n', value_parser = parse_claim)]
    claims: Vec<(String, String)>,
    /// Cache-Control max-age of the JWKS, in seconds
    #[arg(long, env = "TJS_JWKS_MAX_AGE", value_name = "SECS", default_value = "300", value_parser = support::seconds)]
    jwks_max_age: Duration,
    /// The upstream's answer must start within SECS (else 504); the whole
    /// request is cut 5 s later (503) if the proxy itself stalls
    #[arg(long, env = "TJS_TIMEOUT", value_name = "SECS", default_value = "30", value_parser = support::positive_seconds)]
    timeout: Duration,
    /// The largest request body forwarded, in bytes: a larger one is
    /// answered 413 (a Content-Length over it is never forwarded; a chunked
    /// body is cut where it goes over)
    #[arg(
        long,
        env = "TJS_MAX_BODY",
        value_name = "BYTES",
        default_value = "10485760"
    )]
    max_body: usize,
    /// Append to the X-Forwarded-For and Forwarded chains the client sends,
    /// instead of replacing them: only behind a proxy you run, which writes
    /// them itself (a client can write anything there)
    #[arg(long, env = "TJS_TRUST_FORWARDED", value_parser = BoolishValueParser::new())]
    trust_forwarded: bool,
    /// What goes to stderr: error, warn, info (one line per request) or
    /// debug
    #[arg(
        long,
        env = "TJS_LOG_LEVEL",
        value_name = "LEVEL",
        default_value = "info"
    )]
    log_level: tracing::Level,
    /// Serve Prometheus metrics at http://ADDR/metrics, on a listener of
    /// their own (needs the `metrics` feature)
    #[arg(long, env = "TJS_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Keep the keys in DIR (created 0700 when missing): load them at
    /// start, create one if there is none; a restart keeps the kids
    #[arg(
        long,
        env = "TJS_KEY_DIR",
        value_name = "DIR",
        conflicts_with = "redis_url"
    )]
    key_dir: Option<PathBuf>,
    /// Rotate the signing key every SECS seconds
    #[arg(long, env = "TJS_ROTATE_EVERY", value_name = "SECS", value_parser = support::seconds)]
    rotate_every: Option<Duration>,
    /// Publish the next key SECS before it signs [default: the smaller of
    /// half the period and the JWKS max-age; with --redis-url at least
    /// --redis-poll; a shorter one is refused]
    #[arg(long, env = "TJS_PREPUBLISH", value_name = "SECS", value_parser = support::seconds, requires = "rotate_every")]
    prepublish: Option<Duration>,
    /// Keep an old key published SECS after it stops signing [default and
    /// minimum: ttl + 60 s of verifier leeway (+ --redis-poll with
    /// --redis-url)]
    #[arg(long, env = "TJS_RETAIN", value_name = "SECS", value_parser = support::seconds, requires = "rotate_every")]
    retain: Option<Duration>,
    /// Keep the keys in Redis, shared by every replica of the fleet
    /// (redis:// or rediss://, user:password@ for ACLs; needs the `redis`
    /// feature)
    #[arg(
        long,
        env = "TJS_REDIS_URL",
        value_name = "URL",
        hide_env_values = true,
        requires = "kek_files"
    )]
    redis_url: Option<String>,
    /// The key-encryption key (32 bytes) the private keys are encrypted
    /// with in Redis; created 0600 when missing; give every replica the
    /// same file, owned by the proxy's user and 0600, as key files. Repeat
    /// it to rotate the KEK: the first encrypts, the others only decrypt
    #[arg(
        long = "kek-file",
        env = "TJS_KEK_FILE",
        value_name = "FILE",
        value_delimiter = '\n',
        requires = "redis_url"
    )]
    kek_files: Vec<PathBuf>,
    /// The namespace of the fleet's Redis keys
    #[arg(
        long,
        env = "TJS_REDIS_PREFIX",
        value_name = "P",
        default_value = "tower-jwt-signer",
        requires = "redis_url"
    )]
    redis_prefix: String,
    /// The leader lease's TTL: another replica takes over within it after
    /// the leader dies
    #[arg(long, env = "TJS_LEADER_LEASE", value_name = "SECS", default_value = "10", value_parser = support::positive_seconds, requires = "redis_url")]
    leader_lease: Duration,
    /// Reload the keys every SECS even without a change notification; at
    /// most --rotate-every: the next key is published at least that long
    /// before it signs, so short periods need a short poll
    #[arg(long, env = "TJS_REDIS_POLL", value_name = "SECS", default_value = "5", value_parser = support::positive_seconds, requires = "redis_url")]
    redis_poll: Duration,
    /// Re-encrypt every record in Redis under the first --kek-file, then
    /// exit (the last step of a KEK rotation)
    #[arg(long, env = "TJS_REWRAP", value_parser = BoolishValueParser::new(), requires = "redis_url")]
    rewrap: bool,
    /// Sign inside a PKCS#11 token (needs the `pkcs11` feature)
    #[command(flatten)]
    pkcs11: hsm::Pkcs11Flags,
    /// Per-route algorithms and OpenID discovery
    #[command(flatten)]
    disco: disco::DiscoFlags,
    /// Sign with a key and its certificate chain from files
    #[command(flatten)]
    cert: certs::CertFlags,
}

/// `NAME=VALUE`.
fn parse_claim(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("needs NAME=VALUE, got {text:?}"))
}

/// The parsed command line.
#[derive(Debug)]
pub(crate) struct Options {
    pub(crate) listen: SocketAddr,
    pub(crate) upstream: String,
    pub(crate) alg: Algorithm,
    pub(crate) issuer: Option<String>,
    pub(crate) audience: Option<String>,
    pub(crate) subject: Option<String>,
    pub(crate) ttl: Duration,
    pub(crate) existing: ExistingToken,
    pub(crate) offload: Offload,
    pub(crate) reuse: bool,
    pub(crate) header: Option<String>,
    pub(crate) scheme: Option<String>,
    pub(crate) claims: Vec<(String, String)>,
    pub(crate) jwks_max_age: Duration,
    pub(crate) timeout: Duration,
    pub(crate) max_body: usize,
    pub(crate) forwarded: ForwardedHeaders,
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) metrics_listen: Option<SocketAddr>,
    pub(crate) log_level: tracing::Level,
    pub(crate) key_dir: Option<PathBuf>,
    pub(crate) rotate_every: Option<Duration>,
    pub(crate) prepublish: Option<Duration>,
    pub(crate) retain: Option<Duration>,
    pub(crate) redis: Option<RedisOptions>,
    pub(crate) pkcs11: Option<hsm::Pkcs11Options>,
    pub(crate) disco: disco::DiscoOptions,
    pub(crate) cert: Option<certs::CertOptions>,
}

/// The fleet's flags: `--redis-url` and its companions.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) struct RedisOptions {
    /// Never printed as is: it may hold a password.
    pub(crate) url: String,
    pub(crate) kek_files: Vec<PathBuf>,
    pub(crate) prefix: String,
    pub(crate) lease: Duration,
    pub(crate) poll: Duration,
    pub(crate) rewrap: bool,
}

impl std::fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: never shown.
        f.debug_struct("RedisOptions")
            .field("kek_files", &self.kek_files)
            .field("prefix", &self.prefix)
            .field("lease", &self.lease)
            .field("poll", &self.poll)
            .field("rewrap", &self.rewrap)
            .finish_non_exhaustive()
    }
}

impl Cli {
    /// The options, or why not (what clap's attributes cannot say).
    fn options(self) -> Result<Options, String> {
        // First: what --route cannot go with, whichever features are built.
        let disco = self.disco.check(
            self.issuer.as_deref(),
            self.redis_url.is_some(),
            self.pkcs11.is_given(),
        )?;
        // Whatever the features, these flags never go with a store or a
        // token.
        let cert = self.cert.check(
            self.key_dir.is_some(),
            self.rotate_every.is_some(),
            self.redis_url.is_some(),
            self.pkcs11.is_given(),
        )?;
        if cert.is_some() && disco.has_routes() {
            return Err(
                "--route and --cert-file are exclusive in this proxy: the routes' keys are not certificate-backed"
                    .to_owned(),
            );
        }
        if self.redis_url.is_some() && !cfg!(feature = "redis") {
            return Err(
                "--redis-url needs the `redis` feature: cargo run --features redis --example signing_proxy"
                    .to_owned(),
            );
        }
        if self.metrics_listen.is_some() && !cfg!(feature = "metrics") {
            return Err(
                "--metrics-listen needs the `metrics` feature: cargo run --features metrics --example signing_proxy"
                    .to_owned(),
            );
        }
        let pkcs11 = self.pkcs11.check(
            self.key_dir.is_some(),
            self.rotate_every.is_some(),
            self.redis_url.is_some(),
        )?;
        let redis = self.redis_url.map(|url| RedisOptions {
            url,
            kek_files: self.kek_files,
            prefix: self.redis_prefix,
            lease: self.leader_lease,
            poll: self.redis_poll,
            rewrap: self.rewrap,
        });
        // Nothing else is needed to rewrap.
        let upstream = self
            .upstream
            .unwrap_or_else(|| "http://127.0.0.1:1".to_owned());
        Ok(Options {
            listen: self.listen,
            upstream,
            alg: self.alg,
            issuer: self.issuer,
            audience: self.audience,
            subject: self.subject,
            ttl: self.ttl,
            existing: self.existing,
            offload: self.offload,
            reuse: self.reuse,
            header: self.header,
            scheme: self.scheme,
            claims: self.claims,
            jwks_max_age: self.jwks_max_age,
            timeout: self.timeout,
            max_body: self.max_body,
            forwarded: if self.trust_forwarded {
                ForwardedHeaders::Append
            } else {
                ForwardedHeaders::Replace
            },
            metrics_listen: self.metrics_listen,
            log_level: self.log_level,
            key_dir: self.key_dir,
            rotate_every: self.rotate_every,
            prepublish: self.prepublish,
            retain: self.retain,
            redis,
            pkcs11,
            disco,
            cert,
        })
    }
}

/// The prepublish time the options ask for: `--prepublish`, else half the
/// period or the JWKS max-age, whichever is shorter, and with Redis at
/// least one `--redis-poll` interval.
fn prepublish_for(options: &Options, period: Duration) -> Duration {
    options.prepublish.unwrap_or_else(|| {
        let default = (period / 2).min(options.jwks_max_age);
        match &options.redis {
            Some(redis) => default.max(redis.poll),
            None => default,
        }
    })
}

/// The rotation policy the options ask for (`None` without
/// `--rotate-every`). The registry holds the token lifetime (`--ttl`) and
/// the JWKS max-age (`--jwks-max-age`) it is resolved against, by
/// `KeyRotator::spawn` or, before the proxy starts, `RotationPolicy::resolve`.
pub(crate) fn rotation_policy(options: &Options) -> Result<Option<RotationPolicy>, ConfigError> {
    rotation_policy_for(options, options.alg)
}

/// [`rotation_policy`] for the keys of `alg` (a `--route`'s).
pub(crate) fn rotation_policy_for(
    options: &Options,
    alg: Algorithm,
) -> Result<Option<RotationPolicy>, ConfigError> {
    let Some(period) = options.rotate_every else {
        return Ok(None);
    };
    // By default the next key is published half a period ahead, or one
    // JWKS max-age ahead when that is shorter: caches see it in time. In a
    // fleet, at least one poll interval ahead: every replica sees it first.
    let prepublish = prepublish_for(options, period);
    let mut policy = RotationPolicy::builder(period)
        .algorithm(alg)
        .prepublish(prepublish);
    if let Some(redis) = &options.redis {
        // Replicas see changes up to one poll late (retain covers it), and
        // a rotation that waits for Redis is tried again soon.
        policy = policy
            .follower_poll_interval(redis.poll)
            .retry_after((period / 2).clamp(Duration::from_secs(1), Duration::from_secs(30)));
    }
    if let Some(retain) = options.retain {
        policy = policy.retain(retain);
    }
    policy.build().map(Some)
}

/// A registry with the options' settings and no keys (no I/O): to check
/// the other settings against before anything starts.
pub(crate) fn settings_registry(options: &Options) -> Result<KeyRegistry, RegistryError> {
    KeyRegistry::builder()
        .token_ttl(options.ttl)
        .jwks_max_age(options.jwks_max_age)
        .build()
}

/// The registry's settings: the token lifetime (`--ttl`) and the JWKS
/// max-age (`--jwks-max-age`), the same on every replica of a fleet, and a
/// first key of `--alg` when there is none.
fn registry_builder(options: &Options, clock: Clock) -> KeyRegistryBuilder {
    KeyRegistry::builder()
        .clock(clock)
        .token_ttl(options.ttl)
        .jwks_max_age(options.jwks_max_age)
        .generate_if_missing(options.alg)
}

/// The key registry: in memory, or loaded from (and kept in) `--key-dir`,
/// with a fresh key when there is none (made in the PKCS#11 token with
/// `--pkcs11-*`). Blocking (file I/O, key generation, the token).
pub(crate) fn open_registry(
    options: &Options,
    clock: Clock,
) -> Result<KeyRegistry, Box<dyn std::error::Error + Send + Sync>> {
    if let Some(pkcs11) = &options.pkcs11 {
        return hsm::open_registry(options, pkcs11, clock);
    }
    if let Some(cert) = &options.cert {
        return certs::open_registry(options, cert, clock);
    }
    let builder = registry_builder(options, clock);
    match &options.key_dir {
        // Keys of another algorithm than --alg in the directory stop the
        // start with an error that names the file.
        Some(dir) => Ok(builder
            .store(DirKeyStore::builder(dir).algorithm(options.alg).open()?)
            .build()?),
        None => Ok(builder.build()?),
    }
}

/// The signer the options describe. Every setting is checked here, before
/// the proxy listens. Its token lifetime is the registry's (`--ttl`).
pub(crate) fn signer_layer(
    options: &Options,
    registry: KeyRegistry,
) -> Result<JwtSignerLayer, ConfigError> {
    let mut layer = JwtSignerLayer::builder(registry)
        .existing_token(options.existing)
        .offload(options.offload)
        .header_x5t_s256(options.cert.as_ref().is_some_and(|cert| cert.header_x5t));
    if options.reuse {
        layer = layer.reuse_tokens(TokenReuse::new());
    }
    if let Some(issuer) = &options.issuer {
        layer = layer.issuer(issuer);
    }
    if let Some(audience) = &options.audience {
        layer = layer.audience(audience);
    }
    if let Some(subject) = &options.subject {
        layer = layer.subject(subject);
    }
    if let Some(header) = &options.header {
        layer = layer.header_name(header);
    }
    match options.scheme.as_deref() {
        None => {}
        Some("") => layer = layer.without_scheme(),
        Some(scheme) => layer = layer.scheme(scheme),
    }
    for (name, value) in &options.claims {
        layer = if value.contains('$') {
            layer.template_claim(name, value)
        } else {
            layer.claim(name, value.as_str())
        };
    }
    layer.build()
}

/// The forwarder the options describe: `--upstream`, `--timeout`,
/// `--trust-forwarded`.
pub(crate) fn forwarder(options: &Options) -> Result<Forwarder, ConfigError> {
    Forwarder::builder(&options.upstream)
        .timeout(options.timeout)
        .forwarded_headers(options.forwarded)
        .build()
}

/// The proxy: the JWKS at `JWKS_PATH` (every signer's keys), the discovery
/// document when `--issuer` is a URL, everything else checked, signed (by
/// the signer of its `--route`) and forwarded, under tower-http's layers
/// (outermost first): sensitive `Authorization` and `Cookie`, one trace
/// line per request, the request timeout, the body limit.
pub(crate) fn app(
    options: &Options,
    signers: disco::Signers,
    forwarder: Forwarder,
) -> Result<Router, ConfigError> {
    // Cache-Control: max-age is the registries' --jwks-max-age.
    let jwks = JwksService::new(signers.jwks_source()?);
    let discovery = disco::discovery(options, jwks.source().clone())?;
    let routes = std::sync::Arc::new(signers.routes());
    let forwards: std::sync::Arc<Vec<_>> = std::sync::Arc::new(
        signers
            .into_layers()
            .into_iter()
            .map(|signer| {
                ServiceBuilder::new()
                    .layer(signer)
                    .service(forwarder.clone())
            })
            .collect(),
    );
    let route = tower::service_fn(move |request: Request<Body>| {
        let jwks = jwks.clone();
        let discovery = discovery.clone();
        let forward = forwards[routes.pick(request.uri().path())].clone();
        async move {
            // Dot-segments, `OPTIONS *` and `CONNECT` are refused here,
            // before anything is signed (the forwarder checks again).
            let request = match upstream::check_target(request) {
                Ok(request) => request,
                Err(refused) => return Ok(refused.into_response().map(boxed)),
            };
            let path = request.uri().path();
            let response: Response<AnyBody> = if path == JWKS_PATH {
                jwks.oneshot(request).await?.map(boxed)
            } else if let Some(discovery) = discovery.filter(|d| d.path() == path) {
                discovery.oneshot(request).await?.map(boxed)
            } else {
                // The client's address, for X-Forwarded-For and Forwarded.
                let client = request
                    .extensions()
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|c| c.0);
                let mut request = request;
                if let Some(client) = client {
                    request.extensions_mut().insert(ClientAddr(client));
                }
                forward.oneshot(request).await?.map(boxed)
            };
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    // One line per request (INFO, on the response), with the request's
    // headers; Authorization and Cookie are marked sensitive before it, so
    // the line shows "Sensitive", never their values. The token the signer
    // adds is written after the line's span is made.
    let trace = TraceLayer::new_for_http()
        .make_span_with(
            DefaultMakeSpan::new()
                .level(tracing::Level::INFO)
                .include_headers(true),
        )
        .on_request(())
        .on_response(DefaultOnResponse::new().level(tracing::Level::INFO))
        .on_failure(());
    Ok(Router::new().fallback_service(route).layer(
        ServiceBuilder::new()
            .layer(SetSensitiveRequestHeadersLayer::new([
                header::AUTHORIZATION,
                header::COOKIE,
            ]))
            .layer(trace)
            // The upstream has --timeout (504); past it and 5 s more, the
            // proxy itself is stalled (signing threads saturated).
            .layer(TimeoutLayer::with_status_code(
                StatusCode::SERVICE_UNAVAILABLE,
                options.timeout + Duration::from_secs(5),
            ))
            .layer(RequestBodyLimitLayer::new(options.max_body))
            .map_request(|request: Request<tower_http::body::Limited<Body>>| {
                request.map(Body::new)
            }),
    ))
}

/// Makes the registry, checks the options and serves; returns when the
/// proxy cannot start.
pub(crate) async fn run(options: Options) -> Result<(), Box<dyn std::error::Error>> {
    #[cfg(feature = "redis")]
    if let Some(redis) = options.redis.as_ref().filter(|redis| redis.rewrap) {
        return fleet::rewrap(redis).await;
    }
    let alg = options.alg;
    let policy = rotation_policy(&options)?;
    let listener = TcpListener::bind(options.listen).await?;
    // The recorder first: the registry, the signer and the JWKS record
    // into it from their first key on.
    #[cfg(feature = "metrics")]
    let _metrics = match options.metrics_listen {
        Some(addr) => Some(metrics_listener::start(addr).await?),
        None => None,
    };
    let options = std::sync::Arc::new(options);
    #[cfg(feature = "redis")]
    let (registry, fleet) = match &options.redis {
        Some(redis) => {
            let (registry, fleet) = fleet::open(&options, redis).await?;
            (registry, Some(fleet))
        }
        None => {
            let opening = std::sync::Arc::clone(&options);
            let registry =
                tokio::task::spawn_blocking(move || open_registry(&opening, Clock::system()))
                    .await?
                    .map_err(|err| err as Box<dyn std::error::Error>)?;
            (registry, None)
        }
    };
    #[cfg(not(feature = "redis"))]
    let registry = {
        let opening = std::sync::Arc::clone(&options);
        tokio::task::spawn_blocking(move || open_registry(&opening, Clock::system()))
            .await?
            .map_err(|err| err as Box<dyn std::error::Error>)?
    };
    if let Some(pkcs11) = &options.pkcs11 {
        println!("{}", pkcs11.describe());
    }
    // Watches the certificate files for as long as the proxy serves.
    let _reloader = match &options.cert {
        Some(cert) => {
            println!("{}", cert.describe(&options));
            Some(
                certs::spawn_reloader(registry.clone(), cert, &options)
                    .map_err(|err| err as Box<dyn std::error::Error>)?,
            )
        }
        None => None,
    };
    let signer = signer_layer(&options, registry.clone())?;
    let forwarder = forwarder(&options)?;
    // --route: a registry and a signer per algorithm besides --alg's.
    let opening = std::sync::Arc::clone(&options);
    let signers = tokio::task::spawn_blocking(move || {
        disco::Signers::open(&opening, signer, Clock::system())
    })
    .await?
    .map_err(|err| err as Box<dyn std::error::Error>)?;
    // Rotates for as long as the proxy serves (stopped when dropped).
    let rotator = match policy {
        Some(policy) => Some(KeyRotator::spawn(registry.clone(), policy)?),
        None => None,
    };
    let route_rotators = signers.spawn_rotators(&options)?;
    let rotation = rotator.as_ref().map(|rotator| {
        format!(
            "rotating every {} s; each next key published {} s ahead; old keys kept {} s",
            rotator.policy().rotate_every().as_secs(),
            rotator.prepublish().as_secs(),
            rotator.retain().as_secs(),
        )
    });
    let kid = registry
        .current()
        .active()
        .map(|key| key.kid().to_string())
        .unwrap_or_default();
    println!(
        "signing proxy on http://{} -> http://{}{} ({alg}, kid {kid}); JWKS at http://{}{JWKS_PATH}; timeout {} s, max body {} bytes, forwarded headers {}",
        listener.local_addr()?,
        forwarder.authority(),
        forwarder.base_path(),
        listener.local_addr()?,
        options.timeout.as_secs(),
        options.max_body,
        match options.forwarded {
            ForwardedHeaders::Append => "appended",
            _ => "replaced",
        },
    );
    if let Some(dir) = &options.key_dir {
        println!("keys in {}", dir.display());
    }
    if let Some(rotation) = rotation {
        println!("{rotation}");
    }
    signers.describe(&options, listener.local_addr()?);
    #[cfg(feature = "redis")]
    if let Some(fleet) = &fleet {
        println!("{}", fleet.describe());
    }
    // Stops accepting on SIGTERM or Ctrl-C; the requests in flight finish.
    let app = app(&options, signers, forwarder)?;
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await?;
    eprintln!("stopped: every request in flight was answered");
    // SIGTERM or Ctrl-C: stop rotating, then release the lease so another
    // replica takes over at once.
    if let Some(rotator) = rotator {
        rotator.stop().await;
    }
    for rotator in route_rotators {
        rotator.stop().await;
    }
    #[cfg(feature = "redis")]
    if let Some(fleet) = fleet {
        fleet.stop().await;
    }
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            return std::future::pending().await;
        };
        let ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
        let term = std::pin::pin!(term.recv());
        futures_util::future::select(ctrl_c, term).await;
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The fleet on Redis: the store, the leader lease, the follower.
#[cfg(feature = "redis")]
mod fleet {
    use std::time::Duration;

    use tower_jwt_signer::clock::Clock;
    use tower_jwt_signer::registry::StoreFollower;
    use tower_jwt_signer::store::redis::{Kek, LeaderLease};
    use tower_jwt_signer::{KeyRegistry, RedisKeyStore};

    use super::{Options, RedisOptions};

    type Error = Box<dyn std::error::Error>;

    /// What keeps the replica in the fleet while it serves.
    pub(crate) struct Fleet {
        store: RedisKeyStore,
        lease: LeaderLease,
        follower: StoreFollower,
    }

    impl Fleet {
        pub(crate) fn describe(&self) -> String {
            format!(
                "keys in Redis {:?} (prefix {}, KEK {}); leader lease {} s ({}); poll {} s",
                self.store,
                self.store.prefix(),
                self.store.kek_ids()[0],
                self.store.lease_ttl().as_secs(),
                if self.lease.is_held() {
                    "held"
                } else {
                    "another replica leads"
                },
                self.follower.interval().as_secs(),
            )
        }

        pub(crate) async fn stop(self) {
            self.follower.stop().await;
            self.lease.stop().await;
        }
    }

    /// The KEKs: the first `--kek-file` is created (0600, 32 random bytes,
    /// with a warning in the log) when missing; the others must exist.
    fn keks(files: &[std::path::PathBuf]) -> Result<Vec<Kek>, Error> {
        let mut keks = Vec::new();
        for (i, file) in files.iter().enumerate() {
            keks.push(Kek::builder(file).create(i == 0).open()?);
        }
        Ok(keks)
    }

    /// The store, connected (with a bounded, logged retry).
    async fn store(redis: &RedisOptions) -> Result<RedisKeyStore, Error> {
        // The first --kek-file encrypts; the others only decrypt.
        let mut keks = keks(&redis.kek_files)?.into_iter();
        let first = keks.next().ok_or("--redis-url needs --kek-file")?;
        let mut builder = RedisKeyStore::builder(redis.url.as_str(), first)
            .prefix(redis.prefix.as_str())
            .leader_lease(redis.lease)
            .command_timeout(Duration::from_secs(2).min(redis.lease / 3));
        for previous in keks {
            builder = builder.previous_kek(previous);
        }
        let store = builder.build()?;
        let connecting = store.clone();
        tokio::task::spawn_blocking(move || connecting.connect()).await??;
        Ok(store)
    }

    /// `--rewrap`: re-encrypts every record under the first KEK, and ends.
    pub(crate) async fn rewrap(redis: &RedisOptions) -> Result<(), Error> {
        let store = store(redis).await?;
        let rewrapping = store.clone();
        let count = tokio::task::spawn_blocking(move || rewrapping.rewrap()).await??;
        println!(
            "re-encrypted {count} record(s) under key-encryption key {}",
            store.kek_ids()[0]
        );
        Ok(())
    }

    /// Joins the fleet: the store, the lease (first attempt done), the
    /// registry (the leader makes the first key), the follower; a replica
    /// that does not lead waits for the leader's first key.
    pub(crate) async fn open(
        options: &Options,
        redis: &RedisOptions,
    ) -> Result<(KeyRegistry, Fleet), Error> {
        let store = store(redis).await?;
        let lease = LeaderLease::spawn(&store).await;
        // The first key is the leader's to make (`generate_if_missing` does
        // nothing on a replica that does not lead).
        let building = super::registry_builder(options, Clock::system()).store(store.clone());
        let registry = tokio::task::spawn_blocking(move || building.build()).await??;
        let follower = StoreFollower::spawn(registry.clone(), redis.poll)?;
        let mut changes = registry.subscribe();
        let wait = redis.lease * 3 + redis.poll;
        let first_key = tokio::time::timeout(
            wait,
            changes.wait_for(|snapshot| snapshot.active().is_some()),
        );
        if registry.current().active().is_none() {
            tracing::info!("waiting for the leader's first key");
            if first_key.await.is_err() {
                return Err(format!(
                    "no active key in Redis after {} s: no replica leads (is the lease held by a replica that cannot write?)",
                    wait.as_secs()
                )
                .into());
            }
        }
        Ok((
            registry,
            Fleet {
                store,
                lease,
                follower,
            },
        ))
    }
}

/// `--pkcs11-*`: keys that never leave a PKCS#11 token.
mod hsm {
    use std::path::PathBuf;

    use tower_jwt_signer::KeyRegistry;
    use tower_jwt_signer::clock::Clock;

    use super::Options;

    type Error = Box<dyn std::error::Error + Send + Sync>;

    /// The `--pkcs11-*` flags as given.
    #[derive(Debug, Default, clap::Args)]
    pub(crate) struct Pkcs11Flags {
        /// Sign inside a PKCS#11 token: the module (.so) (needs the
        /// `pkcs11` feature, --pkcs11-token and --pkcs11-pin-file)
        #[arg(long = "pkcs11-module", env = "TJS_PKCS11_MODULE", value_name = "PATH")]
        module: Option<PathBuf>,
        /// The token's label
        #[arg(long = "pkcs11-token", env = "TJS_PKCS11_TOKEN", value_name = "LABEL")]
        token: Option<String>,
        /// The token's user PIN, in a file owned by the proxy's user, 0600
        #[arg(
            long = "pkcs11-pin-file",
            env = "TJS_PKCS11_PIN_FILE",
            value_name = "FILE"
        )]
        pin_file: Option<PathBuf>,
        /// Sign with the token's key of this label (--alg says how);
        /// without it a key is made in the token on first start, and
        /// --key-dir is required (it keeps references to the token's keys,
        /// never key material); --rotate-every makes each next key in the
        /// token and destroys retired ones there
        #[arg(long = "pkcs11-key", env = "TJS_PKCS11_KEY", value_name = "LABEL")]
        key: Option<String>,
    }

    /// The token to sign in, checked.
    #[derive(Debug)]
    #[cfg_attr(not(feature = "pkcs11"), allow(dead_code))]
    pub(crate) struct Pkcs11Options {
        pub(crate) module: PathBuf,
        pub(crate) token: String,
        pub(crate) pin_file: PathBuf,
        pub(crate) key: Option<String>,
    }

    impl Pkcs11Flags {
        /// Whether any `--pkcs11-*` flag is given.
        pub(crate) fn is_given(&self) -> bool {
            self.module.is_some()
                || self.token.is_some()
                || self.pin_file.is_some()
                || self.key.is_some()
        }

        /// The options, or why the flags do not go together.
        pub(crate) fn check(
            self,
            key_dir: bool,
            rotate: bool,
            redis: bool,
        ) -> Result<Option<Pkcs11Options>, String> {
            let Pkcs11Flags {
                module,
                token,
                pin_file,
                key,
            } = self;
            let (module, token, pin_file) = match (module, token, pin_file) {
                (None, None, None) if key.is_none() => return Ok(None),
                (Some(module), Some(token), Some(pin_file)) => (module, token, pin_file),
                _ => {
                    return Err(
                        "--pkcs11-module, --pkcs11-token and --pkcs11-pin-file go together"
                            .to_owned(),
                    );
                }
            };
            if !cfg!(feature = "pkcs11") {
                return Err("--pkcs11-module needs the `pkcs11` feature: cargo run --features pkcs11 --example signing_proxy".to_owned());
            }
            if redis {
                return Err(
                    "--pkcs11-module and --redis-url are exclusive in this proxy".to_owned(),
                );
            }
            if !key_dir && key.is_none() {
                return Err("without --pkcs11-key, a key is made in the token: give --key-dir, where a reference to it is kept so that a restart finds it".to_owned());
            }
            if !key_dir && rotate {
                return Err("--rotate-every with --pkcs11-module needs --key-dir: the references to the keys made in the token are kept there".to_owned());
            }
            Ok(Some(Pkcs11Options {
                module,
                token,
                pin_file,
                key,
            }))
        }
    }

    impl Pkcs11Options {
        pub(crate) fn describe(&self) -> String {
            format!(
                "keys in PKCS#11 token {:?} (module {}){}",
                self.token,
                self.module.display(),
                self.key
                    .as_ref()
                    .map(|key| format!(", signing with key {key:?}"))
                    .unwrap_or_default()
            )
        }
    }

    /// Opens the token (the PIN file checked like a key file), then the
    /// registry: its new keys are made in the token; with `--key-dir` it
    /// keeps references to them; `--pkcs11-key` is the active key when the
    /// directory holds none. Blocking.
    #[cfg(feature = "pkcs11")]
    pub(crate) fn open_registry(
        options: &Options,
        pkcs11: &Pkcs11Options,
        clock: Clock,
    ) -> Result<KeyRegistry, Error> {
        use tower_jwt_signer::{DirKeyStore, Pkcs11Token};

        // --ttl and --jwks-max-age, as without a token.
        let builder = KeyRegistry::builder()
            .clock(clock)
            .token_ttl(options.ttl)
            .jwks_max_age(options.jwks_max_age);
        let token = Pkcs11Token::builder(&pkcs11.module, &pkcs11.token)
            .pin_file(&pkcs11.pin_file)
            .open()?;
        let key = match &pkcs11.key {
            Some(label) => Some(token.key(label, options.alg)?),
            None => None,
        };
        let builder = builder.key_factory(token);
        let Some(dir) = &options.key_dir else {
            let key = key.expect("checked: --pkcs11-key without --key-dir");
            return Ok(builder.active(key).build()?);
        };
        let store = DirKeyStore::builder(dir).algorithm(options.alg).open()?;
        let Some(key) = key else {
            // The first start makes the key in the token.
            return Ok(builder
                .store(store)
                .generate_if_missing(options.alg)
                .build()?);
        };
        let registry = builder.store(store).build()?;
        if registry.current().active().is_none() {
            // The first start: the provisioned key signs first.
            registry.add_next(key)?;
        }
        Ok(registry)
    }

    #[cfg(not(feature = "pkcs11"))]
    pub(crate) fn open_registry(
        _: &Options,
        _: &Pkcs11Options,
        _: Clock,
    ) -> Result<KeyRegistry, Error> {
        Err("--pkcs11-module needs the `pkcs11` feature".into())
    }
}

/// `--route PREFIX=ALG` and `--jwks-uri`: several signing setups behind the
/// one JWKS, and the OpenID discovery document.
mod disco {
    use std::net::SocketAddr;

    use tower_jwt_signer::clock::Clock;
    use tower_jwt_signer::discovery::DiscoveryService;
    use tower_jwt_signer::jwks::JwksSource;
    use tower_jwt_signer::{
        Algorithm, ConfigError, DirKeyStore, JwtSignerLayer, KeyRegistry, KeyRotator,
    };

    use super::Options;

    type Error = Box<dyn std::error::Error + Send + Sync>;

    /// The `--route` and `--jwks-uri` flags as given.
    #[derive(Debug, Default, clap::Args)]
    pub(crate) struct DiscoFlags {
        /// Sign the requests under PREFIX (/legacy: /legacy and /legacy/...)
        /// with a key of ALG (repeatable; the longest prefix wins, --alg
        /// elsewhere). One key registry and signer per algorithm, every key
        /// in the one JWKS; with --key-dir the keys of an algorithm other
        /// than --alg live in DIR/ALG; with --rotate-every each rotates on
        /// its own. Not with --redis-url or --pkcs11-module
        #[arg(
            long = "route",
            env = "TJS_ROUTE",
            value_name = "PREFIX=ALG",
            value_delimiter = '\n',
            value_parser = parse_route
        )]
        routes: Vec<(String, Algorithm)>,
        /// The discovery document's jwks_uri [default: --issuer plus the
        /// JWKS path]. The document is served (at the issuer's path plus
        /// /.well-known/openid-configuration) when --issuer is an http(s)
        /// URL
        #[arg(long = "jwks-uri", env = "TJS_JWKS_URI", value_name = "URL")]
        jwks_uri: Option<String>,
    }

    /// `PREFIX=ALG`: an absolute path (a trailing `/` dropped) and an
    /// algorithm.
    fn parse_route(text: &str) -> Result<(String, Algorithm), String> {
        let (prefix, alg) = text
            .rsplit_once('=')
            .ok_or_else(|| format!("needs PREFIX=ALG, got {text:?}"))?;
        if !prefix.starts_with('/') || prefix.contains(['?', '#']) {
            return Err(format!(
                "the prefix {prefix:?} must be a path: it starts with '/', without '?' or '#'"
            ));
        }
        let alg: Algorithm = alg.parse().map_err(|err| format!("{err}"))?;
        let prefix = match prefix.trim_end_matches('/') {
            "" => "/",
            trimmed => trimmed,
        };
        Ok((prefix.to_owned(), alg))
    }

    /// The routes and the discovery settings, checked.
    #[derive(Debug, Default)]
    pub(crate) struct DiscoOptions {
        routes: Vec<(String, Algorithm)>,
        jwks_uri: Option<String>,
        /// `--issuer`, when it is an http(s) URL: the discovery document is
        /// served.
        issuer_url: Option<String>,
    }

    impl DiscoOptions {
        /// Whether any `--route` was given.
        pub(crate) fn has_routes(&self) -> bool {
            !self.routes.is_empty()
        }
    }

    impl DiscoFlags {
        /// The options, or why the flags do not go together.
        pub(crate) fn check(
            self,
            issuer: Option<&str>,
            redis: bool,
            pkcs11: bool,
        ) -> Result<DiscoOptions, String> {
            let DiscoFlags { routes, jwks_uri } = self;
            for (i, (prefix, _)) in routes.iter().enumerate() {
                if routes[..i].iter().any(|(other, _)| other == prefix) {
                    return Err(format!("--route {prefix} is given twice"));
                }
            }
            if !routes.is_empty() && redis {
                return Err("--route is not supported with --redis-url: the fleet shares one key set, of --alg".to_owned());
            }
            if !routes.is_empty() && pkcs11 {
                return Err("--route is not supported with --pkcs11-module: the token holds the keys of --alg".to_owned());
            }
            let issuer_url = issuer
                .filter(|issuer| issuer.starts_with("http://") || issuer.starts_with("https://"))
                .map(str::to_owned);
            if jwks_uri.is_some() && issuer_url.is_none() {
                return Err("--jwks-uri needs --issuer as an http(s) URL: the discovery document is served only then".to_owned());
            }
            Ok(DiscoOptions {
                routes,
                jwks_uri,
                issuer_url,
            })
        }
    }

    /// The discovery document of `source`'s keys, when `--issuer` is a URL.
    pub(crate) fn discovery(
        options: &Options,
        source: JwksSource,
    ) -> Result<Option<DiscoveryService>, ConfigError> {
        let Some(issuer) = &options.disco.issuer_url else {
            return Ok(None);
        };
        let mut builder = DiscoveryService::builder(issuer, source);
        if let Some(url) = &options.disco.jwks_uri {
            builder = builder.jwks_uri(url);
        }
        builder.build().map(Some)
    }

    /// The signer of `--alg` and one per other `--route` algorithm, each on
    /// its own registry.
    pub(crate) struct Signers {
        default: JwtSignerLayer,
        others: Vec<(Algorithm, JwtSignerLayer)>,
        routes: Vec<(String, Algorithm)>,
    }

    /// Which signer a path gets: `(prefix, index)`, longest prefix first;
    /// index 0 is `--alg`'s.
    pub(crate) struct Routes(Vec<(String, usize)>);

    impl Routes {
        /// The signer of the longest prefix `path` is under, else `--alg`'s.
        pub(crate) fn pick(&self, path: &str) -> usize {
            self.0
                .iter()
                .find(|(prefix, _)| {
                    prefix == "/"
                        || path
                            .strip_prefix(prefix.as_str())
                            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
                })
                .map_or(0, |(_, index)| *index)
        }
    }

    impl Signers {
        /// Opens a registry (in memory, or in `--key-dir`/ALG) and a signer
        /// for each `--route` algorithm other than `--alg`. Blocking.
        pub(crate) fn open(
            options: &Options,
            default: JwtSignerLayer,
            clock: Clock,
        ) -> Result<Self, Error> {
            let mut others: Vec<(Algorithm, JwtSignerLayer)> = Vec::new();
            for &(_, alg) in &options.disco.routes {
                if alg == options.alg || others.iter().any(|(other, _)| *other == alg) {
                    continue;
                }
                let mut builder = KeyRegistry::builder()
                    .clock(clock.clone())
                    .token_ttl(options.ttl)
                    .jwks_max_age(options.jwks_max_age)
                    .generate_if_missing(alg);
                if let Some(dir) = &options.key_dir {
                    let store = DirKeyStore::builder(dir.join(alg.as_str()))
                        .algorithm(alg)
                        .open()?;
                    builder = builder.store(store);
                }
                let registry = builder.build()?;
                others.push((alg, super::signer_layer(options, registry)?));
            }
            Ok(Signers {
                default,
                others,
                routes: options.disco.routes.clone(),
            })
        }

        fn registries(&self) -> Vec<KeyRegistry> {
            std::iter::once(&self.default)
                .chain(self.others.iter().map(|(_, signer)| signer))
                .map(|signer| signer.registry().clone())
                .collect()
        }

        /// Every registry's keys: one registry's as they are, several
        /// merged.
        pub(crate) fn jwks_source(&self) -> Result<JwksSource, ConfigError> {
            match self.registries().as_slice() {
                [one] => Ok(JwksSource::from(one.clone())),
                several => JwksSource::merged(several.iter().cloned()),
            }
        }

        pub(crate) fn routes(&self) -> Routes {
            let mut table: Vec<(String, usize)> = self
                .routes
                .iter()
                .map(|(prefix, alg)| {
                    let index = self
                        .others
                        .iter()
                        .position(|(other, _)| other == alg)
                        .map_or(0, |i| i + 1);
                    (prefix.clone(), index)
                })
                .collect();
            table.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
            Routes(table)
        }

        /// The signers, `--alg`'s first, in the order [`Routes`] indexes.
        pub(crate) fn into_layers(self) -> Vec<JwtSignerLayer> {
            std::iter::once(self.default)
                .chain(self.others.into_iter().map(|(_, signer)| signer))
                .collect()
        }

        /// A rotator for each `--route` registry, with `--rotate-every`.
        pub(crate) fn spawn_rotators(
            &self,
            options: &Options,
        ) -> Result<Vec<KeyRotator>, ConfigError> {
            let mut rotators = Vec::new();
            for (alg, signer) in &self.others {
                if let Some(policy) = super::rotation_policy_for(options, *alg)? {
                    rotators.push(KeyRotator::spawn(signer.registry().clone(), policy)?);
                }
            }
            Ok(rotators)
        }

        /// One line per route, and where the discovery document is.
        pub(crate) fn describe(&self, options: &Options, addr: SocketAddr) {
            let kid = |signer: &JwtSignerLayer| {
                signer
                    .registry()
                    .current()
                    .active()
                    .map(|key| key.kid().to_string())
                    .unwrap_or_default()
            };
            for (prefix, alg) in &self.routes {
                let signer = self
                    .others
                    .iter()
                    .find(|(other, _)| other == alg)
                    .map_or(&self.default, |(_, signer)| signer);
                println!("route {prefix} signed with {alg} (kid {})", kid(signer));
            }
            if let Ok(Some(discovery)) = self
                .jwks_source()
                .and_then(|source| discovery(options, source))
            {
                println!(
                    "discovery at http://{addr}{} (issuer {}, jwks_uri {})",
                    discovery.path(),
                    discovery.issuer(),
                    discovery.jwks_uri()
                );
            }
        }
    }
}

fn main() -> ExitCode {
    let options = match Cli::parse().options() {
        Ok(options) => options,
        Err(message) => support::refuse::<Cli>(message),
    };
    // Check the registry, signer, forwarder and rotation settings before
    // anything starts, on a registry with the options' settings and no
    // keys.
    let settings = match settings_registry(&options) {
        Ok(registry) => registry,
        Err(RegistryError::Config(err)) => support::refuse_setting::<Cli>(&err),
        Err(err) => support::refuse::<Cli>(err),
    };
    if let Err(err) = signer_layer(&options, settings.clone()) {
        support::refuse_setting::<Cli>(&err);
    }
    if let Err(err) = disco::discovery(&options, settings.clone().into()) {
        support::refuse_setting::<Cli>(&err);
    }
    if let Err(err) = forwarder(&options) {
        support::refuse::<Cli>(format!("{err} (--upstream)"));
    }
    let resolved = rotation_policy(&options)
        .and_then(|policy| policy.map(|policy| policy.resolve(&settings)).transpose());
    if let Err(err) = resolved {
        support::refuse_setting::<Cli>(&err);
    }
    // One line per request, the fleet's events (lease, notifications,
    // rotation) and the signer's refusals, on stderr.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_max_level(options.log_level)
        .try_init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// `--metrics-listen`: Prometheus text at `/metrics`, on its own listener.
#[cfg(feature = "metrics")]
mod metrics_listener {
    use std::net::SocketAddr;

    use axum::Router;
    use axum::routing::get;
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    use tokio::net::TcpListener;

    /// The histogram buckets of the `_seconds` metrics: 10 µs to 1 s.
    const BUCKETS: &[f64] = &[
        0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01,
        0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    ];

    /// Installs the recorder and serves it on `addr`; the server stops
    /// when the returned task is dropped with the runtime.
    pub(crate) async fn start(
        addr: SocketAddr,
    ) -> Result<tokio::task::JoinHandle<()>, Box<dyn std::error::Error>> {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), BUCKETS)?
            .install_recorder()?;
        let listener = TcpListener::bind(addr).await?;
        println!("metrics on http://{}/metrics", listener.local_addr()?);
        let upkeep = handle.clone();
        let app = Router::new().route(
            "/metrics",
            get(move || {
                let handle = upkeep.clone();
                async move { handle.render() }
            }),
        );
        Ok(tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                eprintln!("metrics listener stopped: {err}");
            }
        }))
    }
}

/// `--cert-file` / `--key-file`: sign with a key issued by a PKI (the
/// `tls.crt` / `tls.key` pair cert-manager writes in a Secret) and publish
/// its chain; a renewal becomes a rotation.
mod certs {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use clap::builder::BoolishValueParser;
    use tower_jwt_signer::clock::Clock;
    use tower_jwt_signer::registry::KeyState;
    use tower_jwt_signer::{Algorithm, KeyRegistry, Kid, SigningKey};

    use super::Options;

    type Error = Box<dyn std::error::Error + Send + Sync>;

    /// The largest key or certificate file read, in bytes.
    const MAX_FILE_LEN: u64 = 256 * 1024;

    /// The verifiers' leeway on `exp` assumed when an old key retires (as
    /// the rotation policy's default): it stays published for the token
    /// lifetime plus this.
    const VERIFIER_LEEWAY: Duration = Duration::from_secs(60);

    /// The certificate flags as given.
    #[derive(Debug, clap::Args)]
    pub(crate) struct CertFlags {
        /// Sign with the key of --key-file and publish this certificate
        /// chain with it (PEM, leaf first: cert-manager's tls.crt); the
        /// leaf must be the key's. The key signs only while every
        /// certificate of the chain is valid (503 otherwise)
        #[arg(
            long = "cert-file",
            env = "TJS_CERT_FILE",
            value_name = "FILE",
            requires = "key_file"
        )]
        cert_file: Option<PathBuf>,
        /// The private key of --cert-file (PEM: PKCS#8, PKCS#1 or SEC 1,
        /// unencrypted: cert-manager's tls.key); --alg must fit it
        #[arg(
            long = "key-file",
            env = "TJS_KEY_FILE",
            value_name = "FILE",
            requires = "cert_file"
        )]
        key_file: Option<PathBuf>,
        /// Look at --cert-file and --key-file every SECS (modification time
        /// and SHA-256 of their content). Polling, not SIGHUP: Kubernetes
        /// updates a Secret volume by swapping a symlink and sends no
        /// signal. A renewed pair with a new key is published as the next
        /// key, signs --cert-prepublish later, and the old key stays
        /// published for --ttl + 60 s; a renewed certificate of the same
        /// key replaces the old chain at once
        #[arg(long = "cert-poll", env = "TJS_CERT_POLL", value_name = "SECS", default_value = "10", value_parser = super::support::positive_seconds)]
        cert_poll: Duration,
        /// Publish a renewed certificate's key SECS before it signs
        /// [default: --jwks-max-age, so that verifiers' caches see it first]
        #[arg(long = "cert-prepublish", env = "TJS_CERT_PREPUBLISH", value_name = "SECS", value_parser = super::support::seconds)]
        cert_prepublish: Option<Duration>,
        /// Also put the certificate's x5t#S256 in every token's header
        /// (default: the header is {alg, typ, kid})
        #[arg(long = "header-x5t", env = "TJS_HEADER_X5T", value_parser = BoolishValueParser::new())]
        header_x5t: bool,
    }

    /// The certificate options, checked.
    #[derive(Debug, Clone)]
    pub(crate) struct CertOptions {
        pub(crate) cert_file: PathBuf,
        pub(crate) key_file: PathBuf,
        pub(crate) poll: Duration,
        pub(crate) prepublish: Option<Duration>,
        pub(crate) header_x5t: bool,
    }

    impl CertFlags {
        /// The options, or why the flags do not go together.
        pub(crate) fn check(
            self,
            key_dir: bool,
            rotate: bool,
            redis: bool,
            pkcs11: bool,
        ) -> Result<Option<CertOptions>, String> {
            let (cert_file, key_file) = match (self.cert_file, self.key_file) {
                (Some(cert), Some(key)) => (cert, key),
                (None, None) => {
                    if self.cert_prepublish.is_some() || self.header_x5t {
                        return Err(
                            "--cert-prepublish and --header-x5t need --cert-file and --key-file"
                                .to_owned(),
                        );
                    }
                    return Ok(None);
                }
                _ => return Err("--cert-file and --key-file go together".to_owned()),
            };
            let exclusive = [
                (
                    pkcs11,
                    "--pkcs11-module: the key is in the token, not in --key-file",
                ),
                (
                    redis,
                    "--redis-url: a fleet shares generated keys; give each replica the same files instead",
                ),
                (key_dir, "--key-dir: the files are where the key is kept"),
                (
                    rotate,
                    "--rotate-every: a certificate's key rotates when the certificate is renewed",
                ),
            ];
            if let Some((_, why)) = exclusive.iter().find(|(given, _)| *given) {
                return Err(format!("--cert-file cannot go with {why}"));
            }
            Ok(Some(CertOptions {
                cert_file,
                key_file,
                poll: self.cert_poll,
                prepublish: self.cert_prepublish,
                header_x5t: self.header_x5t,
            }))
        }
    }

    /// The two files, as read once.
    struct Pair {
        cert: Vec<u8>,
        key: Vec<u8>,
        /// SHA-256 of both, to see a change.
        digest: Vec<u8>,
    }

    /// Reads a file of at most [`MAX_FILE_LEN`] bytes (following symlinks:
    /// Kubernetes' `..data` layout).
    fn read_bounded(path: &Path) -> Result<Vec<u8>, Error> {
        use std::io::Read as _;
        let file = std::fs::File::open(path)
            .map_err(|err| format!("cannot open {}: {err}", path.display()))?;
        let mut bytes = Vec::new();
        file.take(MAX_FILE_LEN + 1)
            .read_to_end(&mut bytes)
            .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
        if bytes.len() as u64 > MAX_FILE_LEN {
            return Err(format!(
                "{} is larger than {} KiB: not a key or a certificate chain",
                path.display(),
                MAX_FILE_LEN / 1024
            )
            .into());
        }
        Ok(bytes)
    }

    fn read_pair(options: &CertOptions) -> Result<Pair, Error> {
        let cert = read_bounded(&options.cert_file)?;
        let key = read_bounded(&options.key_file)?;
        let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        context.update(&(cert.len() as u64).to_be_bytes());
        context.update(&cert);
        context.update(&key);
        let digest = context.finish().as_ref().to_vec();
        Ok(Pair { cert, key, digest })
    }

    /// The key of a pair, with its chain.
    fn key_of(pair: &Pair, options: &CertOptions, alg: Algorithm) -> Result<SigningKey, Error> {
        SigningKey::from_pem_with_certificate_chain(&pair.key, &pair.cert, alg).map_err(|err| {
            format!(
                "{} and {}: {err}",
                options.key_file.display(),
                options.cert_file.display()
            )
            .into()
        })
    }

    /// The modification times of the two files, for the log.
    fn modified(options: &CertOptions) -> (Option<SystemTime>, Option<SystemTime>) {
        let of = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
        (of(&options.cert_file), of(&options.key_file))
    }

    /// The registry with the files' key active. Blocking.
    pub(crate) fn open_registry(
        options: &Options,
        certs: &CertOptions,
        clock: Clock,
    ) -> Result<KeyRegistry, Error> {
        let pair = read_pair(certs)?;
        let key = key_of(&pair, certs, options.alg)?;
        let chain = key.certificate_chain().expect("imported with its chain");
        if !chain.is_valid_at(clock.now()) {
            tracing::error!(
                kid = %key.kid(),
                "the certificate of {} is not valid now: every request is refused (503) until it is renewed",
                certs.cert_file.display()
            );
        }
        Ok(KeyRegistry::builder()
            .clock(clock)
            .token_ttl(options.ttl)
            .jwks_max_age(options.jwks_max_age)
            .active(key)
            .build()?)
    }

    /// What the reloader is doing with a renewal.
    struct Reloader {
        registry: KeyRegistry,
        options: CertOptions,
        alg: Algorithm,
        prepublish: Duration,
        retain: Duration,
        /// The digest of the pair last acted on (loaded, or refused).
        seen: Vec<u8>,
        /// The renewal published as next, and when it signs.
        pending: Option<(Kid, SystemTime)>,
        modified: (Option<SystemTime>, Option<SystemTime>),
    }

    impl Reloader {
        /// One poll: activate a renewal that is due, drop retired keys,
        /// then look at the files.
        async fn poll(&mut self) {
            let now = self.registry.clock().now();
            if let Some((kid, at)) = self.pending.clone()
                && now >= at
            {
                match self.registry.rotate(self.retain) {
                    Ok(active) => {
                        tracing::info!(kid = %active, previous_retained_for = ?self.retain, "renewed certificate's key activated");
                        self.pending = None;
                    }
                    Err(err) => {
                        tracing::error!(kid = %kid, error = %err, "cannot activate the renewed certificate's key; will retry")
                    }
                }
            }
            let snapshot = self.registry.current();
            for key in snapshot.keys() {
                if key.state() == KeyState::Retiring && key.retires_at().is_some_and(|at| at <= now)
                {
                    match self.registry.remove(key.kid()) {
                        Ok(()) => tracing::info!(kid = %key.kid(), "old key removed"),
                        Err(err) => {
                            tracing::warn!(kid = %key.kid(), error = %err, "cannot remove an old key")
                        }
                    }
                }
            }
            let options = self.options.clone();
            let alg = self.alg;
            let read = tokio::task::spawn_blocking(move || {
                let pair = read_pair(&options)?;
                Ok::<_, Error>((pair.digest.clone(), key_of(&pair, &options, alg)))
            })
            .await;
            let (digest, key) = match read {
                Ok(Ok(read)) => read,
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, "cannot read the certificate files; keeping the current key");
                    return;
                }
                Err(err) => {
                    tracing::error!(error = %err, "the certificate reload failed");
                    return;
                }
            };
            let modified = modified(&self.options);
            if digest == self.seen {
                self.modified = modified;
                return;
            }
            tracing::info!(
                cert_file = %self.options.cert_file.display(),
                changed_since = ?self.modified,
                modified = ?modified,
                "the certificate files changed"
            );
            let key = match key {
                Ok(key) => key,
                Err(err) => {
                    // A writer that replaces the files one by one: the
                    // next poll sees the pair whole.
                    tracing::warn!(error = %err, "the changed certificate files are refused; keeping the current key, looking again next poll");
                    return;
                }
            };
            self.seen = digest;
            self.modified = modified;
            self.renewed(key);
        }

        /// A pair that loads: the same key with a new chain, or a new key.
        fn renewed(&mut self, key: SigningKey) {
            let kid = key.kid().clone();
            let not_after = key
                .certificate_chain()
                .map(|chain| super::support_unix(chain.not_after()));
            if self.registry.current().get(kid.as_str()).is_some() {
                match self.registry.renew_certificate(key) {
                    Ok(()) => {
                        tracing::info!(kid = %kid, not_after, "renewed certificate of the same key published")
                    }
                    Err(err) => {
                        tracing::error!(kid = %kid, error = %err, "cannot publish the renewed certificate")
                    }
                }
                return;
            }
            // A renewal not yet active is withdrawn (it never signed).
            if let Some((pending, _)) = self.pending.take()
                && let Err(err) = self.registry.remove(&pending)
            {
                tracing::warn!(kid = %pending, error = %err, "cannot withdraw the previous renewal");
            }
            let at = self.registry.clock().now() + self.prepublish;
            match self.registry.add_next_due(key, Some(at)) {
                Ok(kid) => {
                    tracing::info!(kid = %kid, not_after, activates_in = ?self.prepublish, "renewed certificate's key published as the next key");
                    self.pending = Some((kid, at));
                }
                Err(err) => {
                    tracing::error!(kid = %kid, error = %err, "cannot publish the renewed certificate's key")
                }
            }
        }
    }

    /// Watches the files for as long as the proxy runs (aborted when the
    /// handle is dropped).
    pub(crate) fn spawn_reloader(
        registry: KeyRegistry,
        certs: &CertOptions,
        options: &Options,
    ) -> Result<AbortOnDrop, Error> {
        let seen = read_pair(certs)?.digest;
        let mut reloader = Reloader {
            registry,
            options: certs.clone(),
            alg: options.alg,
            prepublish: certs.prepublish.unwrap_or(options.jwks_max_age),
            retain: options.ttl + VERIFIER_LEEWAY,
            seen,
            pending: None,
            modified: modified(certs),
        };
        let poll = certs.poll;
        let task = tokio::spawn(async move {
            loop {
                let wait = match &reloader.pending {
                    Some((_, at)) => at
                        .duration_since(reloader.registry.clock().now())
                        .unwrap_or(Duration::ZERO)
                        .min(poll),
                    None => poll,
                };
                tokio::time::sleep(wait).await;
                reloader.poll().await;
            }
        });
        Ok(AbortOnDrop(Arc::new(task)))
    }

    /// Stops the reloader when dropped.
    pub(crate) struct AbortOnDrop(Arc<tokio::task::JoinHandle<()>>);

    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }

    impl CertOptions {
        pub(crate) fn describe(&self, options: &Options) -> String {
            format!(
                "key and certificate from {} and {}, looked at every {} s; a renewed key is published {} s before it signs",
                self.key_file.display(),
                self.cert_file.display(),
                self.poll.as_secs(),
                self.prepublish.unwrap_or(options.jwks_max_age).as_secs(),
            )
        }
    }
}

/// Unix seconds of `time`, for log fields.
fn support_unix(time: std::time::SystemTime) -> u64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

//! A small signing reverse proxy: every request is forwarded to one
//! upstream with a freshly signed JWT, and the public keys are served at
//! the JWKS path on the same listener.
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
//! Run with `--help` for every flag.

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use support::{AnyBody, Args, Forwarder, Upstream, boxed};
use tokio::net::TcpListener;
use tower::{ServiceBuilder, ServiceExt};
use tower_jwt_signer::clock::Clock;
use tower_jwt_signer::registry::KeyRegistryBuilder;
use tower_jwt_signer::signer::{ExistingToken, Offload, TokenReuse};
use tower_jwt_signer::{
    Algorithm, ConfigError, DirKeyStore, JWKS_PATH, JwksService, JwtSignerLayer, KeyRegistry,
    KeyRotator, RegistryError, RotationPolicy,
};

const HELP: &str = "\
signing_proxy: forward every request to an upstream with a short-lived signed JWT

USAGE:
    signing_proxy --upstream URL [OPTIONS]

OPTIONS:
    --listen ADDR          address to listen on [default: 127.0.0.1:8080]
    --upstream URL         where to forward, http://host:port[/base-path] (required)
    --alg ALG              RS256..RS512, PS256..PS512, ES256, ES384, ES512, EdDSA [default: ES256]
    --issuer S             the iss claim
    --audience S           the aud claim
    --subject S            the sub claim
    --ttl SECS             token lifetime in seconds, 1 to 86400 [default: 60]
    --existing POLICY      replace | keep | reject: a request that already has the header [default: replace]
    --offload MODE         inline | blocking | auto: where signatures are computed [default: auto]
    --reuse                hand out a recent token again for equal claims (jti no longer unique)
    --header NAME          the header the token goes in [default: Authorization]
    --scheme S             the scheme before the token [default: Bearer]; '' for a bare token
    --claim NAME=VALUE     a claim; VALUE may hold ${req.headers.NAME}, ${req.query.NAME},
                           ${req.path}, ${req.method}, ${req.host}, each with :default, and
                           ${number:...} / ${boolean:...} alone for typed values (repeatable)
    --jwks-max-age SECS    Cache-Control max-age of the JWKS [default: 300]
    --key-dir DIR          keep the keys in DIR (created 0700 when missing): load them at
                           start, create one if there is none; a restart keeps the kids
    --rotate-every SECS    rotate the signing key every SECS seconds
    --prepublish SECS      publish the next key SECS before it signs
                           [default: the smaller of half the period and the JWKS max-age;
                           with --redis-url at least --redis-poll; a shorter one is refused]
    --retain SECS          keep an old key published SECS after it stops signing
                           [default and minimum: ttl + 60 s of verifier leeway
                           (+ the --redis-poll interval with --redis-url)]
    --redis-url URL        keep the keys in Redis, shared by every replica of the fleet
                           (redis:// or rediss://, user:password@ for ACLs; needs the
                           `redis` feature); exclusive with --key-dir
    --kek-file FILE        the key-encryption key (32 bytes) the private keys are
                           encrypted with in Redis; created 0600 when missing; give
                           every replica the same file, owned by the proxy's user and
                           0600, as key files. Repeat it to rotate the KEK: the first
                           encrypts, the others only decrypt (required with --redis-url)
    --redis-prefix P       the namespace of the fleet's Redis keys [default: tower-jwt-signer]
    --leader-lease SECS    the leader lease's TTL: another replica takes over within it
                           after the leader dies [default: 10]
    --redis-poll SECS      reload the keys every SECS even without a change notification
                           [default: 5]; at most --rotate-every: the next key is published
                           at least that long before it signs, so short periods need a
                           short poll
    --rewrap               re-encrypt every record in Redis under the first --kek-file,
                           then exit (the last step of a KEK rotation)
    --pkcs11-module PATH   sign inside a PKCS#11 token: the module (.so) (needs the
                           `pkcs11` feature, --pkcs11-token and --pkcs11-pin-file)
    --pkcs11-token LABEL   the token's label
    --pkcs11-pin-file FILE the token's user PIN, in a file owned by the proxy's user, 0600
    --pkcs11-key LABEL     sign with the token's key of this label (--alg says how);
                           without it a key is made in the token on first start, and
                           --key-dir is required (it keeps references to the token's
                           keys, never key material); --rotate-every makes each next
                           key in the token and destroys retired ones there
    -h, --help             print this help

The JWKS is served at /.well-known/otoroshi/security/jwks.json on the same
listener and is never forwarded. Hop-by-hop headers are removed. Paths
are normalised (dot-segments, also as %2e, removed) before they are signed
and forwarded; a path that would climb above the upstream's base path, or
holds %2f, %5c or '..;', is refused with 400, as are OPTIONS * (400) and
CONNECT (405). An unreachable upstream gives 502. Without --key-dir or
--redis-url the key lives in memory and a restart publishes a new one.

With --redis-url, every replica runs with the same flags: --ttl and
--jwks-max-age set each replica's registry and the leader's rotation plans
with them, and --rotate-every on each is safe and recommended (only the
holder of the leader lease rotates).
If Redis goes down, every replica keeps signing and serving its JWKS and
rotation waits; SIGTERM or Ctrl-C releases the lease so another replica
takes over at once.
";

/// The parsed command line.
#[derive(Debug)]
pub(crate) struct Options {
    pub(crate) listen: SocketAddr,
    pub(crate) upstream: Upstream,
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
    pub(crate) key_dir: Option<PathBuf>,
    pub(crate) rotate_every: Option<Duration>,
    pub(crate) prepublish: Option<Duration>,
    pub(crate) retain: Option<Duration>,
    pub(crate) redis: Option<RedisOptions>,
    pub(crate) pkcs11: Option<hsm::Pkcs11Options>,
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

/// What the command line asks for.
#[derive(Debug)]
pub(crate) enum Command {
    Help,
    Run(Box<Options>),
}

/// Parses the arguments (without the program name).
pub(crate) fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut args = Args::new(args);
    let mut listen: SocketAddr = "127.0.0.1:8080".parse().expect("a valid address");
    let mut upstream = None;
    let mut alg = Algorithm::ES256;
    let (mut issuer, mut audience, mut subject, mut header, mut scheme) =
        (None, None, None, None, None);
    let mut ttl = Duration::from_secs(60);
    let mut existing = ExistingToken::Replace;
    let (mut offload, mut reuse) = (Offload::Auto, false);
    let mut claims = Vec::new();
    let mut jwks_max_age = Duration::from_secs(300);
    let (mut key_dir, mut rotate_every, mut prepublish, mut retain) = (None, None, None, None);
    let (mut redis_url, mut kek_files, mut redis_prefix) = (None, Vec::new(), None);
    let (mut leader_lease, mut redis_poll, mut rewrap) = (None, None, false);
    let mut pkcs11 = hsm::Pkcs11Flags::default();
    while let Some((flag, inline)) = args.next_flag()? {
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--listen" => listen = args.parsed(&flag, inline)?,
            "--upstream" => upstream = Some(args.parsed(&flag, inline)?),
            "--alg" => alg = args.parsed(&flag, inline)?,
            "--issuer" => issuer = Some(args.value(&flag, inline)?),
            "--audience" => audience = Some(args.value(&flag, inline)?),
            "--subject" => subject = Some(args.value(&flag, inline)?),
            "--ttl" => ttl = Duration::from_secs(args.parsed(&flag, inline)?),
            "--existing" => existing = args.parsed(&flag, inline)?,
            "--offload" => offload = args.parsed(&flag, inline)?,
            "--reuse" => reuse = true,
            "--header" => header = Some(args.value(&flag, inline)?),
            "--scheme" => scheme = Some(args.value(&flag, inline)?),
            "--claim" => {
                let claim = args.value(&flag, inline)?;
                let (name, value) = claim
                    .split_once('=')
                    .ok_or_else(|| format!("--claim needs NAME=VALUE, got {claim:?}"))?;
                claims.push((name.to_owned(), value.to_owned()));
            }
            "--jwks-max-age" => {
                jwks_max_age = Duration::from_secs(args.parsed(&flag, inline)?);
            }
            "--key-dir" => key_dir = Some(PathBuf::from(args.value(&flag, inline)?)),
            "--rotate-every" => {
                rotate_every = Some(Duration::from_secs(args.parsed(&flag, inline)?));
            }
            "--prepublish" => prepublish = Some(Duration::from_secs(args.parsed(&flag, inline)?)),
            "--retain" => retain = Some(Duration::from_secs(args.parsed(&flag, inline)?)),
            "--redis-url" => redis_url = Some(args.value(&flag, inline)?),
            "--kek-file" => kek_files.push(PathBuf::from(args.value(&flag, inline)?)),
            "--redis-prefix" => redis_prefix = Some(args.value(&flag, inline)?),
            "--leader-lease" => {
                leader_lease = Some(Duration::from_secs(args.parsed(&flag, inline)?));
            }
            "--redis-poll" => redis_poll = Some(Duration::from_secs(args.parsed(&flag, inline)?)),
            "--rewrap" => rewrap = true,
            _ if hsm::Pkcs11Flags::takes(&flag) => {
                pkcs11.set(&flag, args.value(&flag, inline)?);
            }
            _ => return Err(support::unknown_flag(&flag)),
        }
    }
    let redis = match redis_url {
        None => {
            for (given, flag) in [
                (!kek_files.is_empty(), "--kek-file"),
                (redis_prefix.is_some(), "--redis-prefix"),
                (leader_lease.is_some(), "--leader-lease"),
                (redis_poll.is_some(), "--redis-poll"),
                (rewrap, "--rewrap"),
            ] {
                if given {
                    return Err(format!("{flag} needs --redis-url"));
                }
            }
            None
        }
        Some(url) => {
            if !cfg!(feature = "redis") {
                return Err(
                    "--redis-url needs the `redis` feature: cargo run --features redis --example signing_proxy"
                        .to_owned(),
                );
            }
            if key_dir.is_some() {
                return Err(
                    "--key-dir and --redis-url are exclusive: the keys live in one store"
                        .to_owned(),
                );
            }
            if kek_files.is_empty() {
                return Err(
                    "--redis-url needs --kek-file FILE: the key-encryption key of the fleet"
                        .to_owned(),
                );
            }
            let poll = redis_poll.unwrap_or(Duration::from_secs(5));
            if poll.is_zero() {
                return Err("--redis-poll must be at least 1 second".to_owned());
            }
            Some(RedisOptions {
                url,
                kek_files,
                prefix: redis_prefix.unwrap_or_else(|| "tower-jwt-signer".to_owned()),
                lease: leader_lease.unwrap_or(Duration::from_secs(10)),
                poll,
                rewrap,
            })
        }
    };
    if rewrap {
        // Nothing else is needed to rewrap.
        upstream.get_or_insert_with(|| "http://127.0.0.1:1".parse().expect("a valid upstream"));
    }
    let upstream = upstream.ok_or("--upstream URL is required")?;
    let pkcs11 = pkcs11.check(key_dir.is_some(), rotate_every.is_some(), redis.is_some())?;
    if rotate_every.is_none() {
        if prepublish.is_some() {
            return Err("--prepublish needs --rotate-every".to_owned());
        }
        if retain.is_some() {
            return Err("--retain needs --rotate-every".to_owned());
        }
    }
    Ok(Command::Run(Box::new(Options {
        listen,
        upstream,
        alg,
        issuer,
        audience,
        subject,
        ttl,
        existing,
        offload,
        reuse,
        header,
        scheme,
        claims,
        jwks_max_age,
        key_dir,
        rotate_every,
        prepublish,
        retain,
        redis,
        pkcs11,
    })))
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
    let Some(period) = options.rotate_every else {
        return Ok(None);
    };
    // By default the next key is published half a period ahead, or one
    // JWKS max-age ahead when that is shorter: caches see it in time. In a
    // fleet, at least one poll interval ahead: every replica sees it first.
    let prepublish = prepublish_for(options, period);
    let mut policy = RotationPolicy::builder(period)
        .algorithm(options.alg)
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
        .offload(options.offload);
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

/// Serves the proxy on `listener` until the task is dropped (every
/// connection task is aborted with it).
pub(crate) async fn serve(
    listener: TcpListener,
    options: &Options,
    signer: JwtSignerLayer,
) -> std::io::Result<()> {
    // Cache-Control: max-age is the registry's --jwks-max-age.
    let jwks = JwksService::new(signer.registry().clone());
    // Hop-by-hop headers go first, so that a `Connection` header can never
    // name the token header away after it was added.
    let forward = ServiceBuilder::new()
        .map_request(support::strip_request::<Incoming>)
        .layer(signer)
        .service(Forwarder::<Incoming>::new(options.upstream.clone()));
    let route = tower::service_fn(move |request: Request<Incoming>| {
        let jwks = jwks.clone();
        let forward = forward.clone();
        async move {
            // Dot-segments, `OPTIONS *` and `CONNECT` are refused here,
            // before anything is signed.
            let request = match support::checked_target(request) {
                Ok(request) => request,
                Err(refused) => return Ok(refused.into_response()),
            };
            let response: Response<AnyBody> = if request.uri().path() == JWKS_PATH {
                jwks.oneshot(request).await?.map(boxed)
            } else {
                forward.oneshot(request).await?.map(boxed)
            };
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors and the like: wait, keep serving.
                eprintln!("accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(route.clone());
        connections.spawn(async move {
            if let Err(err) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                eprintln!("connection error: {err}");
            }
        });
        // Reap finished connections.
        while connections.try_join_next().is_some() {}
    }
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
    let signer = signer_layer(&options, registry.clone())?;
    // Rotates for as long as the proxy serves (stopped when dropped).
    let rotator = match policy {
        Some(policy) => Some(KeyRotator::spawn(registry.clone(), policy)?),
        None => None,
    };
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
        "signing proxy on http://{} -> http://{} ({alg}, kid {kid}); JWKS at http://{}{JWKS_PATH}",
        listener.local_addr()?,
        options.upstream.authority(),
        listener.local_addr()?,
    );
    if let Some(dir) = &options.key_dir {
        println!("keys in {}", dir.display());
    }
    if let Some(rotation) = rotation {
        println!("{rotation}");
    }
    #[cfg(feature = "redis")]
    if let Some(fleet) = &fleet {
        println!("{}", fleet.describe());
    }
    let serving = std::pin::pin!(serve(listener, &options, signer));
    let stopping = std::pin::pin!(shutdown_signal());
    if let futures_util::future::Either::Left((served, _)) =
        futures_util::future::select(serving, stopping).await
    {
        served?;
    }
    // SIGTERM or Ctrl-C: stop rotating, then release the lease so another
    // replica takes over at once.
    if let Some(rotator) = rotator {
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
    #[derive(Debug, Default)]
    pub(crate) struct Pkcs11Flags {
        module: Option<PathBuf>,
        token: Option<String>,
        pin_file: Option<PathBuf>,
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
        /// Whether `flag` is one of these.
        pub(crate) fn takes(flag: &str) -> bool {
            matches!(
                flag,
                "--pkcs11-module" | "--pkcs11-token" | "--pkcs11-pin-file" | "--pkcs11-key"
            )
        }

        pub(crate) fn set(&mut self, flag: &str, value: String) {
            match flag {
                "--pkcs11-module" => self.module = Some(value.into()),
                "--pkcs11-token" => self.token = Some(value),
                "--pkcs11-pin-file" => self.pin_file = Some(value.into()),
                _ => self.key = Some(value),
            }
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

fn main() -> ExitCode {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(Command::Help) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Run(options)) => *options,
        Err(message) => {
            eprintln!("error: {message}\n\nRun with --help for usage.");
            return ExitCode::from(2);
        }
    };
    // Check the registry, signer and rotation settings before anything
    // starts, on a registry with the options' settings and no keys.
    let settings = match settings_registry(&options) {
        Ok(registry) => registry,
        Err(err) => {
            eprintln!("error: {err}\n\nRun with --help for usage.");
            return ExitCode::from(2);
        }
    };
    if let Err(err) = signer_layer(&options, settings.clone()) {
        eprintln!("error: {err}\n\nRun with --help for usage.");
        return ExitCode::from(2);
    }
    let resolved = rotation_policy(&options)
        .and_then(|policy| policy.map(|policy| policy.resolve(&settings)).transpose());
    if let Err(err) = resolved {
        // The policy's settings are named like the flags, but one.
        let flag = match err.setting() {
            "follower_poll_interval" => " (--redis-poll)",
            _ => "",
        };
        eprintln!("error: {err}{flag}\n\nRun with --help for usage.");
        return ExitCode::from(2);
    }
    if options.redis.is_some() || options.pkcs11.is_some() {
        // The fleet's events (lease, notifications, rotation) and the
        // token's (faults, new sessions) on stderr.
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .try_init();
    }
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

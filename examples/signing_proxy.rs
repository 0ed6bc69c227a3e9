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
                           [default: the smaller of half the period and the JWKS max-age]
    --retain SECS          keep an old key published SECS after it stops signing
                           [default and minimum: ttl + 60 s of verifier leeway]
    -h, --help             print this help

The JWKS is served at /.well-known/otoroshi/security/jwks.json on the same
listener and is never forwarded. Hop-by-hop headers are removed. Paths
are normalised (dot-segments, also as %2e, removed) before they are signed
and forwarded; a path that would climb above the upstream's base path, or
holds %2f, %5c or '..;', is refused with 400, as are OPTIONS * (400) and
CONNECT (405). An unreachable upstream gives 502. Without --key-dir the
key lives in memory and a restart publishes a new one.
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
            _ => return Err(support::unknown_flag(&flag)),
        }
    }
    let upstream = upstream.ok_or("--upstream URL is required")?;
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
    })))
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
    // JWKS max-age ahead when that is shorter: caches see it in time.
    let prepublish = options
        .prepublish
        .unwrap_or_else(|| (period / 2).min(options.jwks_max_age));
    let mut policy = RotationPolicy::builder(period)
        .algorithm(options.alg)
        .prepublish(prepublish);
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

/// The key registry: in memory, or loaded from (and kept in) `--key-dir`,
/// with a fresh key when there is none. Blocking (file I/O, key
/// generation).
pub(crate) fn open_registry(options: &Options, clock: Clock) -> Result<KeyRegistry, RegistryError> {
    let builder = KeyRegistry::builder()
        .clock(clock)
        .token_ttl(options.ttl)
        .jwks_max_age(options.jwks_max_age)
        .generate_if_missing(options.alg);
    match &options.key_dir {
        // Keys of another algorithm than --alg in the directory stop the
        // start with an error that names the file.
        Some(dir) => builder
            .store(DirKeyStore::builder(dir).algorithm(options.alg).open()?)
            .build(),
        None => builder.build(),
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
    let alg = options.alg;
    let policy = rotation_policy(&options)?;
    let listener = TcpListener::bind(options.listen).await?;
    let options = std::sync::Arc::new(options);
    let opening = std::sync::Arc::clone(&options);
    let registry =
        tokio::task::spawn_blocking(move || open_registry(&opening, Clock::system())).await??;
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
    serve(listener, &options, signer).await?;
    Ok(())
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
        eprintln!("error: {err}\n\nRun with --help for usage.");
        return ExitCode::from(2);
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

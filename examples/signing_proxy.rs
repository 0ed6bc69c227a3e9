//! A small signing reverse proxy: every request is forwarded to one
//! upstream with a freshly signed JWT, and the public keys are served at
//! the JWKS path on the same listener.
//!
//! ```text
//! cargo run --example signing_proxy -- --listen 127.0.0.1:8080 --upstream http://127.0.0.1:3000 \
//!     --issuer gateway --audience orders --claim 'tenant=${req.headers.x-tenant:public}'
//! ```
//!
//! Run with `--help` for every flag.

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use support::{AnyBody, Args, Forwarder, Upstream, boxed};
use tokio::net::TcpListener;
use tower::{ServiceBuilder, ServiceExt};
use tower_jwt_signer::signer::{ExistingToken, JwtSignerLayer, SignerConfigError};
use tower_jwt_signer::signer::{Offload, TokenReuse};
use tower_jwt_signer::{Algorithm, JWKS_PATH, JwksService, KeyRegistry};

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
    --ttl SECS             token lifetime in seconds [default: 60]
    --existing POLICY      replace | keep | reject: a request that already has the header [default: replace]
    --offload MODE         inline | blocking | auto: where signatures are computed [default: auto]
    --reuse                hand out a recent token again for equal claims (jti no longer unique)
    --header NAME          the header the token goes in [default: Authorization]
    --scheme S             the scheme before the token [default: Bearer]; '' for a bare token
    --claim NAME=VALUE     a claim; VALUE may hold ${req.headers.NAME}, ${req.query.NAME},
                           ${req.path}, ${req.method}, ${req.host}, each with :default, and
                           ${number:...} / ${boolean:...} alone for typed values (repeatable)
    --jwks-max-age SECS    Cache-Control max-age of the JWKS [default: 300]
    -h, --help             print this help

The JWKS is served at /.well-known/otoroshi/security/jwks.json on the same
listener and is never forwarded. Hop-by-hop headers are removed. An
unreachable upstream gives 502.
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
    let mut jwks_max_age = tower_jwt_signer::jwks::DEFAULT_JWKS_MAX_AGE;
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
            _ => return Err(support::unknown_flag(&flag)),
        }
    }
    let upstream = upstream.ok_or("--upstream URL is required")?;
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
    })))
}

/// The signer the options describe. Every setting is checked here, before
/// the proxy listens.
pub(crate) fn signer_layer(
    options: &Options,
    registry: KeyRegistry,
) -> Result<JwtSignerLayer, SignerConfigError> {
    let mut layer = JwtSignerLayer::new(registry)
        .ttl(options.ttl)?
        .existing_token(options.existing)
        .offload(options.offload);
    if options.reuse {
        layer = layer.reuse_tokens(TokenReuse::new());
    }
    if let Some(issuer) = &options.issuer {
        layer = layer.issuer(issuer)?;
    }
    if let Some(audience) = &options.audience {
        layer = layer.audience(audience)?;
    }
    if let Some(subject) = &options.subject {
        layer = layer.subject(subject)?;
    }
    if let Some(header) = &options.header {
        layer = layer.header_name(header)?;
    }
    match options.scheme.as_deref() {
        None => {}
        Some("") => layer = layer.without_scheme(),
        Some(scheme) => layer = layer.scheme(scheme)?,
    }
    for (name, value) in &options.claims {
        layer = if value.contains('$') {
            layer.template_claim(name, value)?
        } else {
            layer.claim(name, value.as_str())?
        };
    }
    Ok(layer)
}

/// Serves the proxy on `listener` until the task is dropped (every
/// connection task is aborted with it).
pub(crate) async fn serve(
    listener: TcpListener,
    options: &Options,
    signer: JwtSignerLayer,
) -> std::io::Result<()> {
    let jwks = JwksService::new(signer.registry().clone()).with_max_age(options.jwks_max_age);
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
    let registry = tokio::task::spawn_blocking(move || KeyRegistry::generate(alg)).await??;
    let signer = signer_layer(&options, registry)?;
    let listener = TcpListener::bind(options.listen).await?;
    println!(
        "signing proxy on http://{} -> http://{} ({alg}); JWKS at http://{}{JWKS_PATH}",
        listener.local_addr()?,
        options.upstream.authority(),
        listener.local_addr()?,
    );
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
    // Check the signer settings before anything starts.
    if let Err(err) = signer_layer(&options, KeyRegistry::empty()) {
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

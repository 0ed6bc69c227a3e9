//! A backend that verifies the gateway's tokens against its JWKS.
//!
//! ```sh
//! cargo run --example verify_backend -- \
//!     --listen 127.0.0.1:9000 \
//!     --jwks-url http://127.0.0.1:8080/.well-known/otoroshi/security/jwks.json \
//!     [--issuer gateway] [--audience api] [--leeway 30] [--refresh-cooldown 30]
//! ```
//!
//! Or from the gateway's issuer URL, through its OpenID discovery document
//! (its `issuer` must be exactly this URL; its `jwks_uri` must be https
//! unless both are on loopback, or `--allow-http`):
//!
//! ```sh
//! cargo run --example verify_backend -- --listen 127.0.0.1:9000 --discover http://127.0.0.1:8080
//! ```
//!
//! Every path answers 200 with `{"claims": {...}, "kid": ..., "alg": ...}`
//! for a valid `Authorization: Bearer` token; 401 (with `WWW-Authenticate`)
//! for a missing or bad one, 400 for a malformed request, 503 while the
//! JWKS has never been fetched. When the JWKS cannot be fetched at start-up
//! (the gateway is not up yet), the backend starts anyway and retries in the
//! background until the first fetch succeeds. Put the signing proxy in front
//! of it (`--upstream http://127.0.0.1:9000`) and it is the whole chain.

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use axum::{Extension, Json, Router};
use clap::{ArgGroup, Parser};
use tower_jwt_signer::{JwtVerifierLayer, RemoteJwks, VerifiedClaims, Verifier};

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "verify_backend",
    about = "verify_backend: a backend that verifies the gateway's tokens against its JWKS",
    long_about = "verify_backend: a backend that verifies the gateway's tokens against its JWKS\n\n\
                  Every path answers 200 with the verified claims for a valid Authorization:\n\
                  Bearer token; 401 (with WWW-Authenticate) for a missing or bad one, 400 for a\n\
                  malformed request, 503 until the JWKS is fetched (it retries in the\n\
                  background, so the backend may start before the gateway).",
    after_help = support::ENV_HELP,
    group(ArgGroup::new("keys").required(true).args(["jwks_url", "discover"])),
)]
struct Args {
    /// Address to listen on (127.0.0.1:0 for a free port)
    #[arg(long, env = "TJS_LISTEN", value_name = "ADDR")]
    listen: SocketAddr,
    /// The gateway's JWKS URL
    #[arg(long, env = "TJS_JWKS_URL", value_name = "URL")]
    jwks_url: Option<String>,
    /// The gateway's issuer URL: the JWKS is found through its OpenID
    /// discovery document (ISSUER_URL/.well-known/openid-configuration),
    /// fetched again with the JWKS
    #[arg(long, env = "TJS_DISCOVER", value_name = "ISSUER_URL")]
    discover: Option<String>,
    /// With --discover: accept plain http off loopback for the issuer and
    /// its jwks_uri (anyone on the network path could then choose the keys)
    #[arg(long, env = "TJS_ALLOW_HTTP", requires = "discover", value_parser = clap::builder::BoolishValueParser::new())]
    allow_http: bool,
    /// The iss claim tokens must carry
    #[arg(long, env = "TJS_ISSUER", value_name = "S")]
    issuer: Option<String>,
    /// The aud claim tokens must carry
    #[arg(long, env = "TJS_AUDIENCE", value_name = "S")]
    audience: Option<String>,
    /// Leeway on exp and nbf, in seconds [default: 30]
    #[arg(long, env = "TJS_LEEWAY", value_name = "SECS", value_parser = support::seconds)]
    leeway: Option<Duration>,
    /// How soon an unknown kid may fetch the JWKS again, in seconds
    /// [default: 30]; keys that rotate every few seconds need less
    #[arg(long, env = "TJS_REFRESH_COOLDOWN", value_name = "SECS", value_parser = support::seconds)]
    refresh_cooldown: Option<Duration>,
}

async fn claims(Extension(claims): Extension<VerifiedClaims>) -> Json<VerifiedClaims> {
    Json(claims)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let (mut builder, source, flag) = match (&args.jwks_url, &args.discover) {
        (Some(url), _) => (
            RemoteJwks::builder(url),
            format!("JWKS {url}"),
            "--jwks-url",
        ),
        (None, Some(issuer)) => (
            RemoteJwks::issuer_builder(issuer).allow_http(args.allow_http),
            format!("the discovery document of {issuer}"),
            "--discover",
        ),
        (None, None) => unreachable!("clap requires one of them"),
    };
    if let Some(cooldown) = args.refresh_cooldown {
        builder = builder.refresh_cooldown(cooldown);
    }
    let jwks = match builder.build() {
        Ok(jwks) => jwks,
        Err(err)
            if err.setting() == "url" || (flag == "--discover" && err.setting() == "issuer") =>
        {
            support::refuse::<Args>(format!("{err} ({flag})"))
        }
        Err(err) => support::refuse_setting::<Args>(&err),
    };
    let mut verifier = Verifier::builder(jwks.clone());
    if let Some(issuer) = args.issuer.clone() {
        verifier = verifier.issuer(issuer);
    }
    if let Some(audience) = args.audience.clone() {
        verifier = verifier.audience(audience);
    }
    if let Some(leeway) = args.leeway {
        verifier = verifier.leeway(leeway);
    }
    let verifier = match verifier.build() {
        Ok(verifier) => verifier,
        Err(err) => support::refuse_setting::<Args>(&err),
    };
    // Fetch once now: a wrong URL shows up at start-up, not on the first
    // request. The backend still starts (answering 503 until a fetch
    // succeeds), so it may come up before the gateway.
    match jwks.prefetch().await {
        Ok(()) => {
            let keys = jwks.current().map_or(0, |set| set.len());
            let from = jwks
                .jwks_uri()
                .map(|uri| uri.to_string())
                .unwrap_or_default();
            match jwks.issuer() {
                Some(issuer) => {
                    eprintln!("fetched {from} ({keys} key(s)), discovered from {issuer}")
                }
                None => eprintln!("fetched {from} ({keys} key(s))"),
            }
        }
        Err(err) => {
            eprintln!(
                "warning: cannot fetch the keys ({source}) yet ({err}); answering 503 until it can"
            );
            // Until a set is fetched, RemoteJwks retries on demand after
            // 1 s, 2 s, 4 s ... (at most its cooldown apart), so a gateway
            // that starts after its backend is picked up within seconds.
        }
    }

    let app = Router::new()
        .fallback(claims)
        .layer(JwtVerifierLayer::new(verifier));

    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("cannot listen on {}: {err}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    // The bound address: with `--listen 127.0.0.1:0`, the port chosen.
    match listener.local_addr() {
        Ok(addr) => eprintln!(
            "verifying backend on http://{addr} with {source}, issuer {}, audience {}",
            args.issuer.as_deref().unwrap_or("any"),
            args.audience.as_deref().unwrap_or("any"),
        ),
        Err(_) => eprintln!("verifying backend on http://{}", args.listen),
    }
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    if let Err(err) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        eprintln!("server error: {err}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

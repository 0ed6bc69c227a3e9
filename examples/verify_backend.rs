//! A backend that verifies the gateway's tokens against its JWKS.
//!
//! ```sh
//! cargo run --example verify_backend -- \
//!     --listen 127.0.0.1:9000 \
//!     --jwks-url http://127.0.0.1:8080/.well-known/otoroshi/security/jwks.json \
//!     [--issuer gateway] [--audience api] [--leeway 30] [--refresh-cooldown 30]
//! ```
//!
//! Every path answers 200 with `{"claims": {...}, "kid": ..., "alg": ...}`
//! for a valid `Authorization: Bearer` token; 401 (with `WWW-Authenticate`)
//! for a missing or bad one, 400 for a malformed request, 503 while the
//! JWKS has never been fetched. When the JWKS cannot be fetched at start-up
//! (the gateway is not up yet), the backend starts anyway and retries in the
//! background until the first fetch succeeds. Put the signing proxy in front
//! of it (`--upstream http://127.0.0.1:9000`) and it is the whole chain.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use axum::{Extension, Json, Router};
use tower_jwt_signer::{JwtVerifierLayer, RemoteJwks, VerifiedClaims, Verifier};

struct Args {
    listen: SocketAddr,
    jwks_url: String,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: Option<u64>,
    refresh_cooldown: Option<u64>,
}

const USAGE: &str = "usage: verify_backend --listen ADDR --jwks-url URL \
[--issuer S] [--audience S] [--leeway SECS] [--refresh-cooldown SECS]";

fn parse_args() -> Result<Args, String> {
    let mut listen = None;
    let mut jwks_url = None;
    let mut issuer = None;
    let mut audience = None;
    let mut leeway = None;
    let mut refresh_cooldown = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.to_owned());
        }
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--listen" => {
                listen = Some(
                    value
                        .parse()
                        .map_err(|err| format!("--listen {value:?}: {err}"))?,
                );
            }
            "--jwks-url" => jwks_url = Some(value),
            "--issuer" => issuer = Some(value),
            "--audience" => audience = Some(value),
            "--leeway" => {
                leeway = Some(
                    value
                        .parse()
                        .map_err(|err| format!("--leeway {value:?}: {err}"))?,
                );
            }
            // How soon an unknown kid may fetch the JWKS again (default
            // 30 s): keys that rotate every few seconds need less.
            "--refresh-cooldown" => {
                refresh_cooldown = Some(
                    value
                        .parse()
                        .map_err(|err| format!("--refresh-cooldown {value:?}: {err}"))?,
                );
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(Args {
        listen: listen.ok_or_else(|| format!("--listen is required\n{USAGE}"))?,
        jwks_url: jwks_url.ok_or_else(|| format!("--jwks-url is required\n{USAGE}"))?,
        issuer,
        audience,
        leeway,
        refresh_cooldown,
    })
}

async fn claims(Extension(claims): Extension<VerifiedClaims>) -> Json<VerifiedClaims> {
    Json(claims)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let mut builder = RemoteJwks::builder(&args.jwks_url);
    if let Some(cooldown) = args.refresh_cooldown {
        builder = builder.refresh_cooldown(Duration::from_secs(cooldown));
    }
    let jwks = match builder.build() {
        Ok(jwks) => jwks,
        Err(err) => {
            eprintln!("--jwks-url: {err}");
            return ExitCode::from(2);
        }
    };
    let mut verifier = Verifier::builder(jwks.clone());
    if let Some(issuer) = args.issuer {
        verifier = verifier.issuer(issuer);
    }
    if let Some(audience) = args.audience {
        verifier = verifier.audience(audience);
    }
    if let Some(leeway) = args.leeway {
        verifier = verifier.leeway(Duration::from_secs(leeway));
    }
    let verifier = match verifier.build() {
        Ok(verifier) => verifier,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(2);
        }
    };
    // Fetch once now: a wrong URL shows up at start-up, not on the first
    // request. The backend still starts (answering 503 until a fetch
    // succeeds), so it may come up before the gateway.
    match jwks.prefetch().await {
        Ok(()) => {
            let keys = jwks.current().map_or(0, |set| set.len());
            eprintln!("fetched {} ({keys} key(s))", args.jwks_url);
        }
        Err(err) => {
            eprintln!(
                "warning: cannot fetch {} yet ({err}); answering 503 until it can",
                args.jwks_url
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
        Ok(addr) => eprintln!("verifying backend on http://{addr}"),
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

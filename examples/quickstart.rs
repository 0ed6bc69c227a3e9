//! The whole round trip on loopback: a gateway that signs and forwards
//! every request (`JwtSignerLayer`) and publishes its JWKS (`JwksService`),
//! and a backend that verifies each token (`JwtVerifierLayer`) with that
//! JWKS, fetched over HTTP and cached (`RemoteJwks`).
//!
//! ```text
//! cargo run --example quickstart              # gateway on :8080, backend on :9000
//! cargo run --example quickstart -- --once    # one request on free ports, then exit
//! cargo run --example quickstart -- --alg EdDSA
//! cargo run --example quickstart -- --listen 127.0.0.1:0 --backend-listen 127.0.0.1:0
//! ```

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use axum::response::IntoResponse as _;
use axum::{Extension, Json, Router};
use clap::Parser;
use clap::builder::BoolishValueParser;
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tower_jwt_signer::{
    Algorithm, ConfigError, Forwarder, JWKS_PATH, JwksService, JwtSignerLayer, JwtVerifierLayer,
    KeyRegistry, RemoteJwks, VerifiedClaims, Verifier, VerifyError,
};

/// The issuer and audience the gateway writes and the backend requires.
const ISSUER: &str = "quickstart-gateway";
const AUDIENCE: &str = "quickstart-backend";

/// The parsed command line of a run.
#[derive(Debug, PartialEq, Parser)]
#[command(
    name = "quickstart",
    about = "quickstart: a signing gateway and a verifying backend on 127.0.0.1",
    long_about = "quickstart: a signing gateway and a verifying backend on 127.0.0.1\n\n\
                  Without --once both run until Ctrl-C; the first line printed says where.",
    after_help = support::ENV_HELP,
)]
pub(crate) struct Options {
    /// The gateway's algorithm: RS256..RS512, PS256..PS512, ES256, ES384, ES512, EdDSA
    #[arg(long, env = "TJS_ALG", value_name = "ALG", default_value = "ES256")]
    alg: Algorithm,
    /// Send one request through the gateway, print the token, its header
    /// and the verified claims, and exit (0 only if the backend verified
    /// the token)
    #[arg(long, env = "TJS_ONCE", value_parser = BoolishValueParser::new())]
    once: bool,
    /// The gateway's address [default: 127.0.0.1:8080, with --once a free port]
    #[arg(long = "listen", env = "TJS_LISTEN", value_name = "ADDR")]
    gateway: Option<SocketAddr>,
    /// The backend's address [default: 127.0.0.1:9000, with --once a free port]
    #[arg(
        long = "backend-listen",
        env = "TJS_BACKEND_LISTEN",
        value_name = "ADDR"
    )]
    backend: Option<SocketAddr>,
    /// Where the backend fetches its keys [default: the gateway's JWKS];
    /// point it at another gateway to see tokens refused
    #[arg(long, env = "TJS_JWKS_URL", value_name = "URL")]
    jwks_url: Option<String>,
}

impl Options {
    /// The gateway's address: as given, else a fixed port (a free one
    /// with `--once`).
    fn gateway(&self) -> SocketAddr {
        let default = if self.once { 0 } else { 8080 };
        self.gateway
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], default)))
    }

    /// The backend's address, likewise.
    fn backend(&self) -> SocketAddr {
        let default = if self.once { 0 } else { 9000 };
        self.backend
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], default)))
    }
}

/// The running gateway and backend; both stop when this is dropped.
pub(crate) struct Servers {
    pub(crate) gateway: SocketAddr,
    pub(crate) backend: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Servers {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The gateway: the JWKS at `JWKS_PATH`, everything else signed and
/// forwarded to `backend`.
pub(crate) fn gateway(registry: KeyRegistry, backend: SocketAddr) -> Router {
    let signer = JwtSignerLayer::builder(registry.clone())
        .issuer(ISSUER)
        .audience(AUDIENCE)
        .template_claim("method", "${req.method}")
        .template_claim("path", "${req.path}")
        .template_claim("client", "${req.headers.user-agent:unknown}")
        .build()
        .expect("a valid configuration");
    // The library's forwarder: hop-by-hop headers removed, 502 when the
    // backend is down.
    let forwarder = Forwarder::new(format!("http://{backend}"))
        .expect("a loopback address is a valid upstream");
    Router::new()
        .fallback_service(forwarder)
        .layer(signer)
        .route_service(JWKS_PATH, JwksService::new(registry))
}

/// The backend: `JwtVerifierLayer` over a `RemoteJwks` pointed at the
/// gateway's JWKS URL (fetched on the first request, refetched when a token
/// names an unknown kid). It requires the gateway's issuer and audience and
/// checks `exp` and `nbf` with the default 30 s leeway; the algorithm comes
/// from the published key, never from the token. A verified request gets
/// JSON with the token, its header and the claims; a refused one gets the
/// layer's status and `WWW-Authenticate` challenge, with the reason as JSON.
pub(crate) fn backend(jwks_url: &str) -> Result<Router, ConfigError> {
    let jwks = RemoteJwks::new(jwks_url)?;
    let verifier = Verifier::builder(jwks)
        .issuer(ISSUER)
        .audience(AUDIENCE)
        .build()?;
    Ok(Router::new()
        .fallback(answer)
        .layer(JwtVerifierLayer::new(verifier))
        .layer(axum::middleware::map_response(explain_refusal)))
}

/// Only reached with a verified token: answers with what was verified.
async fn answer(Extension(claims): Extension<VerifiedClaims>, headers: HeaderMap) -> Json<Value> {
    // The layer took the token from here and verified it.
    let token = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .map_or("", |(_scheme, token)| token.trim_start());
    Json(json!({
        "verified": true,
        "token": token,
        "header": decoded_header(token),
        "claims": claims.claims(),
        "kid": claims.kid(),
        "alg": claims.alg(),
    }))
}

/// The JSON header of a compact JWS (for display).
fn decoded_header(token: &str) -> Value {
    use base64::Engine as _;
    token
        .split('.')
        .next()
        .and_then(|part| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(part)
                .ok()
        })
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(Value::Null)
}

/// The verifier's refusals have empty bodies and carry the `VerifyError` in
/// the response extensions: give the reason as JSON, keeping the status and
/// the `WWW-Authenticate` challenge.
async fn explain_refusal(response: axum::response::Response) -> axum::response::Response {
    let Some(err) = response.extensions().get::<VerifyError>().cloned() else {
        return response;
    };
    let (parts, _) = response.into_parts();
    let body = json!({"verified": false, "error": err.to_string()});
    (parts, Json(body)).into_response()
}

/// Starts the backend on `backend` and the gateway on `gateway`; the
/// backend fetches its keys from `jwks_url`.
pub(crate) fn start(
    registry: KeyRegistry,
    gateway_listener: TcpListener,
    backend_listener: TcpListener,
    jwks_url: &str,
) -> Result<Servers, Box<dyn std::error::Error>> {
    let gateway_addr = gateway_listener.local_addr()?;
    let backend_addr = backend_listener.local_addr()?;
    let gateway_app = gateway(registry, backend_addr);
    let backend_app = backend(jwks_url)?;
    let tasks = vec![
        tokio::spawn(async move {
            if let Err(err) = axum::serve(backend_listener, backend_app).await {
                eprintln!("backend stopped: {err}");
            }
        }),
        tokio::spawn(async move {
            if let Err(err) = axum::serve(gateway_listener, gateway_app).await {
                eprintln!("gateway stopped: {err}");
            }
        }),
    ];
    Ok(Servers {
        gateway: gateway_addr,
        backend: backend_addr,
        tasks,
    })
}

/// The JWKS URL of a gateway.
pub(crate) fn jwks_url(gateway: SocketAddr) -> String {
    format!("http://{gateway}{JWKS_PATH}")
}

/// What one request through the gateway gave.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) status: StatusCode,
    /// The backend's `WWW-Authenticate` challenge, when it refused.
    pub(crate) challenge: Option<String>,
    pub(crate) body: Value,
}

impl Outcome {
    /// Whether the backend verified the token.
    pub(crate) fn verified(&self) -> bool {
        self.status == StatusCode::OK && self.body["verified"] == true
    }
}

/// Sends one request through the gateway at `gateway`.
pub(crate) async fn request_once(gateway: SocketAddr) -> Result<Outcome, String> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let request = http::Request::get(format!("http://{gateway}/hello?name=world"))
        .header(http::header::USER_AGENT, "quickstart --once")
        .body(Full::default())
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .map_err(|_| "the gateway did not answer in time".to_owned())?
        .map_err(|e| format!("the gateway: {e}"))?;
    let status = response.status();
    let challenge = response
        .headers()
        .get(http::header::WWW_AUTHENTICATE)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let body = serde_json::from_slice(&bytes)
        .map_err(|_| format!("{status}: {}", String::from_utf8_lossy(&bytes)))?;
    Ok(Outcome {
        status,
        challenge,
        body,
    })
}

/// Generates the gateway's key, binds both listeners and starts both.
async fn start_from(options: &Options) -> Result<(Servers, String), Box<dyn std::error::Error>> {
    let alg = options.alg;
    let registry = tokio::task::spawn_blocking(move || KeyRegistry::generate(alg)).await??;
    let gateway_listener = TcpListener::bind(options.gateway()).await?;
    let backend_listener = TcpListener::bind(options.backend()).await?;
    let url = match &options.jwks_url {
        Some(url) => url.clone(),
        None => jwks_url(gateway_listener.local_addr()?),
    };
    let servers = start(registry, gateway_listener, backend_listener, &url)?;
    Ok((servers, url))
}

/// `--once`: one request, print the result; true only if the backend
/// verified the token.
pub(crate) async fn once(options: &Options) -> Result<bool, Box<dyn std::error::Error>> {
    let (servers, _) = start_from(options).await?;
    let outcome = request_once(servers.gateway).await?;
    drop(servers);
    if outcome.verified() {
        println!(
            "token:\n{}\n",
            outcome.body["token"].as_str().unwrap_or_default()
        );
        println!("header:\n{:#}\n", outcome.body["header"]);
        println!("verified claims:\n{:#}", outcome.body["claims"]);
    } else {
        let challenge = outcome
            .challenge
            .as_deref()
            .map(|challenge| format!(", WWW-Authenticate: {challenge}"))
            .unwrap_or_default();
        eprintln!(
            "the backend did not verify the token ({}{challenge}):\n{:#}",
            outcome.status, outcome.body
        );
    }
    Ok(outcome.verified())
}

async fn run_until_stopped(options: &Options) -> Result<(), Box<dyn std::error::Error>> {
    let (servers, url) = start_from(options).await?;
    println!(
        "gateway on http://{} ({}), backend on http://{}, JWKS from {url}\n",
        servers.gateway, options.alg, servers.backend
    );
    println!("Try:");
    println!("  curl -s http://{}/hello", servers.gateway);
    println!(
        "  curl -s -H 'Authorization: Bearer forged' http://{}/hello   # replaced by the gateway",
        servers.gateway
    );
    println!("  curl -s {url}");
    println!(
        "  curl -s http://{}/hello   # the backend alone: 401\n",
        servers.backend
    );
    println!("Ctrl-C to stop.");
    tokio::signal::ctrl_c().await?;
    drop(servers);
    Ok(())
}

fn main() -> ExitCode {
    let options = Options::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    if options.once {
        match runtime.block_on(once(&options)) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(err) => {
                eprintln!("error: {err}");
                ExitCode::FAILURE
            }
        }
    } else {
        match runtime.block_on(run_until_stopped(&options)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: {err}");
                ExitCode::FAILURE
            }
        }
    }
}

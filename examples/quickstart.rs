//! The whole round trip on loopback: a gateway that signs and forwards
//! every request and publishes its JWKS, and a backend that verifies each
//! token with that JWKS, fetched over HTTP.
//!
//! ```text
//! cargo run --example quickstart              # gateway on :8080, backend on :9000
//! cargo run --example quickstart -- --once    # one request on free ports, then exit
//! cargo run --example quickstart -- --alg EdDSA
//! ```

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::IntoResponse as _;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use josekit::jwk::{Jwk, JwkSet};
use josekit::jws::JwsVerifier;
use serde_json::{Value, json};
use support::{Args, Forwarder, Upstream};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tower::ServiceBuilder;
use tower_jwt_signer::{Algorithm, JWKS_PATH, JwksService, JwtSignerLayer, KeyRegistry};

const HELP: &str = "\
quickstart: a signing gateway and a verifying backend on 127.0.0.1

USAGE:
    quickstart [--alg ALG] [--once]

OPTIONS:
    --alg ALG    RS256..RS512, PS256..PS512, ES256, ES384, ES512, EdDSA [default: ES256]
    --once       use free ports, send one request through the gateway, print the
                 token, its header and the verified claims, and exit (0 only if the
                 backend verified the token)
    -h, --help   print this help

Without --once the gateway listens on 127.0.0.1:8080 and the backend on
127.0.0.1:9000 until Ctrl-C.
";

/// The issuer and audience the gateway writes and the backend requires.
const ISSUER: &str = "quickstart-gateway";
const AUDIENCE: &str = "quickstart-backend";

/// What the command line asks for.
#[derive(Debug, PartialEq)]
pub(crate) enum Command {
    Help,
    Run { alg: Algorithm, once: bool },
}

/// Parses the arguments (without the program name).
pub(crate) fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut args = Args::new(args);
    let mut alg = Algorithm::ES256;
    let mut once = false;
    while let Some((flag, inline)) = args.next_flag()? {
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--alg" => alg = args.parsed(&flag, inline)?,
            "--once" if inline.is_none() => once = true,
            _ => return Err(support::unknown_flag(&flag)),
        }
    }
    Ok(Command::Run { alg, once })
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
    let signer = JwtSignerLayer::new(registry.clone())
        .issuer(ISSUER)
        .and_then(|layer| layer.audience(AUDIENCE))
        .and_then(|layer| layer.template_claim("method", "${req.method}"))
        .and_then(|layer| layer.template_claim("path", "${req.path}"))
        .and_then(|layer| layer.template_claim("client", "${req.headers.user-agent:unknown}"))
        .expect("a valid configuration");
    let upstream: Upstream = format!("http://{backend}")
        .parse()
        .expect("a loopback address is a valid upstream");
    let forward = ServiceBuilder::new()
        .map_request(support::strip_request::<Body>)
        .layer(signer)
        .service(Forwarder::<Body>::new(upstream));
    Router::new()
        .route_service(JWKS_PATH, JwksService::new(registry))
        .fallback_service(forward)
}

/// The backend's copy of the gateway's JWKS, refetched when a token names
/// an unknown kid.
#[derive(Clone)]
pub(crate) struct Backend {
    jwks_url: String,
    cache: Arc<Mutex<Option<JwkSet>>>,
}

/// The backend: verifies the token of every request and answers with what
/// it verified.
pub(crate) fn backend(jwks_url: String) -> Router {
    let state = Backend {
        jwks_url,
        cache: Arc::default(),
    };
    Router::new().fallback(answer).with_state(state)
}

async fn answer(State(backend): State<Backend>, request: Request) -> axum::response::Response {
    let token = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::to_owned);
    let outcome = match token {
        None => Err("no Bearer token".to_owned()),
        Some(token) => backend
            .verify(&token)
            .await
            .map(|(header, claims)| (token, header, claims)),
    };
    let (status, body) = match outcome {
        Ok((token, header, claims)) => (
            StatusCode::OK,
            json!({"verified": true, "token": token, "header": header, "claims": claims}),
        ),
        Err(reason) => (
            StatusCode::UNAUTHORIZED,
            json!({"verified": false, "error": reason}),
        ),
    };
    (status, axum::Json(body)).into_response()
}

impl Backend {
    /// Verifies `token` with the key its kid names in the gateway's JWKS;
    /// the algorithm comes from the published key, never from the token.
    /// Checks `iss`, `aud`, `exp` and `nbf` (30 s leeway).
    async fn verify(&self, token: &str) -> Result<(Value, Value), String> {
        let header = josekit::jwt::decode_header(token).map_err(|e| e.to_string())?;
        let kid = header
            .claim("kid")
            .and_then(Value::as_str)
            .ok_or("the token has no kid")?
            .to_owned();
        let jwk = match self.cached_key(&kid) {
            Some(jwk) => jwk,
            None => {
                self.refresh().await?;
                self.cached_key(&kid)
                    .ok_or_else(|| format!("kid {kid:?} is not in the JWKS"))?
            }
        };
        let alg: Algorithm = jwk
            .algorithm()
            .ok_or("the published key has no alg")?
            .parse()
            .map_err(|e| format!("{e}"))?;
        if header.claim("alg").and_then(Value::as_str) != Some(alg.as_str()) {
            return Err(format!("the token's alg is not the key's ({alg})"));
        }
        let verifier = verifier(alg, &jwk).map_err(|e| e.to_string())?;
        let (payload, header) = josekit::jwt::decode_with_verifier(token, verifier.as_ref())
            .map_err(|e| format!("signature: {e}"))?;
        let claims = Value::Object(payload.claims_set().clone());
        check_claims(&claims)?;
        let header: Value = serde_json::from_str(&header.to_string()).map_err(|e| e.to_string())?;
        Ok((header, claims))
    }

    fn cached_key(&self, kid: &str) -> Option<Jwk> {
        let cache = self.cache.lock().expect("not poisoned");
        cache.as_ref()?.get(kid).first().map(|jwk| (*jwk).clone())
    }

    async fn refresh(&self) -> Result<(), String> {
        let url: http::Uri = self.jwks_url.parse().map_err(|e| format!("{e}"))?;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<bytes::Bytes>>();
        let response = tokio::time::timeout(Duration::from_secs(5), client.get(url))
            .await
            .map_err(|_| "the JWKS fetch timed out".to_owned())?
            .map_err(|e| format!("fetching the JWKS: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("the JWKS answered {}", response.status()));
        }
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let set = JwkSet::from_bytes(&bytes).map_err(|e| format!("the JWKS: {e}"))?;
        *self.cache.lock().expect("not poisoned") = Some(set);
        Ok(())
    }
}

fn verifier(alg: Algorithm, jwk: &Jwk) -> Result<Box<dyn JwsVerifier>, josekit::JoseError> {
    use josekit::jws;
    Ok(match alg {
        Algorithm::RS256 => Box::new(jws::RS256.verifier_from_jwk(jwk)?),
        Algorithm::RS384 => Box::new(jws::RS384.verifier_from_jwk(jwk)?),
        Algorithm::RS512 => Box::new(jws::RS512.verifier_from_jwk(jwk)?),
        Algorithm::PS256 => Box::new(jws::PS256.verifier_from_jwk(jwk)?),
        Algorithm::PS384 => Box::new(jws::PS384.verifier_from_jwk(jwk)?),
        Algorithm::PS512 => Box::new(jws::PS512.verifier_from_jwk(jwk)?),
        Algorithm::ES256 => Box::new(jws::ES256.verifier_from_jwk(jwk)?),
        Algorithm::ES384 => Box::new(jws::ES384.verifier_from_jwk(jwk)?),
        Algorithm::ES512 => Box::new(jws::ES512.verifier_from_jwk(jwk)?),
        Algorithm::EdDSA => Box::new(jws::EdDSA.verifier_from_jwk(jwk)?),
    })
}

fn check_claims(claims: &Value) -> Result<(), String> {
    const LEEWAY: u64 = 30;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    let date = |name: &str| {
        claims[name]
            .as_u64()
            .ok_or_else(|| format!("{name} is not an integer"))
    };
    if date("exp")? + LEEWAY < now {
        return Err("the token has expired".into());
    }
    if date("nbf")? > now + LEEWAY {
        return Err("the token is not valid yet".into());
    }
    if claims["iss"] != ISSUER {
        return Err("wrong issuer".into());
    }
    if claims["aud"] != AUDIENCE {
        return Err("wrong audience".into());
    }
    Ok(())
}

/// Starts the backend on `backend` and the gateway on `gateway`; the
/// backend fetches its keys from `jwks_url`.
pub(crate) fn start(
    registry: KeyRegistry,
    gateway_listener: TcpListener,
    backend_listener: TcpListener,
    jwks_url: String,
) -> std::io::Result<Servers> {
    let gateway_addr = gateway_listener.local_addr()?;
    let backend_addr = backend_listener.local_addr()?;
    let gateway_app = gateway(registry, backend_addr);
    let backend_app = backend(jwks_url);
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
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let body = serde_json::from_slice(&bytes)
        .map_err(|_| format!("{status}: {}", String::from_utf8_lossy(&bytes)))?;
    Ok(Outcome { status, body })
}

/// `--once`: free ports, one request, print the result; true only if the
/// backend verified the token.
pub(crate) async fn once(alg: Algorithm) -> Result<bool, Box<dyn std::error::Error>> {
    let registry = tokio::task::spawn_blocking(move || KeyRegistry::generate(alg)).await??;
    let gateway_listener = TcpListener::bind("127.0.0.1:0").await?;
    let backend_listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = jwks_url(gateway_listener.local_addr()?);
    let servers = start(registry, gateway_listener, backend_listener, url)?;
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
        eprintln!(
            "the backend did not verify the token ({}):\n{:#}",
            outcome.status, outcome.body
        );
    }
    Ok(outcome.verified())
}

async fn run_until_stopped(alg: Algorithm) -> Result<(), Box<dyn std::error::Error>> {
    let registry = tokio::task::spawn_blocking(move || KeyRegistry::generate(alg)).await??;
    let gateway_listener = TcpListener::bind("127.0.0.1:8080").await?;
    let backend_listener = TcpListener::bind("127.0.0.1:9000").await?;
    let url = jwks_url(gateway_listener.local_addr()?);
    let servers = start(registry, gateway_listener, backend_listener, url.clone())?;
    println!(
        "gateway on http://{} ({alg}), backend on http://{}\n",
        servers.gateway, servers.backend
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
    let (alg, once_only) = match parse_args(std::env::args().skip(1)) {
        Ok(Command::Help) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Run { alg, once }) => (alg, once),
        Err(message) => {
            eprintln!("error: {message}\n\nRun with --help for usage.");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    if once_only {
        match runtime.block_on(once(alg)) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(err) => {
                eprintln!("error: {err}");
                ExitCode::FAILURE
            }
        }
    } else {
        match runtime.block_on(run_until_stopped(alg)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: {err}");
                ExitCode::FAILURE
            }
        }
    }
}

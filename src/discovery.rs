//! OpenID discovery: the document that points verifiers at the JWKS.
//!
//! Many verifiers (Java and .NET stacks, API managers) are given an issuer
//! URL, not a JWKS URL: they fetch `ISSUER/.well-known/openid-configuration`
//! (OpenID Connect Discovery 1.0 §4, RFC 8414) and take the JWKS URL from its
//! `jwks_uri`. [`DiscoveryService`] is a leaf tower `Service` that answers
//! that path with
//!
//! ```json
//! {"issuer":"https://gateway.example","jwks_uri":"https://gateway.example/.well-known/otoroshi/security/jwks.json","id_token_signing_alg_values_supported":["ES256","RS256"]}
//! ```
//!
//! * `issuer`: the configured issuer, an `http` or `https` URL without a
//!   query or fragment; verifiers compare it with the one they were given,
//!   exactly, and with the tokens' `iss`;
//! * `jwks_uri`: the issuer plus [`JWKS_PATH`] unless
//!   [configured](DiscoveryServiceBuilder::jwks_uri);
//! * `id_token_signing_alg_values_supported`: the algorithms of the keys
//!   the JWKS publishes now (next, active and retiring ones, sorted), so the
//!   list follows rotations, and an algorithm change shows both algorithms
//!   while both are published.
//!
//! The document describes a token issuer, not a full OpenID provider: it
//! holds the members a verifier needs and no endpoint of an authorization
//! server. Its bytes and ETag are built when the key set changes (on the
//! first request that sees the change), never per request, and it is served
//! with the JWKS's HTTP semantics, by the same code:
//!
//! | request | answer |
//! |---|---|
//! | `GET` on the path | 200, the document, `application/json` |
//! | `HEAD` on the path | 200, the same headers, no body |
//! | `If-None-Match` that matches (one tag, a list, or `*`) | 304, no body |
//! | another method on the path | 405 with `Allow: GET, HEAD` |
//! | another path (no prefix matching) | 404 |
//!
//! Every answer carries `Cache-Control: public, max-age=N` (the registry's
//! [`jwks_max_age`](crate::KeyRegistry::jwks_max_age), or a shorter
//! [`max_age`](DiscoveryServiceBuilder::max_age)) and a strong `ETag`.
//!
//! The path is the issuer's path plus [`DISCOVERY_PATH`]: `/.well-known/openid-configuration`
//! for `https://gateway.example`, `/tenant/.well-known/openid-configuration`
//! for `https://gateway.example/tenant`. A [`RemoteJwks`](crate::RemoteJwks)
//! built with [`from_issuer`](crate::RemoteJwks::from_issuer) reads it.
//!
//! # Example
//!
//! ```
//! use axum::Router;
//! use http::{Request, StatusCode};
//! use tower::ServiceExt;
//! use tower_jwt_signer::discovery::{DISCOVERY_PATH, DiscoveryService};
//! use tower_jwt_signer::{Algorithm, JWKS_PATH, JwksService, KeyRegistry};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = KeyRegistry::generate(Algorithm::ES256)?;
//! let discovery = DiscoveryService::new("https://gateway.example", registry.clone())?;
//! assert_eq!(discovery.path(), DISCOVERY_PATH);
//! let app: Router = Router::new()
//!     .route_service(JWKS_PATH, JwksService::new(registry))
//!     .route_service(DISCOVERY_PATH, discovery.clone());
//! # let _ = app;
//!
//! let response = discovery.oneshot(Request::get(DISCOVERY_PATH).body(())?).await?;
//! assert_eq!(response.status(), StatusCode::OK);
//! # Ok(())
//! # }
//! ```

use std::convert::Infallible;
use std::fmt;
use std::future::{Ready, ready};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::header::HeaderValue;
use http::{Request, Response, Uri};
use http_body_util::Full;
use tower_service::Service;

use crate::error::ConfigError;
use crate::jwks::{Endpoint, JWKS_PATH, JwksSource, Published};
use crate::keys::Algorithm;
use crate::registry::strong_etag;

/// The path of the discovery document under the issuer's path (OpenID
/// Connect Discovery 1.0 §4).
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

/// Serves the OpenID discovery document of an issuer. See the
/// [module docs](self).
///
/// Cloning is cheap: clones share the settings and the built document.
#[derive(Clone)]
pub struct DiscoveryService {
    source: JwksSource,
    endpoint: Arc<Endpoint>,
    document: Arc<Document>,
}

/// What the document says besides the algorithms, and the document last
/// built.
struct Document {
    issuer: String,
    jwks_uri: String,
    built: ArcSwapOption<Built>,
    /// Held while a new document is built, so that a change is built once.
    building: Mutex<()>,
    #[cfg(test)]
    builds: std::sync::atomic::AtomicUsize,
}

/// The document for one published set.
struct Built {
    from: Published,
    bytes: Bytes,
    etag: HeaderValue,
}

impl Document {
    /// The document for the set published now: the one built last while
    /// the set is the same (a comparison of pointers), else built once.
    fn current(&self, source: &JwksSource) -> Arc<Built> {
        let published = source.current();
        if let Some(built) = self.built.load_full()
            && built.from.is(&published)
        {
            return built;
        }
        let _building = self.building.lock().unwrap_or_else(PoisonError::into_inner);
        let published = source.current();
        if let Some(built) = self.built.load_full()
            && built.from.is(&published)
        {
            return built;
        }
        #[cfg(test)]
        self.builds
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut algorithms: Vec<Algorithm> =
            published.keys().iter().map(|k| k.algorithm()).collect();
        algorithms.sort_unstable();
        algorithms.dedup();
        let bytes = serde_json::to_vec(&serde_json::json!({
            "issuer": self.issuer,
            "jwks_uri": self.jwks_uri,
            "id_token_signing_alg_values_supported": algorithms,
        }))
        .expect("strings serialise");
        let built = Arc::new(Built {
            from: published,
            etag: strong_etag(&bytes),
            bytes: Bytes::from(bytes),
        });
        self.built.store(Some(Arc::clone(&built)));
        built
    }
}

impl DiscoveryService {
    /// Serves the discovery document of `issuer` (an `http` or `https` URL)
    /// with the keys of `source` (a [`KeyRegistry`](crate::KeyRegistry) or
    /// a [`JwksSource`]), at the issuer's path plus [`DISCOVERY_PATH`], the
    /// JWKS at the issuer plus [`JWKS_PATH`].
    ///
    /// # Errors
    ///
    /// As [`DiscoveryServiceBuilder::build`].
    pub fn new(
        issuer: impl Into<String>,
        source: impl Into<JwksSource>,
    ) -> Result<Self, ConfigError> {
        Self::builder(issuer, source).build()
    }

    /// A builder for another `jwks_uri`, path or max-age.
    ///
    /// ```
    /// use tower_jwt_signer::discovery::DiscoveryService;
    /// use tower_jwt_signer::{Algorithm, KeyRegistry};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let registry = KeyRegistry::generate(Algorithm::ES256)?;
    /// let discovery = DiscoveryService::builder("https://gw.example/partners", registry.clone())
    ///     .jwks_uri("https://keys.example/partners/jwks.json")
    ///     .build()?;
    /// assert_eq!(discovery.path(), "/partners/.well-known/openid-configuration");
    ///
    /// // The issuer must be an http(s) URL: verifiers fetch the document
    /// // from it.
    /// let err = DiscoveryService::new("gateway", registry).unwrap_err();
    /// assert_eq!(err.setting(), "issuer");
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder(
        issuer: impl Into<String>,
        source: impl Into<JwksSource>,
    ) -> DiscoveryServiceBuilder {
        DiscoveryServiceBuilder {
            issuer: issuer.into(),
            source: source.into(),
            jwks_uri: None,
            path: None,
            max_age: None,
        }
    }

    /// The exact path this service answers.
    pub fn path(&self) -> &str {
        &self.endpoint.path
    }

    /// The `Cache-Control` max-age it sends.
    pub fn max_age(&self) -> Duration {
        self.endpoint.max_age
    }

    /// The issuer the document names.
    pub fn issuer(&self) -> &str {
        &self.document.issuer
    }

    /// The `jwks_uri` the document gives.
    pub fn jwks_uri(&self) -> &str {
        &self.document.jwks_uri
    }

    /// The keys whose algorithms it lists.
    pub fn source(&self) -> &JwksSource {
        &self.source
    }

    fn respond<B>(&self, request: &Request<B>) -> Response<Full<Bytes>> {
        match self.endpoint.route(request.method(), request.uri().path()) {
            Ok(head) => {
                let built = self.document.current(&self.source);
                self.endpoint
                    .serve(head, request.headers(), &built.bytes, &built.etag)
            }
            Err(refused) => refused.into_response(),
        }
    }
}

/// Builds a [`DiscoveryService`]; see [`DiscoveryService::builder`].
///
/// The setters only record their value; [`build`](Self::build) checks
/// them.
#[must_use]
#[derive(Debug, Clone)]
pub struct DiscoveryServiceBuilder {
    issuer: String,
    source: JwksSource,
    jwks_uri: Option<String>,
    path: Option<String>,
    max_age: Option<Duration>,
}

impl DiscoveryServiceBuilder {
    /// The `jwks_uri` of the document, an absolute `http` or `https` URL
    /// (default: the issuer, without a trailing `/`, plus [`JWKS_PATH`]).
    pub fn jwks_uri(mut self, url: impl Into<String>) -> Self {
        self.jwks_uri = Some(url.into());
        self
    }

    /// Serves at this exact path (default: the issuer's path, without a
    /// trailing `/`, plus [`DISCOVERY_PATH`], where verifiers look for it):
    /// it must start with `/` and be visible ASCII without `?` or `#`.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// The `Cache-Control` max-age (default: the registry's
    /// [`jwks_max_age`](crate::KeyRegistry::jwks_max_age), the shortest of
    /// the registries' for a merged source); whole seconds, at most that.
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }

    /// Checks the settings and builds the service.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for the first refused setting, in this order:
    /// `issuer` (not an absolute `http` or `https` URL with a host; or with
    /// credentials, a query or a fragment), `jwks_uri` (not an absolute
    /// `http` or `https` URL with a host, or with credentials), `path` (not
    /// an absolute path of visible ASCII without `?` or `#`), `max_age`
    /// (not whole seconds, or longer than the registries' JWKS max-age).
    pub fn build(self) -> Result<DiscoveryService, ConfigError> {
        let DiscoveryServiceBuilder {
            issuer,
            source,
            jwks_uri,
            path,
            max_age,
        } = self;
        let issuer_uri = issuer_uri(&issuer)?;
        let base = issuer.trim_end_matches('/');
        let jwks_uri = match jwks_uri {
            Some(url) => {
                absolute_http_url(&url)
                    .map_err(|reason| ConfigError::new("jwks_uri", &url, reason))?;
                url
            }
            None => format!("{base}{JWKS_PATH}"),
        };
        let path = path.unwrap_or_else(|| {
            format!(
                "{}{DISCOVERY_PATH}",
                issuer_uri.path().trim_end_matches('/')
            )
        });
        let endpoint = Endpoint::new(
            path,
            max_age,
            source.jwks_max_age(),
            HeaderValue::from_static("application/json"),
        )?;
        Ok(DiscoveryService {
            source,
            endpoint: Arc::new(endpoint),
            document: Arc::new(Document {
                issuer,
                jwks_uri,
                built: ArcSwapOption::empty(),
                building: Mutex::new(()),
                #[cfg(test)]
                builds: std::sync::atomic::AtomicUsize::new(0),
            }),
        })
    }
}

/// The URL of the discovery document of `issuer`: the issuer without a
/// trailing `/`, plus [`DISCOVERY_PATH`] (OpenID Connect Discovery 1.0 §4).
pub(crate) fn discovery_url(issuer: &str) -> String {
    format!("{}{DISCOVERY_PATH}", issuer.trim_end_matches('/'))
}

/// An issuer URL, checked: an absolute `http` or `https` URL with a host,
/// without credentials, a query or a fragment.
///
/// # Errors
///
/// A [`ConfigError`] for the setting `issuer`; credentials are never
/// repeated.
pub(crate) fn issuer_uri(issuer: &str) -> Result<Uri, ConfigError> {
    let uri = absolute_http_url(issuer).map_err(|reason| {
        if reason == CREDENTIALS {
            ConfigError::without_value("issuer", reason)
        } else {
            ConfigError::new("issuer", issuer, reason)
        }
    })?;
    if issuer.contains(['?', '#']) {
        return Err(ConfigError::new(
            "issuer",
            issuer,
            "an issuer has no query or fragment (OpenID Connect Discovery 1.0 §3)",
        ));
    }
    Ok(uri)
}

const CREDENTIALS: &str =
    "the URL holds credentials (user:password@): they are never sent, and the URL is logged";

/// `url` parsed, if it is an absolute `http` or `https` URL with a host and
/// without credentials; else why not.
pub(crate) fn absolute_http_url(url: &str) -> Result<Uri, &'static str> {
    let uri: Uri = url
        .parse()
        .map_err(|_| "expected an absolute http(s) URL, http(s)://host[:port]/path")?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err("expected an absolute http(s) URL, http(s)://host[:port]/path");
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(CREDENTIALS);
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("the URL has no host");
    }
    Ok(uri)
}

/// Whether the URL's host is a loopback address: `localhost`, 127.0.0.0/8
/// or `::1`.
pub(crate) fn is_loopback(uri: &Uri) -> bool {
    let Some(host) = uri.host() else {
        return false;
    };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let literal = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    literal.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl fmt::Debug for DiscoveryService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiscoveryService")
            .field("issuer", &self.document.issuer)
            .field("jwks_uri", &self.document.jwks_uri)
            .field("path", &self.endpoint.path)
            .field("max_age", &self.endpoint.max_age)
            .finish_non_exhaustive()
    }
}

impl<B> Service<Request<B>> for DiscoveryService {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        ready(Ok(self.respond(&req)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::KeyRegistry;
    use crate::keys::SigningKey;

    async fn document(svc: &DiscoveryService) -> serde_json::Value {
        let response = svc
            .clone()
            .oneshot(Request::get(svc.path()).body(()).unwrap())
            .await
            .unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&body).unwrap()
    }

    #[tokio::test]
    async fn the_document_is_built_once_per_key_change_never_per_request() {
        let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
        let svc = DiscoveryService::new("http://127.0.0.1:8080", registry.clone()).unwrap();
        for _ in 0..20 {
            assert_eq!(
                document(&svc).await["id_token_signing_alg_values_supported"],
                serde_json::json!(["ES256"])
            );
        }
        assert_eq!(svc.document.builds.load(Ordering::Relaxed), 1);
        registry
            .add_next(SigningKey::generate(Algorithm::EdDSA).unwrap())
            .unwrap();
        for _ in 0..20 {
            assert_eq!(
                document(&svc).await["id_token_signing_alg_values_supported"],
                serde_json::json!(["ES256", "EdDSA"])
            );
        }
        assert_eq!(svc.document.builds.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn issuers_and_paths() {
        let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
        let svc = DiscoveryService::new("https://gw.example/", registry.clone()).unwrap();
        assert_eq!(svc.path(), DISCOVERY_PATH);
        assert_eq!(svc.issuer(), "https://gw.example/");
        assert_eq!(svc.jwks_uri(), format!("https://gw.example{JWKS_PATH}"));
        let svc = DiscoveryService::new("http://127.0.0.1:9/a/b/", registry.clone()).unwrap();
        assert_eq!(svc.path(), "/a/b/.well-known/openid-configuration");
        assert_eq!(
            discovery_url("http://127.0.0.1:9/a/b/"),
            "http://127.0.0.1:9/a/b/.well-known/openid-configuration"
        );
        for bad in [
            "gateway",
            "/relative",
            "ftp://gw.example",
            "https://gw.example/?q=1",
            "https://gw.example/#f",
            "https://user:pw@gw.example",
            "",
        ] {
            let err = DiscoveryService::new(bad, registry.clone()).unwrap_err();
            assert_eq!(err.setting(), "issuer", "{bad:?}");
            assert!(!err.to_string().contains("pw@"), "{err}");
        }
        for bad in ["/jwks.json", "jwks.json", "ftp://h/jwks"] {
            let err = DiscoveryService::builder("https://gw.example", registry.clone())
                .jwks_uri(bad)
                .build()
                .unwrap_err();
            assert_eq!(err.setting(), "jwks_uri", "{bad:?}");
        }
    }

    #[test]
    fn loopback_hosts() {
        for url in [
            "http://127.0.0.1:1/",
            "http://127.9.0.1/",
            "http://[::1]:8/",
            "http://LOCALHOST/",
        ] {
            assert!(is_loopback(&url.parse().unwrap()), "{url}");
        }
        for url in [
            "http://10.0.0.1/",
            "http://jwks.example.test/",
            "http://localhost.example/",
            "http://[::2]/",
        ] {
            assert!(!is_loopback(&url.parse().unwrap()), "{url}");
        }
    }
}

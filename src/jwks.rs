//! The JWKS endpoint: the public keys of a [`KeyRegistry`], over HTTP.
//!
//! [`JwksService`] is a leaf tower `Service` that answers `GET` and `HEAD`
//! on exactly [`JWKS_PATH`] (configurable) with the registry's current JWK
//! Set. The bytes and the ETag are built once per registry change, never per
//! request. Responses carry `Cache-Control: public, max-age=N` (the
//! registry's [`jwks_max_age`](KeyRegistry::jwks_max_age), 300 s by
//! default, or a shorter [`max_age`](JwksServiceBuilder::max_age)) and a
//! strong `ETag`; a matching `If-None-Match` gets `304 Not Modified`.
//!
//! | request | answer |
//! |---|---|
//! | `GET` on the path | 200, the JWK Set |
//! | `HEAD` on the path | 200, the same headers, no body |
//! | `If-None-Match` that matches (one tag, a list, or `*`) | 304, no body |
//! | another method on the path | 405 with `Allow: GET, HEAD` |
//! | another path (no prefix matching) | 404 |
//!
//! # Example
//!
//! Mounted in axum next to the application's routes:
//!
//! ```
//! use axum::{Router, routing::get};
//! use tower_jwt_signer::{Algorithm, JWKS_PATH, JwksService, KeyRegistry};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = KeyRegistry::generate(Algorithm::ES256)?;
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .route_service(JWKS_PATH, JwksService::new(registry));
//! # let _ = app;
//! # Ok(())
//! # }
//! ```
//!
//! Or called directly:
//!
//! ```
//! use http::{Request, StatusCode};
//! use tower::ServiceExt;
//! use tower_jwt_signer::{Algorithm, JWKS_PATH, JwksService, KeyRegistry};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = KeyRegistry::generate(Algorithm::ES256)?;
//! let jwks = JwksService::new(registry.clone());
//! let response = jwks
//!     .oneshot(Request::get(JWKS_PATH).body(())?)
//!     .await?;
//! assert_eq!(response.status(), StatusCode::OK);
//! assert_eq!(response.headers()["etag"], registry.current().etag());
//! # Ok(())
//! # }
//! ```

use std::convert::Infallible;
use std::fmt;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use tower_service::Service;

use crate::error::ConfigError;
use crate::registry::{KeyRegistry, KeySnapshot};

/// The default path of the JWKS, as the Otoroshi gateway publishes it.
pub const JWKS_PATH: &str = "/.well-known/otoroshi/security/jwks.json";

/// The media type the JWKS is served with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum JwksContentType {
    /// `application/json`, what most clients expect (default).
    #[default]
    Json,
    /// `application/jwk-set+json`, the RFC 7517 media type.
    JwkSetJson,
}

impl JwksContentType {
    fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            JwksContentType::Json => "application/json",
            JwksContentType::JwkSetJson => "application/jwk-set+json",
        })
    }
}

/// Serves the JWK Set of a [`KeyRegistry`]. See the [module docs](self).
///
/// [`new`](Self::new) serves at [`JWKS_PATH`] with the registry's max-age;
/// [`builder`](Self::builder) sets another path, a shorter max-age or the
/// RFC 7517 media type. Cloning is cheap: clones share the settings.
#[derive(Clone)]
pub struct JwksService {
    registry: KeyRegistry,
    config: Arc<Config>,
}

struct Config {
    path: String,
    max_age: Duration,
    content_type: HeaderValue,
    cache_control: HeaderValue,
}

impl JwksService {
    /// Serves `registry`'s keys at [`JWKS_PATH`], as `application/json`,
    /// cacheable for the registry's
    /// [`jwks_max_age`](KeyRegistry::jwks_max_age).
    pub fn new(registry: KeyRegistry) -> Self {
        let max_age = registry.jwks_max_age();
        JwksService {
            registry,
            config: Arc::new(Config::new(
                JWKS_PATH.to_owned(),
                max_age,
                JwksContentType::Json,
            )),
        }
    }

    /// A builder for another path, a shorter max-age or another media
    /// type.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_jwt_signer::jwks::JwksContentType;
    /// use tower_jwt_signer::{Algorithm, JwksService, KeyRegistry};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let registry = KeyRegistry::generate(Algorithm::ES256)?;
    /// let jwks = JwksService::builder(registry.clone())
    ///     .path("/jwks.json")
    ///     .max_age(Duration::from_secs(60))
    ///     .content_type(JwksContentType::JwkSetJson)
    ///     .build()?;
    /// assert_eq!(jwks.path(), "/jwks.json");
    ///
    /// // Never longer than the registry's max-age (300 s here): verifiers
    /// // would keep the set longer than the rotator publishes keys ahead.
    /// let err = JwksService::builder(registry)
    ///     .max_age(Duration::from_secs(600))
    ///     .build()
    ///     .unwrap_err();
    /// assert_eq!(err.setting(), "max_age");
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder(registry: KeyRegistry) -> JwksServiceBuilder {
        JwksServiceBuilder {
            registry,
            path: JWKS_PATH.to_owned(),
            max_age: None,
            content_type: JwksContentType::Json,
        }
    }

    /// The exact path this service answers.
    pub fn path(&self) -> &str {
        &self.config.path
    }

    /// The `Cache-Control` max-age it sends.
    pub fn max_age(&self) -> Duration {
        self.config.max_age
    }

    /// The registry whose keys are served.
    pub fn registry(&self) -> &KeyRegistry {
        &self.registry
    }

    fn respond(
        &self,
        method: &Method,
        path: &str,
        if_none_match: IfNoneMatch<'_>,
    ) -> Response<Full<Bytes>> {
        if path != self.config.path {
            return empty(StatusCode::NOT_FOUND);
        }
        let head = match *method {
            Method::GET => false,
            Method::HEAD => true,
            _ => {
                let mut response = empty(StatusCode::METHOD_NOT_ALLOWED);
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
                return response;
            }
        };
        let snapshot = self.registry.current();
        let not_modified = if_none_match.matches(&snapshot);
        #[cfg(feature = "metrics")]
        crate::metrics::jwks_request(
            not_modified,
            snapshot.keys().len(),
            snapshot
                .active()
                .map(|key| key.activated_at().unwrap_or_else(|| key.created_at())),
            self.registry.clock().now(),
        );
        let mut response = if not_modified {
            empty(StatusCode::NOT_MODIFIED)
        } else {
            let len = snapshot.jwks_bytes().len();
            let body = if head {
                Full::default()
            } else {
                Full::new(snapshot.jwks_bytes().clone())
            };
            let mut response = Response::new(body);
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, self.config.content_type.clone());
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            response
        };
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, self.config.cache_control.clone());
        headers.insert(header::ETAG, snapshot.etag().clone());
        response
    }
}

impl Config {
    fn new(path: String, max_age: Duration, content_type: JwksContentType) -> Self {
        Config {
            path,
            max_age,
            content_type: content_type.header_value(),
            cache_control: cache_control(max_age),
        }
    }
}

/// Builds a [`JwksService`]; see [`JwksService::builder`].
///
/// The setters only record their value; [`build`](Self::build) checks
/// them.
#[must_use]
#[derive(Debug, Clone)]
pub struct JwksServiceBuilder {
    registry: KeyRegistry,
    path: String,
    max_age: Option<Duration>,
    content_type: JwksContentType,
}

impl JwksServiceBuilder {
    /// Serves at this exact path (default [`JWKS_PATH`]): it must start
    /// with `/` and be visible ASCII without `?` or `#`.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// The `Cache-Control` max-age (default: the registry's
    /// [`jwks_max_age`](KeyRegistry::jwks_max_age)); whole seconds, at most
    /// the registry's.
    ///
    /// Verifiers may keep the set this long. The
    /// [`KeyRotator`](crate::KeyRotator) publishes each next key the
    /// registry's max-age ahead of time, which covers a shorter max-age
    /// here, never a longer one.
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }

    /// The `Content-Type` (default `application/json`).
    pub fn content_type(mut self, content_type: JwksContentType) -> Self {
        self.content_type = content_type;
        self
    }

    /// Checks the settings and builds the service.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for the first refused setting, in this order:
    /// `path` (not an absolute path of visible ASCII without `?` or `#`),
    /// `max_age` (not whole seconds, or longer than the registry's
    /// [`jwks_max_age`](KeyRegistry::jwks_max_age)).
    pub fn build(self) -> Result<JwksService, ConfigError> {
        let JwksServiceBuilder {
            registry,
            path,
            max_age,
            content_type,
        } = self;
        let valid = path.starts_with('/')
            && path
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#');
        if !valid {
            return Err(ConfigError::new(
                "path",
                path,
                "it must start with '/' and hold only visible ASCII, without '?' or '#'",
            ));
        }
        let ceiling = registry.jwks_max_age();
        let max_age = max_age.unwrap_or(ceiling);
        if max_age.subsec_nanos() != 0 {
            return Err(ConfigError::new("max_age", max_age, "use whole seconds"));
        }
        if max_age > ceiling {
            return Err(ConfigError::new(
                "max_age",
                max_age,
                format!(
                    "longer than the registry's JWKS max-age ({} s): verifiers would cache the \
                     keys longer than the rotator publishes them ahead; use at most that, or \
                     raise KeyRegistryBuilder::jwks_max_age",
                    ceiling.as_secs()
                ),
            ));
        }
        Ok(JwksService {
            registry,
            config: Arc::new(Config::new(path, max_age, content_type)),
        })
    }
}

impl fmt::Debug for JwksService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwksService")
            .field("path", &self.config.path)
            .field("max_age", &self.config.max_age)
            .field("content_type", &self.config.content_type)
            .finish_non_exhaustive()
    }
}

impl<B> Service<Request<B>> for JwksService {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let if_none_match = IfNoneMatch(req.headers().get_all(header::IF_NONE_MATCH));
        ready(Ok(self.respond(
            req.method(),
            req.uri().path(),
            if_none_match,
        )))
    }
}

/// The `If-None-Match` header lines of a request.
struct IfNoneMatch<'a>(header::GetAll<'a, HeaderValue>);

impl IfNoneMatch<'_> {
    /// RFC 9110 section 13.1.2: `*`, or any listed tag equal to ours under
    /// weak comparison (a `W/` prefix is ignored).
    fn matches(&self, snapshot: &KeySnapshot) -> bool {
        let ours = snapshot.etag().as_bytes();
        self.0.iter().any(|line| {
            line.as_bytes()
                .split(|&b| b == b',')
                .map(|tag| tag.trim_ascii())
                .any(|tag| tag == b"*" || tag.strip_prefix(b"W/").unwrap_or(tag) == ours)
        })
    }
}

fn empty(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::default());
    *response.status_mut() = status;
    response
}

fn cache_control(max_age: Duration) -> HeaderValue {
    HeaderValue::from_str(&format!("public, max-age={}", max_age.as_secs()))
        .expect("digits are a valid header value")
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::keys::{Algorithm, SigningKey};

    fn service() -> (KeyRegistry, JwksService) {
        let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
        (registry.clone(), JwksService::new(registry))
    }

    async fn call(svc: &JwksService, req: Request<()>) -> (Response<()>, Bytes) {
        let response = svc.clone().oneshot(req).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (Response::from_parts(parts, ()), body)
    }

    #[tokio::test]
    async fn get_serves_the_snapshot_bytes_with_cache_headers() {
        let (registry, svc) = service();
        let (res, body) = call(&svc, Request::get(JWKS_PATH).body(()).unwrap()).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(body, registry.current().jwks_bytes());
        assert_eq!(res.headers()["content-type"], "application/json");
        assert_eq!(res.headers()["cache-control"], "public, max-age=300");
        assert_eq!(res.headers()["etag"], registry.current().etag());
        assert_eq!(
            res.headers()["content-length"],
            body.len().to_string().as_str()
        );
    }

    #[tokio::test]
    async fn head_has_the_same_headers_and_no_body() {
        let (_, svc) = service();
        let (get, get_body) = call(&svc, Request::get(JWKS_PATH).body(()).unwrap()).await;
        let (head, head_body) = call(&svc, Request::head(JWKS_PATH).body(()).unwrap()).await;
        assert_eq!(head.status(), StatusCode::OK);
        assert!(head_body.is_empty());
        assert!(!get_body.is_empty());
        assert_eq!(head.headers(), get.headers());
    }

    #[tokio::test]
    async fn if_none_match_single_list_weak_and_star() {
        let (registry, svc) = service();
        let etag = registry.current().etag().to_str().unwrap().to_owned();
        for value in [
            etag.clone(),
            format!("\"other\", {etag}"),
            format!("W/{etag}"),
            "*".to_owned(),
        ] {
            let req = Request::get(JWKS_PATH)
                .header("if-none-match", &value)
                .body(())
                .unwrap();
            let (res, body) = call(&svc, req).await;
            assert_eq!(res.status(), StatusCode::NOT_MODIFIED, "{value}");
            assert!(body.is_empty());
            assert_eq!(res.headers()["etag"], etag.as_str());
        }
        let req = Request::get(JWKS_PATH)
            .header("if-none-match", "\"stale\"")
            .body(())
            .unwrap();
        assert_eq!(call(&svc, req).await.0.status(), StatusCode::OK);

        // After a change the old tag no longer matches.
        registry
            .add_next(SigningKey::generate(Algorithm::ES256).unwrap())
            .unwrap();
        let req = Request::get(JWKS_PATH)
            .header("if-none-match", &etag)
            .body(())
            .unwrap();
        assert_eq!(call(&svc, req).await.0.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn other_methods_and_paths() {
        let (_, svc) = service();
        let req = Request::post(JWKS_PATH).body(()).unwrap();
        let (res, _) = call(&svc, req).await;
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(res.headers()["allow"], "GET, HEAD");
        for path in [
            "/",
            "/.well-known/otoroshi/security/jwks.json/extra",
            "/.well-known/otoroshi/security/jwks.jso",
            "/.well-known/otoroshi/security",
        ] {
            let (res, _) = call(&svc, Request::get(path).body(()).unwrap()).await;
            assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
        }
        // A query string does not change the path.
        let req = Request::get(format!("{JWKS_PATH}?x=1")).body(()).unwrap();
        assert_eq!(call(&svc, req).await.0.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn configuration() {
        let (registry, _) = service();
        let svc = JwksService::builder(registry.clone())
            .path("/jwks")
            .max_age(Duration::from_secs(60))
            .content_type(JwksContentType::JwkSetJson)
            .build()
            .unwrap();
        assert_eq!(svc.max_age(), Duration::from_secs(60));
        let (res, _) = call(&svc, Request::get("/jwks").body(()).unwrap()).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["content-type"], "application/jwk-set+json");
        assert_eq!(res.headers()["cache-control"], "public, max-age=60");
        let (res, _) = call(&svc, Request::get(JWKS_PATH).body(()).unwrap()).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);

        for bad in ["", "jwks", "/a b", "/a?b", "/a#b", "/\u{e9}"] {
            let err = JwksService::builder(registry.clone())
                .path(bad)
                .build()
                .unwrap_err();
            assert_eq!(err.setting(), "path", "{bad:?}");
        }

        // The error keeps 200 characters of a long refused path, no more.
        let long = format!("no-slash{}", "x".repeat(10_000));
        let err = JwksService::builder(registry)
            .path(long)
            .build()
            .unwrap_err();
        assert_eq!(err.value().unwrap().chars().count(), 200);
    }

    #[test]
    fn the_max_age_defaults_to_the_registrys_and_is_never_longer() {
        let registry = KeyRegistry::builder()
            .jwks_max_age(Duration::from_secs(120))
            .build()
            .unwrap();
        let svc = JwksService::new(registry.clone());
        assert_eq!(svc.max_age(), Duration::from_secs(120));
        assert_eq!(svc.config.cache_control, "public, max-age=120");
        for shorter in [Duration::ZERO, Duration::from_secs(120)] {
            let svc = JwksService::builder(registry.clone())
                .max_age(shorter)
                .build()
                .unwrap();
            assert_eq!(svc.max_age(), shorter);
        }
        for bad in [Duration::from_secs(121), Duration::from_millis(1500)] {
            let err = JwksService::builder(registry.clone())
                .max_age(bad)
                .build()
                .unwrap_err();
            assert_eq!(err.setting(), "max_age", "{bad:?}");
        }
        let err = JwksService::builder(registry)
            .max_age(Duration::from_secs(121))
            .build()
            .unwrap_err();
        assert!(err.reason().contains("120 s"), "{err}");
        assert!(
            err.reason().contains("KeyRegistryBuilder::jwks_max_age"),
            "{err}"
        );
    }
}

//! The JWKS endpoint: the public keys of a [`KeyRegistry`], over HTTP.
//!
//! [`JwksService`] is a leaf tower `Service` that answers `GET` and `HEAD`
//! on exactly [`JWKS_PATH`] (configurable) with the registry's current JWK
//! Set (or the merged set of several registries, see
//! [below](#several-registries-one-jwks)). The bytes and the ETag are built once per registry change, never per
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
//!
//! # Several registries, one JWKS
//!
//! A gateway that signs differently per route (RS256 for an old backend,
//! EdDSA for new ones) has a [`KeyRegistry`] and a
//! [`JwtSignerLayer`](crate::JwtSignerLayer) per route, and its backends
//! still know one JWKS URL. [`JwksSource::merged`] publishes the keys of
//! several registries as one set: the merged bytes and ETag are rebuilt
//! when one of the registries changes (on the first request after the
//! change, never on every request), and a kid that two registries publish
//! with different keys is refused, with an `error` event, while the
//! previous set keeps being served.
//!
//! ```
//! use tower_jwt_signer::jwks::JwksSource;
//! use tower_jwt_signer::{Algorithm, JwksService, JwtSignerLayer, KeyRegistry};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let legacy = KeyRegistry::generate(Algorithm::RS256)?;
//! let modern = KeyRegistry::generate(Algorithm::EdDSA)?;
//! let legacy_signer = JwtSignerLayer::new(legacy.clone());
//! let modern_signer = JwtSignerLayer::new(modern.clone());
//!
//! let keys = JwksSource::merged([legacy, modern])?;
//! let jwks = JwksService::new(keys.clone());
//! let set: serde_json::Value = serde_json::from_slice(&keys.jwks_bytes())?;
//! assert_eq!(set["keys"].as_array().unwrap().len(), 2);
//! # let _ = (legacy_signer, modern_signer, jwks);
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
use http::header::HeaderValue;
use http::{Request, Response};
use http_body_util::Full;
use tower_service::Service;

use crate::error::ConfigError;
#[cfg(doc)]
use crate::registry::KeyRegistry;

mod endpoint;
mod source;

pub(crate) use endpoint::Endpoint;
pub use source::JwksSource;
pub(crate) use source::Published;

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

/// Serves the JWK Set of a [`KeyRegistry`], or of
/// several merged ([`JwksSource::merged`]). See the [module docs](self).
///
/// [`new`](Self::new) serves at [`JWKS_PATH`] with the registries' max-age;
/// [`builder`](Self::builder) sets another path, a shorter max-age or the
/// RFC 7517 media type. Cloning is cheap: clones share the settings.
#[derive(Clone)]
pub struct JwksService {
    source: JwksSource,
    endpoint: Arc<Endpoint>,
}

impl JwksService {
    /// Serves the keys of `source` (a [`KeyRegistry`],
    /// or a [`JwksSource`]) at [`JWKS_PATH`], as `application/json`,
    /// cacheable for the registry's
    /// [`jwks_max_age`](KeyRegistry::jwks_max_age) (the shortest of
    /// the registries').
    pub fn new(source: impl Into<JwksSource>) -> Self {
        let source = source.into();
        let max_age = source.jwks_max_age();
        let endpoint = Endpoint::new(
            JWKS_PATH.to_owned(),
            None,
            max_age,
            JwksContentType::Json.header_value(),
        )
        .expect("the default path and max-age are valid");
        JwksService {
            source,
            endpoint: Arc::new(endpoint),
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
    pub fn builder(source: impl Into<JwksSource>) -> JwksServiceBuilder {
        JwksServiceBuilder {
            source: source.into(),
            path: JWKS_PATH.to_owned(),
            max_age: None,
            content_type: JwksContentType::Json,
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

    /// The keys it serves.
    pub fn source(&self) -> &JwksSource {
        &self.source
    }

    fn respond<B>(&self, request: &Request<B>) -> Response<Full<Bytes>> {
        let head = match self.endpoint.route(request.method(), request.uri().path()) {
            Ok(head) => head,
            Err(refused) => return refused.into_response(),
        };
        let published = self.source.current();
        let response = self.endpoint.serve(
            head,
            request.headers(),
            published.jwks_bytes(),
            published.etag(),
        );
        #[cfg(feature = "metrics")]
        crate::metrics::jwks_request(
            response.status() == http::StatusCode::NOT_MODIFIED,
            published.keys().len(),
            published
                .active()
                .map(|key| key.activated_at().unwrap_or_else(|| key.created_at())),
            self.source.registries()[0].clock().now(),
        );
        response
    }
}

/// Builds a [`JwksService`]; see [`JwksService::builder`].
///
/// The setters only record their value; [`build`](Self::build) checks
/// them.
#[must_use]
#[derive(Debug, Clone)]
pub struct JwksServiceBuilder {
    source: JwksSource,
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
    /// [`jwks_max_age`](KeyRegistry::jwks_max_age), the shortest of
    /// the registries' for a merged source); whole seconds, at most that.
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
            source,
            path,
            max_age,
            content_type,
        } = self;
        let endpoint = Endpoint::new(
            path,
            max_age,
            source.jwks_max_age(),
            content_type.header_value(),
        )?;
        Ok(JwksService {
            source,
            endpoint: Arc::new(endpoint),
        })
    }
}

impl fmt::Debug for JwksService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwksService")
            .field("path", &self.endpoint.path)
            .field("max_age", &self.endpoint.max_age)
            .field("content_type", &self.endpoint.content_type)
            .field("registries", &self.source.registries().len())
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
        ready(Ok(self.respond(&req)))
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use http::StatusCode;

    use super::*;
    use crate::KeyRegistry;
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
        assert_eq!(svc.endpoint.cache_control(), "public, max-age=120");
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

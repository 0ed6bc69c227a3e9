//! [`JwtSignerLayer`]: the settings, and the layer that builds a
//! [`JwtSigner`] with a runtime of its own for each service;
//! [`JwtSignerLayerBuilder`]: the settings, checked once by `build()`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use serde_json::Value;
use tower_layer::Layer;

use super::claims::{ClaimsRejection, RequestClaims};
use super::config::{ClaimsFn, Config, ExistingToken, Reuse};
use super::mint::Minter;
use super::offload::Offload;
use super::reuse::{TokenCache, TokenReuse};
use super::service::JwtSigner;
use crate::error::ConfigError;
use crate::registry::KeyRegistry;

/// Builds [`JwtSigner`] services that sign every request with the active key
/// of a [`KeyRegistry`]. See the [module docs](super) for the behaviour and
/// an example.
///
/// [`new`](Self::new) gives the defaults; [`builder`](Self::builder) sets
/// the claims, the header, the lifetime and the rest, and its
/// [`build`](JwtSignerLayerBuilder::build) checks them all once, so a layer
/// that exists always works and nothing is checked per request.
///
/// The layer holds settings only. Each call of [`Layer::layer`] builds a
/// service with a runtime of its own (the encoded header of the active key
/// and, with [`reuse_tokens`](JwtSignerLayerBuilder::reuse_tokens), a reuse
/// cache), as tower's `ConcurrencyLimitLayer` makes a fresh semaphore for
/// each service; clones of that service share it. To share one reuse cache
/// across services, give them one [`TokenCache`] with
/// [`reuse_tokens_in`](JwtSignerLayerBuilder::reuse_tokens_in).
#[derive(Clone)]
#[must_use]
pub struct JwtSignerLayer {
    config: Arc<Config>,
}

impl JwtSignerLayer {
    /// Signs with `registry`'s active key: `Authorization: Bearer <jwt>`,
    /// `typ: JWT`, the registry's [token lifetime](KeyRegistry::token_ttl)
    /// (60 s by default), no `iss`/`sub`/`aud`, an existing token replaced.
    pub fn new(registry: KeyRegistry) -> Self {
        JwtSignerLayer {
            config: Arc::new(Config::new(registry)),
        }
    }

    /// A builder for the claims, the header, the lifetime and the rest.
    pub fn builder(registry: KeyRegistry) -> JwtSignerLayerBuilder {
        JwtSignerLayerBuilder {
            registry,
            claims: Vec::new(),
            request_claims: None,
            ttl: None,
            backdate: Duration::ZERO,
            token_type: None,
            header_name: None,
            scheme: Scheme::Default,
            existing: ExistingToken::Replace,
            offload: Offload::Auto,
            reuse: None,
            max_token_len: None,
            header_x5t_s256: false,
        }
    }

    /// The registry whose active key signs.
    pub fn registry(&self) -> &KeyRegistry {
        &self.config.registry
    }

    /// The token lifetime: the registry's, or the shorter one the builder
    /// was given.
    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.config.ttl)
    }
}

impl fmt::Debug for JwtSignerLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtSignerLayer")
            .field("config", &*self.config)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for JwtSignerLayer {
    type Service = JwtSigner<S>;

    /// A service with a runtime of its own: a fresh encoded-header cache
    /// and, with [`reuse_tokens`](JwtSignerLayerBuilder::reuse_tokens), a
    /// fresh reuse cache (or the shared one given to
    /// [`reuse_tokens_in`](JwtSignerLayerBuilder::reuse_tokens_in)).
    fn layer(&self, inner: S) -> Self::Service {
        JwtSigner::from_minter(inner, Minter::new(Arc::clone(&self.config)))
    }
}

// Written here, not in service.rs, so that the service never imports the
// layer: the arrows run layer -> service only.
impl<S> JwtSigner<S> {
    /// A [`JwtSignerLayer`] with the default configuration (the same as
    /// [`JwtSignerLayer::new`]); [`JwtSignerLayer::builder`] configures
    /// one.
    pub fn layer(registry: KeyRegistry) -> JwtSignerLayer {
        JwtSignerLayer::new(registry)
    }
}

/// A claim setting, in the order the builder was given them.
#[derive(Clone, Debug)]
enum ClaimSetting {
    Issuer(String),
    Subject(String),
    Audience(String),
    Audiences(Vec<String>),
    Static(String, Value),
    Template(String, String),
}

/// The scheme setting.
#[derive(Clone, Debug)]
enum Scheme {
    /// `Bearer`.
    Default,
    /// Another scheme, to check.
    Custom(String),
    /// The bare token.
    None,
}

/// Builds a [`JwtSignerLayer`]; see [`JwtSignerLayer::builder`].
///
/// Every setter only records its value. [`build`](Self::build) checks them
/// all once and returns the first refusal as a [`ConfigError`] whose
/// [`setting`](ConfigError::setting) is the setter's name.
///
/// ```
/// use std::time::Duration;
/// use tower_jwt_signer::{Algorithm, JwtSignerLayer, KeyRegistry};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = KeyRegistry::generate(Algorithm::ES256)?; // 60 s tokens
/// let signer = JwtSignerLayer::builder(registry.clone())
///     .issuer("https://gateway.example")
///     .audience("orders-api")
///     .template_claim("tenant", "${req.headers.x-tenant:public}")
///     .ttl(Duration::from_secs(30))
///     .build()?;
/// assert_eq!(signer.ttl(), Duration::from_secs(30));
///
/// // Never longer than the registry's token lifetime: the rotator would
/// // retire keys while their tokens live.
/// let err = JwtSignerLayer::builder(registry)
///     .ttl(Duration::from_secs(600))
///     .build()
///     .unwrap_err();
/// assert_eq!(err.setting(), "ttl");
/// # Ok(())
/// # }
/// ```
#[must_use]
#[derive(Clone)]
pub struct JwtSignerLayerBuilder {
    registry: KeyRegistry,
    claims: Vec<ClaimSetting>,
    request_claims: Option<Arc<ClaimsFn>>,
    ttl: Option<Duration>,
    backdate: Duration,
    token_type: Option<String>,
    header_name: Option<String>,
    scheme: Scheme,
    existing: ExistingToken,
    offload: Offload,
    reuse: Option<Reuse>,
    max_token_len: Option<usize>,
    header_x5t_s256: bool,
}

impl JwtSignerLayerBuilder {
    /// Sets `iss` (not empty).
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.claims.push(ClaimSetting::Issuer(issuer.into()));
        self
    }

    /// Sets `sub` for every request (not empty). A per-request closure
    /// ([`request_claims`](Self::request_claims)) or a template can set it
    /// per request instead.
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.claims.push(ClaimSetting::Subject(subject.into()));
        self
    }

    /// Sets `aud` to one audience, a JSON string (not empty).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.claims.push(ClaimSetting::Audience(audience.into()));
        self
    }

    /// Sets `aud` to a list of audiences, a JSON array of strings (not
    /// empty, and no audience empty).
    pub fn audiences<I>(mut self, audiences: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let list = audiences.into_iter().map(Into::into).collect();
        self.claims.push(ClaimSetting::Audiences(list));
        self
    }

    /// Adds a static private claim with any JSON value, the same on every
    /// token. Setting a name again replaces its value.
    ///
    /// The name may not be empty nor a registered claim: `iss`, `sub` and
    /// `aud` have their own setters ([`issuer`](Self::issuer),
    /// [`subject`](Self::subject), [`audience`](Self::audience)), and
    /// `iat`, `nbf`, `exp`, `jti` are the signer's own.
    pub fn claim(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.claims
            .push(ClaimSetting::Static(name.into(), value.into()));
        self
    }

    /// Adds a claim whose value is a template rendered from each request:
    /// `${req.headers.NAME}`, `${req.query.NAME}`, `${req.path}`,
    /// `${req.method}`, `${req.host}`, each with an optional `:default`,
    /// and `${number:...}` / `${boolean:...}` for a typed value. See the
    /// [module docs](super#templates) for the syntax and the rules.
    ///
    /// `iss`, `sub` and `aud` may be templates (of strings); a template
    /// replaces a static claim of the same name. The template must parse,
    /// typed defaults must be of their type, and the name may not be empty
    /// nor `iat`, `nbf`, `exp` or `jti`.
    pub fn template_claim(mut self, name: impl Into<String>, template: impl AsRef<str>) -> Self {
        self.claims.push(ClaimSetting::Template(
            name.into(),
            template.as_ref().to_owned(),
        ));
        self
    }

    /// Sets a closure that computes claims from each request's parts
    /// (method, URI, headers, extensions). Its claims take precedence over
    /// templates and static claims. It runs before the inner service, on
    /// the calling task: keep it quick.
    ///
    /// Returning a [`ClaimsRejection`] answers the request with its status
    /// (401, 403 or 500) and a small JSON body; the inner service is not
    /// called. This is how the user that an earlier authentication layer put
    /// in the extensions becomes `sub`.
    ///
    /// The closure runs for every request, under every
    /// [`ExistingToken`] policy: a request it refuses is refused even when
    /// it already carries the header and the policy is
    /// [`Keep`](ExistingToken::Keep) (then its claims are not used: nothing
    /// is signed) or [`Reject`](ExistingToken::Reject) (its refusal is the
    /// answer, before `token_present`).
    ///
    /// ```
    /// use tower_jwt_signer::signer::{ClaimsRejection, RequestClaims};
    /// use tower_jwt_signer::{Algorithm, JwtSignerLayer, KeyRegistry};
    ///
    /// #[derive(Clone)]
    /// struct User(String);
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let registry = KeyRegistry::generate(Algorithm::ES256)?;
    /// let layer = JwtSignerLayer::builder(registry)
    ///     .request_claims(|parts| {
    ///         let user = parts
    ///             .extensions
    ///             .get::<User>()
    ///             .ok_or_else(|| ClaimsRejection::unauthorized("not signed in"))?;
    ///         Ok(RequestClaims::new().subject(user.0.clone()))
    ///     })
    ///     .build()?;
    /// # let _ = layer;
    /// # Ok(())
    /// # }
    /// ```
    pub fn request_claims<F>(mut self, claims: F) -> Self
    where
        F: Fn(&Parts) -> Result<RequestClaims, ClaimsRejection> + Send + Sync + 'static,
    {
        self.request_claims = Some(Arc::new(claims));
        self
    }

    /// Sets the token lifetime: `exp = iat + ttl`. Default: the registry's
    /// [`token_ttl`](KeyRegistry::token_ttl) (60 s unless set there).
    ///
    /// Whole seconds, from 1 s to the registry's token lifetime: shorter is
    /// fine, longer is refused, because the rotator keeps an old key
    /// published for the registry's lifetime (plus the verifiers' leeway)
    /// and no longer. To sign longer tokens, raise
    /// [`KeyRegistryBuilder::token_ttl`](crate::registry::KeyRegistryBuilder::token_ttl).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Backdates `nbf` by this much (`nbf = iat - backdate`) so that a
    /// backend whose clock runs a little behind accepts fresh tokens.
    /// Default 0 (`nbf = iat`); whole seconds up to one hour.
    pub fn not_before_backdate(mut self, backdate: Duration) -> Self {
        self.backdate = backdate;
        self
    }

    /// Sets the JWT header's `typ` (default `JWT`), for example `at+jwt`
    /// (RFC 9068): 1 to 64 characters of `A-Z a-z 0-9 ! # $ & - ^ _ . + /`.
    pub fn token_type(mut self, token_type: impl Into<String>) -> Self {
        self.token_type = Some(token_type.into());
        self
    }

    /// Puts the signing key's certificate thumbprint, `x5t#S256` (RFC 7515
    /// section 4.1.8), in the token header of a certificate-backed key, for
    /// verifiers that pick the key by certificate rather than by `kid`. Off
    /// by default: the header stays `{alg, typ, kid}`. A key without a
    /// certificate chain signs with the plain header either way.
    ///
    /// The header is built once per key, never per request.
    pub fn header_x5t_s256(mut self, on: bool) -> Self {
        self.header_x5t_s256 = on;
        self
    }

    /// Sets the header the token is written to (default `Authorization`),
    /// for example `X-JWT-Token` (Otoroshi's default, usually with
    /// [`without_scheme`](Self::without_scheme)).
    ///
    /// It must be a valid header name, and not a hop-by-hop or framing
    /// header (`Connection`, `Keep-Alive`, `Proxy-*`, `TE`, `Trailer`,
    /// `Transfer-Encoding`, `Upgrade`, `Host`, `Content-Length`) that
    /// proxies drop or that would break the request.
    ///
    /// The signer also removes what could stand in for the header or have
    /// it dropped: every look-alike header (the same name with `_` for `-`
    /// or the reverse, in any case, such as `X_JWT_Token`, which CGI and
    /// WSGI backends read as `X-JWT-Token`), and the header's name from
    /// every `Connection` line. See the
    /// [module docs](super#what-the-backend-receives).
    pub fn header_name(mut self, name: impl Into<String>) -> Self {
        self.header_name = Some(name.into());
        self
    }

    /// Sets the scheme written before the token (default `Bearer`): the
    /// header value is `<scheme> <jwt>`. It must be 1 to 64 `token`
    /// characters (RFC 9110: letters, digits and ``!#$%&'*+-.^_`|~``; no
    /// space, CR or LF). For a bare token use
    /// [`without_scheme`](Self::without_scheme).
    pub fn scheme(mut self, scheme: impl Into<String>) -> Self {
        self.scheme = Scheme::Custom(scheme.into());
        self
    }

    /// Writes the bare token, without a scheme.
    pub fn without_scheme(mut self) -> Self {
        self.scheme = Scheme::None;
        self
    }

    /// What to do when a request already carries the header (default
    /// [`ExistingToken::Replace`]).
    pub fn existing_token(mut self, policy: ExistingToken) -> Self {
        self.existing = policy;
        self
    }

    /// Where signatures are computed (default [`Offload::Auto`]: the slow
    /// algorithms on the signer's own threads, one per core; ES256 and
    /// EdDSA inline). See [`Offload`].
    pub fn offload(mut self, offload: Offload) -> Self {
        self.offload = offload;
        self
    }

    /// Turns token reuse on: a request whose claims equal those of a recent
    /// token gets that token again, without a new signature, while it has
    /// enough lifetime left. Off by default, because `jti` is then no longer
    /// unique per request; read the trade-off in [`TokenReuse`], whose
    /// settings [`build`](Self::build) checks.
    ///
    /// Each service the layer builds gets a cache of its own, made by
    /// [`Layer::layer`] (its clones share it); axum's `Router::layer`
    /// builds one service per route, so each route has its own cache, each
    /// bounded by [`TokenReuse::max_entries`]. For one cache across
    /// services, use [`reuse_tokens_in`](Self::reuse_tokens_in).
    ///
    /// ```
    /// use http::{Request, Response};
    /// use tower::{Layer, ServiceExt, service_fn};
    /// use tower_jwt_signer::signer::TokenReuse;
    /// use tower_jwt_signer::{Algorithm, JwtSignerLayer, KeyRegistry};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    /// let registry = KeyRegistry::generate(Algorithm::ES256)?;
    /// let layer = JwtSignerLayer::builder(registry)
    ///     .audience("orders-api")
    ///     .reuse_tokens(TokenReuse::new())
    ///     .build()?;
    /// let service = layer.layer(service_fn(|_: Request<()>| async {
    ///     Ok::<_, std::convert::Infallible>(Response::new(()))
    /// }));
    /// service.clone().oneshot(Request::new(())).await?;
    /// assert_eq!(service.cached_tokens(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn reuse_tokens(mut self, reuse: TokenReuse) -> Self {
        self.reuse = Some(Reuse::PerService(reuse));
        self
    }

    /// Turns token reuse on with one cache that every service built from
    /// this layer shares, and any other layer given a clone of `cache`: one
    /// bound for all of them (tower's `GlobalConcurrencyLimitLayer` shares
    /// one semaphore the same way). A token is handed out again only under
    /// the settings that made it: services of this layer and its clones
    /// share tokens; a layer configured otherwise shares the bound only.
    /// See [`TokenCache`] for an example, and [`TokenReuse`] for the
    /// trade-off.
    pub fn reuse_tokens_in(mut self, cache: TokenCache) -> Self {
        self.reuse = Some(Reuse::Shared(cache));
        self
    }

    /// The longest token the signer makes, in bytes, without the scheme
    /// (default 8 KiB, the default limit of this crate's
    /// [`Verifier`](crate::Verifier); at least 1). A request whose claims
    /// would make a longer token (templates copying long header values, say)
    /// is answered `400` with `token_too_large` and is not forwarded: its
    /// backend would refuse the token anyway, and a client cannot make the
    /// gateway forward a header many times larger than the values it sent.
    /// Keep it at most the verifiers' limit.
    pub fn max_token_len(mut self, max: usize) -> Self {
        self.max_token_len = Some(max);
        self
    }

    /// Checks every setting once and builds the layer.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for the first refused setting, checked in this
    /// order: `header_name`, `scheme`, `token_type`, `ttl` (not whole
    /// seconds from 1 s to the registry's
    /// [`token_ttl`](KeyRegistry::token_ttl)), `not_before_backdate` (not
    /// whole seconds up to an hour), `max_token_len` (zero), the
    /// [`TokenReuse`] of [`reuse_tokens`](Self::reuse_tokens)
    /// (`max_entries`, `min_remaining_percent`), then the claims
    /// (`issuer`, `subject`, `audience`, `audiences`, `claim`,
    /// `template_claim`) in the order they were set. Its
    /// [`setting`](ConfigError::setting) is the name of the setter (or of
    /// the [`TokenReuse`] setter) that took the value.
    pub fn build(self) -> Result<JwtSignerLayer, ConfigError> {
        let JwtSignerLayerBuilder {
            registry,
            claims,
            request_claims,
            ttl,
            backdate,
            token_type,
            header_name,
            scheme,
            existing,
            offload,
            reuse,
            max_token_len,
            header_x5t_s256,
        } = self;
        let mut config = Config::new(registry);
        config.header_x5t_s256 = header_x5t_s256;
        if let Some(name) = header_name {
            config.set_header_name(&name)?;
        }
        match scheme {
            Scheme::Default => {}
            Scheme::Custom(scheme) => config.set_scheme(&scheme)?,
            Scheme::None => config.prefix.clear(),
        }
        if let Some(token_type) = token_type {
            config.set_token_type(token_type)?;
        }
        if let Some(ttl) = ttl {
            config.set_ttl(ttl)?;
        }
        config.set_backdate(backdate)?;
        if let Some(max) = max_token_len {
            config.set_max_token_len(max)?;
        }
        if let Some(Reuse::PerService(settings)) = &reuse {
            settings.check()?;
        }
        for claim in claims {
            match claim {
                ClaimSetting::Issuer(value) => config.set_string_claim("issuer", "iss", value)?,
                ClaimSetting::Subject(value) => {
                    config.set_string_claim("subject", "sub", value)?;
                }
                ClaimSetting::Audience(value) => {
                    config.set_string_claim("audience", "aud", value)?;
                }
                ClaimSetting::Audiences(list) => config.set_audiences(list)?,
                ClaimSetting::Static(name, value) => config.set_claim(&name, value)?,
                ClaimSetting::Template(name, template) => {
                    config.set_template_claim(&name, &template)?;
                }
            }
        }
        config.request_claims = request_claims;
        config.existing = existing;
        config.offload = offload;
        config.reuse = reuse;
        Ok(JwtSignerLayer {
            config: Arc::new(config),
        })
    }
}

impl fmt::Debug for JwtSignerLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtSignerLayerBuilder")
            .field("registry", &self.registry)
            .field("claims", &self.claims)
            .field(
                "request_claims",
                &self.request_claims.as_ref().map(|_| "<fn>"),
            )
            .field("ttl", &self.ttl)
            .field("backdate", &self.backdate)
            .field("token_type", &self.token_type)
            .field("header_name", &self.header_name)
            .field("scheme", &self.scheme)
            .field("existing", &self.existing)
            .field("offload", &self.offload)
            .field("reuse", &self.reuse)
            .field("max_token_len", &self.max_token_len)
            .finish()
    }
}

//! [`JwtSignerLayer`]: the settings, and the layer that builds a
//! [`JwtSigner`] with a runtime of its own for each service.

use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use serde_json::Value;
use tower_layer::Layer;

use super::claims::{ClaimsRejection, RequestClaims};
use super::config::{ClaimsFn, Config, ExistingToken, Reuse};
use super::error::SignerConfigError;
use super::mint::Minter;
use super::offload::Offload;
use super::reuse::{TokenCache, TokenReuse};
use super::service::JwtSigner;
use crate::registry::KeyRegistry;

/// Builds [`JwtSigner`] services that sign every request with the active key
/// of a [`KeyRegistry`]. See the [module docs](super) for the behaviour and
/// an example.
///
/// Every setting is checked when it is set: a fallible setter returns
/// [`SignerConfigError`], so a layer that exists always works.
///
/// The layer holds settings only. Each call of [`Layer::layer`] builds a
/// service with a runtime of its own (the encoded header of the active key
/// and, with [`reuse_tokens`](Self::reuse_tokens), a reuse cache), as
/// tower's `ConcurrencyLimitLayer` makes a fresh semaphore for each
/// service; clones of that service share it. To share one reuse cache
/// across services, give them one [`TokenCache`] with
/// [`reuse_tokens_in`](Self::reuse_tokens_in).
#[derive(Clone)]
#[must_use]
pub struct JwtSignerLayer {
    config: Arc<Config>,
}

impl JwtSignerLayer {
    /// Signs with `registry`'s active key: `Authorization: Bearer <jwt>`,
    /// `typ: JWT`, a 60 s lifetime, no `iss`/`sub`/`aud`, an existing token
    /// replaced.
    pub fn new(registry: KeyRegistry) -> Self {
        JwtSignerLayer {
            config: Arc::new(Config::new(registry)),
        }
    }

    /// The registry whose active key signs.
    pub fn registry(&self) -> &KeyRegistry {
        &self.config.registry
    }

    /// Changes the settings. Copy on write: services already built (and
    /// clones of this layer) keep the settings they have.
    fn update(self, change: impl FnOnce(&mut Config)) -> Self {
        self.try_update(|config| {
            change(config);
            Ok(())
        })
        .unwrap_or_else(|never: std::convert::Infallible| match never {})
    }

    /// Changes the settings if `change` accepts the new value; nothing
    /// changes when it refuses it.
    fn try_update<E>(
        mut self,
        change: impl FnOnce(&mut Config) -> Result<(), E>,
    ) -> Result<Self, E> {
        let config = Arc::make_mut(&mut self.config);
        change(config)?;
        config.renew_id();
        Ok(self)
    }

    /// Sets `iss`.
    ///
    /// # Errors
    ///
    /// [`SignerConfigError::EmptyClaim`] for an empty string.
    pub fn issuer(self, issuer: impl Into<String>) -> Result<Self, SignerConfigError> {
        let issuer = issuer.into();
        self.try_update(|config| config.set_string_claim("iss", issuer))
    }

    /// Sets `sub` for every request. A per-request closure
    /// ([`request_claims`](Self::request_claims)) or a template can set it
    /// per request instead.
    ///
    /// # Errors
    ///
    /// [`SignerConfigError::EmptyClaim`] for an empty string.
    pub fn subject(self, subject: impl Into<String>) -> Result<Self, SignerConfigError> {
        let subject = subject.into();
        self.try_update(|config| config.set_string_claim("sub", subject))
    }

    /// Sets `aud` to one audience (a JSON string).
    ///
    /// # Errors
    ///
    /// [`SignerConfigError::EmptyClaim`] for an empty string.
    pub fn audience(self, audience: impl Into<String>) -> Result<Self, SignerConfigError> {
        let audience = audience.into();
        self.try_update(|config| config.set_string_claim("aud", audience))
    }

    /// Sets `aud` to a list of audiences (a JSON array of strings).
    ///
    /// # Errors
    ///
    /// [`SignerConfigError::EmptyClaim`] for an empty list or an empty
    /// audience.
    pub fn audiences<I>(self, audiences: I) -> Result<Self, SignerConfigError>
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let list: Vec<String> = audiences.into_iter().map(Into::into).collect();
        self.try_update(|config| config.set_audiences(list))
    }

    /// Adds a static private claim with any JSON value, the same on every
    /// token. Setting a name again replaces its value.
    ///
    /// # Errors
    ///
    /// [`SignerConfigError::ReservedClaim`] for a registered name (use
    /// [`issuer`](Self::issuer), [`subject`](Self::subject),
    /// [`audience`](Self::audience); `iat`, `nbf`, `exp`, `jti` are the
    /// signer's own); [`SignerConfigError::InvalidClaimName`] for an empty
    /// name.
    pub fn claim(
        self,
        name: impl Into<String>,
        value: impl Into<Value>,
    ) -> Result<Self, SignerConfigError> {
        let (name, value) = (name.into(), value.into());
        self.try_update(|config| config.set_claim(&name, value))
    }

    /// Adds a claim whose value is a template rendered from each request:
    /// `${req.headers.NAME}`, `${req.query.NAME}`, `${req.path}`,
    /// `${req.method}`, `${req.host}`, each with an optional `:default`,
    /// and `${number:...}` / `${boolean:...}` for a typed value. See the
    /// [module docs](super#templates) for the syntax and the rules.
    ///
    /// `iss`, `sub` and `aud` may be templates (of strings); a template
    /// replaces a static claim of the same name.
    ///
    /// # Errors
    ///
    /// [`SignerConfigError::Template`] when the template does not parse;
    /// [`SignerConfigError::TemplateType`] for a number or boolean template
    /// on `iss`, `sub` or `aud`; [`SignerConfigError::ReservedClaim`] for
    /// `iat`, `nbf`, `exp` and `jti`; [`SignerConfigError::InvalidClaimName`]
    /// for an empty name.
    pub fn template_claim(
        self,
        name: impl Into<String>,
        template: impl AsRef<str>,
    ) -> Result<Self, SignerConfigError> {
        let name = name.into();
        self.try_update(|config| config.set_template_claim(&name, template.as_ref()))
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
    /// let layer = JwtSignerLayer::new(registry).request_claims(|parts| {
    ///     let user = parts
    ///         .extensions
    ///         .get::<User>()
    ///         .ok_or_else(|| ClaimsRejection::unauthorized("not signed in"))?;
    ///     Ok(RequestClaims::new().subject(user.0.clone()))
    /// });
    /// # let _ = layer;
    /// # Ok(())
    /// # }
    /// ```
    pub fn request_claims<F>(self, claims: F) -> Self
    where
        F: Fn(&Parts) -> Result<RequestClaims, ClaimsRejection> + Send + Sync + 'static,
    {
        let claims: Arc<ClaimsFn> = Arc::new(claims);
        self.update(|config| config.request_claims = Some(claims))
    }

    /// Sets the token lifetime: `exp = iat + ttl`. Default 60 s.
    ///
    /// Keep it short: a retiring key must stay published for at least this
    /// long plus the verifiers' leeway.
    ///
    /// # Errors
    ///
    /// [`SignerConfigError::InvalidTtl`] unless it is whole seconds from 1 s
    /// to [`MAX_TTL`](super::MAX_TTL) (one day).
    pub fn ttl(self, ttl: Duration) -> Result<Self, SignerConfigError> {
        self.try_update(|config| config.set_ttl(ttl))
    }

    /// Backdates `nbf` by this much (`nbf = iat - backdate`) so that a
    /// backend whose clock runs a little behind accepts fresh tokens.
    /// Default 0 (`nbf = iat`).
    ///
    /// # Errors
    ///
    /// [`SignerConfigError::InvalidBackdate`] unless it is whole seconds up
    /// to [`MAX_BACKDATE`](super::MAX_BACKDATE) (one hour).
    pub fn not_before_backdate(self, backdate: Duration) -> Result<Self, SignerConfigError> {
        self.try_update(|config| config.set_backdate(backdate))
    }

    /// Sets the JWT header's `typ` (default `JWT`), for example `at+jwt`
    /// (RFC 9068).
    ///
    /// # Errors
    ///
    /// [`SignerConfigError::InvalidTokenType`] unless it is 1 to 64
    /// characters of `A-Z a-z 0-9 ! # $ & - ^ _ . + /`.
    pub fn token_type(self, token_type: impl Into<String>) -> Result<Self, SignerConfigError> {
        let token_type = token_type.into();
        self.try_update(|config| config.set_token_type(token_type))
    }

    /// Sets the header the token is written to (default `Authorization`),
    /// for example `X-JWT-Token` (Otoroshi's default, usually with
    /// [`without_scheme`](Self::without_scheme)).
    ///
    /// The signer also removes what could stand in for the header or have
    /// it dropped: every look-alike header (the same name with `_` for `-`
    /// or the reverse, in any case, such as `X_JWT_Token`, which CGI and
    /// WSGI backends read as `X-JWT-Token`), and the header's name from
    /// every `Connection` line. See the
    /// [module docs](super#what-the-backend-receives).
    ///
    /// # Errors
    ///
    /// [`SignerConfigError::InvalidHeaderName`] for a name that is not a
    /// valid header name; [`SignerConfigError::ReservedHeaderName`] for a
    /// hop-by-hop or framing header (`Connection`, `Keep-Alive`,
    /// `Proxy-*`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`, `Host`,
    /// `Content-Length`) that proxies drop or that would break the request.
    pub fn header_name(self, name: impl AsRef<str>) -> Result<Self, SignerConfigError> {
        self.try_update(|config| config.set_header_name(name.as_ref()))
    }

    /// Sets the scheme written before the token (default `Bearer`): the
    /// header value is `<scheme> <jwt>`.
    ///
    /// # Errors
    ///
    /// [`SignerConfigError::InvalidScheme`] unless it is 1 to 64 `token`
    /// characters (RFC 9110: letters, digits and ``!#$%&'*+-.^_`|~``; no
    /// space, CR or LF). For a bare token use
    /// [`without_scheme`](Self::without_scheme).
    pub fn scheme(self, scheme: impl AsRef<str>) -> Result<Self, SignerConfigError> {
        self.try_update(|config| config.set_scheme(scheme.as_ref()))
    }

    /// Writes the bare token, without a scheme.
    pub fn without_scheme(self) -> Self {
        self.update(|config| config.prefix.clear())
    }

    /// What to do when a request already carries the header (default
    /// [`ExistingToken::Replace`]).
    pub fn existing_token(self, policy: ExistingToken) -> Self {
        self.update(|config| config.existing = policy)
    }

    /// Where signatures are computed (default [`Offload::Auto`]: the slow
    /// algorithms on the signer's own threads, one per core; ES256 and
    /// EdDSA inline). See [`Offload`].
    pub fn offload(self, offload: Offload) -> Self {
        self.update(|config| config.offload = offload)
    }

    /// Turns token reuse on: a request whose claims equal those of a recent
    /// token gets that token again, without a new signature, while it has
    /// enough lifetime left. Off by default, because `jti` is then no longer
    /// unique per request; read the trade-off in [`TokenReuse`].
    ///
    /// Each service this layer builds gets a cache of its own, made by
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
    /// let layer = JwtSignerLayer::new(registry)
    ///     .audience("orders-api")?
    ///     .reuse_tokens(TokenReuse::new());
    /// let service = layer.layer(service_fn(|_: Request<()>| async {
    ///     Ok::<_, std::convert::Infallible>(Response::new(()))
    /// }));
    /// service.clone().oneshot(Request::new(())).await?;
    /// assert_eq!(service.cached_tokens(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn reuse_tokens(self, reuse: TokenReuse) -> Self {
        self.update(|config| config.reuse = Some(Reuse::PerService(reuse)))
    }

    /// Turns token reuse on with one cache that every service built from
    /// this layer shares, and any other layer given a clone of `cache`: one
    /// bound for all of them (tower's `GlobalConcurrencyLimitLayer` shares
    /// one semaphore the same way). A token is handed out again only under
    /// the settings that made it: services of this layer and its clones
    /// share tokens; a layer configured otherwise shares the bound only.
    /// See [`TokenCache`] for an example, and [`TokenReuse`] for the
    /// trade-off.
    pub fn reuse_tokens_in(self, cache: TokenCache) -> Self {
        self.update(|config| config.reuse = Some(Reuse::Shared(cache)))
    }

    /// The longest token the signer makes, in bytes, without the scheme
    /// (default 8 KiB, the default limit of this crate's
    /// [`Verifier`](crate::verifier::Verifier)).
    /// A request whose claims would make a longer token (templates copying
    /// long header values, say) is answered `400` with `token_too_large`
    /// and is not forwarded: its backend would refuse the token anyway, and
    /// a client cannot make the gateway forward a header many times larger
    /// than the values it sent. Keep it at most the verifiers' limit.
    ///
    /// # Errors
    ///
    /// [`SignerConfigError::InvalidMaxTokenLen`] for zero.
    pub fn max_token_len(self, max: usize) -> Result<Self, SignerConfigError> {
        self.try_update(|config| config.set_max_token_len(max))
    }

    /// Turns token reuse off again (the default).
    pub fn no_token_reuse(self) -> Self {
        self.update(|config| config.reuse = None)
    }
}

impl std::fmt::Debug for JwtSignerLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSignerLayer")
            .field("config", &*self.config)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for JwtSignerLayer {
    type Service = JwtSigner<S>;

    /// A service with a runtime of its own: a fresh encoded-header cache
    /// and, with [`reuse_tokens`](JwtSignerLayer::reuse_tokens), a fresh
    /// reuse cache (or the shared one given to
    /// [`reuse_tokens_in`](JwtSignerLayer::reuse_tokens_in)).
    fn layer(&self, inner: S) -> Self::Service {
        JwtSigner::from_minter(inner, Minter::new(Arc::clone(&self.config)))
    }
}

// Written here, not in service.rs, so that the service never imports the
// layer: the arrows run layer -> service only.
impl<S> JwtSigner<S> {
    /// A [`JwtSignerLayer`] with the default configuration; configure it
    /// with its builder methods.
    pub fn layer(registry: KeyRegistry) -> JwtSignerLayer {
        JwtSignerLayer::new(registry)
    }
}

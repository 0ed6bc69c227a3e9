//! [`JwtSignerLayer`]: the configuration, checked once, and the layer.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use http::request::Parts;
use serde_json::Value;
use tower_layer::Layer;

use super::claims::{COMPUTED_CLAIMS, ClaimsRejection, RequestClaims, ReservedClaim, TYPED_CLAIMS};
use super::offload::Offload;
use super::reuse::TokenReuse;
use super::service::{JwtSigner, Shared};
use super::template::{Template, ValueType};
use super::{DEFAULT_TTL, MAX_BACKDATE, MAX_TTL, SignerConfigError};
use crate::registry::KeyRegistry;

/// What to do with a request that already carries the target header.
///
/// These are the Otoroshi JWT Signer's `replace_if_present: true`
/// ([`Replace`](Self::Replace)), `replace_if_present: false`
/// ([`Keep`](Self::Keep)) and `fail_if_present: true`
/// ([`Reject`](Self::Reject)) as its documentation describes them.
///
/// ```
/// use tower_jwt_signer::signer::ExistingToken;
///
/// assert_eq!("keep".parse::<ExistingToken>().unwrap(), ExistingToken::Keep);
/// assert_eq!(ExistingToken::default(), ExistingToken::Replace);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ExistingToken {
    /// Remove every existing value of the header and send exactly one
    /// value: the signer's token. The default.
    #[default]
    Replace,
    /// Forward the client's value(s) untouched and sign nothing.
    Keep,
    /// Answer `400 Bad Request` with a small JSON body; the inner service is
    /// not called.
    Reject,
}

impl ExistingToken {
    /// The lower-case name (`"replace"`, `"keep"`, `"reject"`).
    pub fn as_str(self) -> &'static str {
        match self {
            ExistingToken::Replace => "replace",
            ExistingToken::Keep => "keep",
            ExistingToken::Reject => "reject",
        }
    }
}

impl fmt::Display for ExistingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ExistingToken {
    type Err = SignerConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "replace" => Ok(ExistingToken::Replace),
            "keep" => Ok(ExistingToken::Keep),
            "reject" => Ok(ExistingToken::Reject),
            _ => Err(SignerConfigError::InvalidPolicy(truncate(s))),
        }
    }
}

type ClaimsFn = dyn Fn(&Parts) -> Result<RequestClaims, ClaimsRejection> + Send + Sync;

/// A static claim, with its `,"name":value` member serialised once.
#[derive(Clone)]
pub(crate) struct StaticClaim {
    pub(crate) name: String,
    pub(crate) member: Vec<u8>,
}

/// A template claim, with its `,"name":` prefix serialised once.
#[derive(Clone)]
pub(crate) struct TemplateClaim {
    pub(crate) name: String,
    pub(crate) prefix: Vec<u8>,
    pub(crate) template: Template,
}

/// The checked configuration. Everything the hot path needs is built
/// here, once.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) header_name: HeaderName,
    /// `"Bearer "`, or empty for a bare token.
    pub(crate) prefix: String,
    pub(crate) token_type: String,
    pub(crate) ttl: u64,
    pub(crate) backdate: u64,
    pub(crate) existing: ExistingToken,
    pub(crate) request_claims: Option<Arc<ClaimsFn>>,
    /// Static claims (including `iss`, `sub`, `aud`) in the order they were
    /// first set, without those a template replaces.
    pub(crate) statics: Vec<StaticClaim>,
    /// The members of `statics`, concatenated.
    pub(crate) statics_joined: Vec<u8>,
    pub(crate) templates: Vec<TemplateClaim>,
    pub(crate) templates_read_query: bool,
    /// Every static claim as set, including those a template replaces.
    all_statics: Vec<(String, Value)>,
    /// Where signatures are computed.
    pub(crate) offload: Offload,
    /// Token reuse, when turned on.
    pub(crate) reuse: Option<TokenReuse>,
    /// The longest token made, in bytes (without the scheme).
    pub(crate) max_token_len: usize,
}

impl Config {
    fn new() -> Self {
        let mut config = Config {
            header_name: http::header::AUTHORIZATION,
            prefix: "Bearer ".to_owned(),
            token_type: "JWT".to_owned(),
            ttl: DEFAULT_TTL.as_secs(),
            backdate: 0,
            existing: ExistingToken::Replace,
            request_claims: None,
            statics: Vec::new(),
            statics_joined: Vec::new(),
            templates: Vec::new(),
            templates_read_query: false,
            all_statics: Vec::new(),
            offload: Offload::Auto,
            reuse: None,
            max_token_len: crate::verifier::DEFAULT_MAX_TOKEN_LEN,
        };
        config.compile();
        config
    }

    fn set_static(&mut self, name: &str, value: Value) {
        match self.all_statics.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value,
            None => self.all_statics.push((name.to_owned(), value)),
        }
        self.compile();
    }

    fn set_template(&mut self, name: &str, template: Template) {
        let claim = TemplateClaim {
            name: name.to_owned(),
            prefix: member_prefix(name),
            template,
        };
        match self.templates.iter_mut().find(|t| t.name == name) {
            Some(slot) => *slot = claim,
            None => self.templates.push(claim),
        }
        self.compile();
    }

    /// Rebuilds the pre-serialised members: static claims a template
    /// replaces are left out, so no name is ever written twice.
    fn compile(&mut self) {
        self.statics = self
            .all_statics
            .iter()
            .filter(|(name, _)| !self.templates.iter().any(|t| &t.name == name))
            .map(|(name, value)| {
                let mut member = member_prefix(name);
                serde_json::to_writer(&mut member, value).expect("writing to a Vec cannot fail");
                StaticClaim {
                    name: name.clone(),
                    member,
                }
            })
            .collect();
        self.statics_joined = self
            .statics
            .iter()
            .flat_map(|s| s.member.iter().copied())
            .collect();
        self.templates_read_query = self.templates.iter().any(|t| t.template.reads_query());
    }
}

/// `,"name":`
fn member_prefix(name: &str) -> Vec<u8> {
    let mut out = vec![b','];
    serde_json::to_writer(&mut out, name).expect("writing to a Vec cannot fail");
    out.push(b':');
    out
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("header_name", &self.header_name)
            .field("scheme", &self.prefix.trim_end())
            .field("token_type", &self.token_type)
            .field("ttl", &self.ttl)
            .field("backdate", &self.backdate)
            .field("existing", &self.existing)
            .field("static_claims", &self.all_statics)
            .field(
                "template_claims",
                &self
                    .templates
                    .iter()
                    .map(|t| (&t.name, t.template.as_str()))
                    .collect::<Vec<_>>(),
            )
            .field(
                "request_claims",
                &self.request_claims.as_ref().map(|_| "<fn>"),
            )
            .field("offload", &self.offload)
            .field("reuse", &self.reuse)
            .field("max_token_len", &self.max_token_len)
            .finish()
    }
}

/// Builds [`JwtSigner`] services that sign every request with the active key
/// of a [`KeyRegistry`]. See the [module docs](super) for the behaviour and
/// an example.
///
/// Every setting is checked when it is set: a fallible setter returns
/// [`SignerConfigError`], so a layer that exists always works.
#[derive(Clone)]
#[must_use]
pub struct JwtSignerLayer {
    shared: Arc<Shared>,
}

impl JwtSignerLayer {
    /// Signs with `registry`'s active key: `Authorization: Bearer <jwt>`,
    /// `typ: JWT`, a 60 s lifetime, no `iss`/`sub`/`aud`, an existing token
    /// replaced.
    pub fn new(registry: KeyRegistry) -> Self {
        JwtSignerLayer {
            shared: Arc::new(Shared::new(registry, Config::new())),
        }
    }

    /// The registry whose active key signs.
    pub fn registry(&self) -> &KeyRegistry {
        self.shared.registry()
    }

    fn update(mut self, change: impl FnOnce(&mut Config)) -> Self {
        // Copy on write: a layer already used to build services keeps its
        // configuration; this one gets its own.
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            change(shared.config_mut());
            shared.config_changed();
        } else {
            let mut config = self.shared.config().clone();
            change(&mut config);
            self.shared = Arc::new(Shared::new(self.shared.registry().clone(), config));
        }
        self
    }

    /// Sets `iss`.
    ///
    /// # Errors
    ///
    /// [`SignerConfigError::EmptyClaim`] for an empty string.
    pub fn issuer(self, issuer: impl Into<String>) -> Result<Self, SignerConfigError> {
        self.string_claim("iss", issuer.into())
    }

    /// Sets `sub` for every request. A per-request closure
    /// ([`request_claims`](Self::request_claims)) or a template can set it
    /// per request instead.
    ///
    /// # Errors
    ///
    /// [`SignerConfigError::EmptyClaim`] for an empty string.
    pub fn subject(self, subject: impl Into<String>) -> Result<Self, SignerConfigError> {
        self.string_claim("sub", subject.into())
    }

    /// Sets `aud` to one audience (a JSON string).
    ///
    /// # Errors
    ///
    /// [`SignerConfigError::EmptyClaim`] for an empty string.
    pub fn audience(self, audience: impl Into<String>) -> Result<Self, SignerConfigError> {
        self.string_claim("aud", audience.into())
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
        if list.is_empty() || list.iter().any(String::is_empty) {
            return Err(SignerConfigError::EmptyClaim("aud"));
        }
        let value = Value::Array(list.into_iter().map(Value::String).collect());
        Ok(self.update(|config| config.set_static("aud", value)))
    }

    fn string_claim(self, name: &'static str, value: String) -> Result<Self, SignerConfigError> {
        if value.is_empty() {
            return Err(SignerConfigError::EmptyClaim(name));
        }
        Ok(self.update(|config| config.set_static(name, Value::String(value))))
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
        let name = name.into();
        check_claim_name(&name, true)?;
        let value = value.into();
        Ok(self.update(|config| config.set_static(&name, value)))
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
        check_claim_name(&name, false)?;
        let template =
            Template::parse(template.as_ref()).map_err(|source| SignerConfigError::Template {
                claim: truncate(&name),
                source,
            })?;
        if TYPED_CLAIMS.contains(&name.as_str()) && template.value_type() != ValueType::String {
            return Err(SignerConfigError::TemplateType {
                claim: name,
                template: truncate(template.as_str()),
            });
        }
        Ok(self.update(|config| config.set_template(&name, template)))
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
    /// to [`MAX_TTL`] (one day).
    pub fn ttl(self, ttl: Duration) -> Result<Self, SignerConfigError> {
        if ttl.subsec_nanos() != 0 || ttl.is_zero() || ttl > MAX_TTL {
            return Err(SignerConfigError::InvalidTtl(ttl));
        }
        Ok(self.update(|config| config.ttl = ttl.as_secs()))
    }

    /// Backdates `nbf` by this much (`nbf = iat - backdate`) so that a
    /// backend whose clock runs a little behind accepts fresh tokens.
    /// Default 0 (`nbf = iat`).
    ///
    /// # Errors
    ///
    /// [`SignerConfigError::InvalidBackdate`] unless it is whole seconds up
    /// to [`MAX_BACKDATE`] (one hour).
    pub fn not_before_backdate(self, backdate: Duration) -> Result<Self, SignerConfigError> {
        if backdate.subsec_nanos() != 0 || backdate > MAX_BACKDATE {
            return Err(SignerConfigError::InvalidBackdate(backdate));
        }
        Ok(self.update(|config| config.backdate = backdate.as_secs()))
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
        let valid = (1..=64).contains(&token_type.len())
            && token_type
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+/".contains(&b));
        if !valid {
            return Err(SignerConfigError::InvalidTokenType(truncate(&token_type)));
        }
        Ok(self.update(|config| config.token_type = token_type))
    }

    /// Sets the header the token is written to (default `Authorization`),
    /// for example `X-JWT-Token` (Otoroshi's default, usually with
    /// [`without_scheme`](Self::without_scheme)).
    ///
    /// # Errors
    ///
    /// [`SignerConfigError::InvalidHeaderName`] for a name that is not a
    /// valid header name; [`SignerConfigError::ReservedHeaderName`] for a
    /// hop-by-hop or framing header (`Connection`, `Keep-Alive`,
    /// `Proxy-*`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`, `Host`,
    /// `Content-Length`) that proxies drop or that would break the request.
    pub fn header_name(self, name: impl AsRef<str>) -> Result<Self, SignerConfigError> {
        let name = name.as_ref();
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| SignerConfigError::InvalidHeaderName(truncate(name)))?;
        const RESERVED: [&str; 8] = [
            "connection",
            "keep-alive",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "host",
            "content-length",
        ];
        if RESERVED.contains(&header.as_str()) || header.as_str().starts_with("proxy-") {
            return Err(SignerConfigError::ReservedHeaderName(header));
        }
        Ok(self.update(|config| config.header_name = header))
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
        let scheme = scheme.as_ref();
        let valid = (1..=64).contains(&scheme.len())
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !valid {
            return Err(SignerConfigError::InvalidScheme(truncate(scheme)));
        }
        let prefix = format!("{scheme} ");
        Ok(self.update(|config| config.prefix = prefix))
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
    /// ```
    /// use tower_jwt_signer::signer::TokenReuse;
    /// use tower_jwt_signer::{Algorithm, JwtSignerLayer, KeyRegistry};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let registry = KeyRegistry::generate(Algorithm::ES256)?;
    /// let layer = JwtSignerLayer::new(registry)
    ///     .audience("orders-api")?
    ///     .reuse_tokens(TokenReuse::new());
    /// assert_eq!(layer.cached_tokens(), 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn reuse_tokens(self, reuse: TokenReuse) -> Self {
        self.update(|config| config.reuse = Some(reuse))
    }

    /// The longest token the signer makes, in bytes, without the scheme
    /// (default 8 KiB: [`DEFAULT_MAX_TOKEN_LEN`](crate::verifier::DEFAULT_MAX_TOKEN_LEN),
    /// the limit of this crate's [`Verifier`](crate::verifier::Verifier)).
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
        if max == 0 {
            return Err(SignerConfigError::InvalidMaxTokenLen(max));
        }
        Ok(self.update(|config| config.max_token_len = max))
    }

    /// Turns token reuse off again (the default).
    pub fn no_token_reuse(self) -> Self {
        self.update(|config| config.reuse = None)
    }

    /// How many tokens the reuse cache holds now, shared by every service
    /// this layer built (0 when reuse is off). At most
    /// [`TokenReuse::max_entries`].
    pub fn cached_tokens(&self) -> usize {
        self.shared.cached_tokens()
    }
}

fn check_claim_name(name: &str, refuse_typed: bool) -> Result<(), SignerConfigError> {
    if name.is_empty() {
        return Err(SignerConfigError::InvalidClaimName(String::new()));
    }
    let reserved =
        COMPUTED_CLAIMS.contains(&name) || (refuse_typed && TYPED_CLAIMS.contains(&name));
    if reserved {
        return Err(SignerConfigError::ReservedClaim(ReservedClaim::new(name)));
    }
    Ok(())
}

/// At most 200 characters of a refused value, for an error message.
pub(crate) fn truncate(value: &str) -> String {
    value.chars().take(200).collect()
}

impl fmt::Debug for JwtSignerLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtSignerLayer")
            .field("config", self.shared.config())
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for JwtSignerLayer {
    type Service = JwtSigner<S>;

    fn layer(&self, inner: S) -> Self::Service {
        JwtSigner::from_shared(inner, Arc::clone(&self.shared))
    }
}

impl From<ReservedClaim> for SignerConfigError {
    fn from(err: ReservedClaim) -> Self {
        SignerConfigError::ReservedClaim(err)
    }
}

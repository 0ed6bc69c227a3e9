//! The checked configuration: every setting of a
//! [`JwtSignerLayer`](super::JwtSignerLayer), checked when it is set, with
//! what the hot path needs built once.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::HeaderName;
use http::request::Parts;
use serde_json::Value;

use super::claims::{COMPUTED_CLAIMS, ClaimsRejection, RequestClaims, ReservedClaim, TYPED_CLAIMS};
use super::error::{MAX_BACKDATE, MAX_TTL, SignerConfigError, truncate};
use super::offload::Offload;
use super::reuse::{TokenCache, TokenReuse};
use super::template::{Template, ValueType};
use crate::registry::KeyRegistry;

/// The default token lifetime: 60 seconds.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

/// What to do with a request that already carries the target header.
///
/// These are the Otoroshi JWT Signer's `replace_if_present: true`
/// ([`Replace`](Self::Replace)), `replace_if_present: false`
/// ([`Keep`](Self::Keep)) and `fail_if_present: true`
/// ([`Reject`](Self::Reject)) as its documentation describes them.
///
/// Whatever the policy, the claims closure
/// ([`JwtSignerLayer::request_claims`](super::JwtSignerLayer::request_claims))
/// runs first and its refusal is the answer: a client cannot skip it by
/// sending a header. See the [module docs](super#existing-tokens).
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
    /// Forward the client's own value(s) of the header untouched, **not
    /// signed by this signer**, and sign nothing (look-alikes of the header
    /// are still removed). The claims closure still
    /// decides whether the request goes on. Only for a header the backend
    /// verifies as it would any client's token.
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

pub(crate) type ClaimsFn = dyn Fn(&Parts) -> Result<RequestClaims, ClaimsRejection> + Send + Sync;

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

/// Token reuse, when it is on.
#[derive(Clone, Debug)]
pub(crate) enum Reuse {
    /// A cache for each service the layer builds.
    PerService(TokenReuse),
    /// One cache the user shares.
    Shared(TokenCache),
}

impl Reuse {
    /// The cache for a service being built: a fresh one, or the shared one.
    pub(crate) fn cache(&self) -> TokenCache {
        match self {
            Reuse::PerService(settings) => TokenCache::new(*settings),
            Reuse::Shared(cache) => cache.clone(),
        }
    }
}

/// Tells settings apart: a shared [`TokenCache`] hands a token out again
/// only to the settings that made it.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The checked configuration. Every field holds a setting that was checked
/// when it was set; everything the hot path needs is built here, once.
/// Nothing in it changes while requests are served.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) registry: KeyRegistry,
    /// Unique to these settings; renewed by every change.
    pub(crate) id: u64,
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
    pub(crate) reuse: Option<Reuse>,
    /// The longest token made, in bytes (without the scheme).
    pub(crate) max_token_len: usize,
}

impl Config {
    /// The defaults: `Authorization: Bearer <jwt>`, `typ: JWT`, a 60 s
    /// lifetime, no `iss`/`sub`/`aud`, an existing token replaced.
    pub(crate) fn new(registry: KeyRegistry) -> Self {
        let mut config = Config {
            registry,
            id: 0,
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
            max_token_len: crate::limits::DEFAULT_MAX_TOKEN_LEN,
        };
        config.renew_id();
        config.compile();
        config
    }

    /// Gives these settings a new identity, after a change: tokens that the
    /// settings before the change made are never handed out by these.
    pub(crate) fn renew_id(&mut self) {
        self.id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    }

    /// `iss`, `sub` or `aud` as one string.
    pub(crate) fn set_string_claim(
        &mut self,
        name: &'static str,
        value: String,
    ) -> Result<(), SignerConfigError> {
        if value.is_empty() {
            return Err(SignerConfigError::EmptyClaim(name));
        }
        self.set_static(name, Value::String(value));
        Ok(())
    }

    /// `aud` as a list of strings.
    pub(crate) fn set_audiences(&mut self, list: Vec<String>) -> Result<(), SignerConfigError> {
        if list.is_empty() || list.iter().any(String::is_empty) {
            return Err(SignerConfigError::EmptyClaim("aud"));
        }
        let value = Value::Array(list.into_iter().map(Value::String).collect());
        self.set_static("aud", value);
        Ok(())
    }

    /// A private static claim.
    pub(crate) fn set_claim(&mut self, name: &str, value: Value) -> Result<(), SignerConfigError> {
        check_claim_name(name, true)?;
        self.set_static(name, value);
        Ok(())
    }

    pub(crate) fn set_template_claim(
        &mut self,
        name: &str,
        template: &str,
    ) -> Result<(), SignerConfigError> {
        check_claim_name(name, false)?;
        let template = Template::parse(template).map_err(|source| SignerConfigError::Template {
            claim: truncate(name),
            source,
        })?;
        if TYPED_CLAIMS.contains(&name) && template.value_type() != ValueType::String {
            return Err(SignerConfigError::TemplateType {
                claim: name.to_owned(),
                template: truncate(template.as_str()),
            });
        }
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
        Ok(())
    }

    pub(crate) fn set_ttl(&mut self, ttl: Duration) -> Result<(), SignerConfigError> {
        if ttl.subsec_nanos() != 0 || ttl.is_zero() || ttl > MAX_TTL {
            return Err(SignerConfigError::InvalidTtl(ttl));
        }
        self.ttl = ttl.as_secs();
        Ok(())
    }

    pub(crate) fn set_backdate(&mut self, backdate: Duration) -> Result<(), SignerConfigError> {
        if backdate.subsec_nanos() != 0 || backdate > MAX_BACKDATE {
            return Err(SignerConfigError::InvalidBackdate(backdate));
        }
        self.backdate = backdate.as_secs();
        Ok(())
    }

    pub(crate) fn set_token_type(&mut self, token_type: String) -> Result<(), SignerConfigError> {
        let valid = (1..=64).contains(&token_type.len())
            && token_type
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+/".contains(&b));
        if !valid {
            return Err(SignerConfigError::InvalidTokenType(truncate(&token_type)));
        }
        self.token_type = token_type;
        Ok(())
    }

    pub(crate) fn set_header_name(&mut self, name: &str) -> Result<(), SignerConfigError> {
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
        self.header_name = header;
        Ok(())
    }

    pub(crate) fn set_scheme(&mut self, scheme: &str) -> Result<(), SignerConfigError> {
        let valid = (1..=64).contains(&scheme.len())
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !valid {
            return Err(SignerConfigError::InvalidScheme(truncate(scheme)));
        }
        self.prefix = format!("{scheme} ");
        Ok(())
    }

    pub(crate) fn set_max_token_len(&mut self, max: usize) -> Result<(), SignerConfigError> {
        if max == 0 {
            return Err(SignerConfigError::InvalidMaxTokenLen(max));
        }
        self.max_token_len = max;
        Ok(())
    }

    fn set_static(&mut self, name: &str, value: Value) {
        match self.all_statics.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value,
            None => self.all_statics.push((name.to_owned(), value)),
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

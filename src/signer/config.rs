//! The checked configuration: every setting of a
//! [`JwtSignerLayer`](super::JwtSignerLayer), checked once by its builder,
//! with what the hot path needs built once.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::HeaderName;
use http::request::Parts;
use serde_json::Value;

use super::claims::{COMPUTED_CLAIMS, ClaimsRejection, RequestClaims, ReservedClaim, TYPED_CLAIMS};
use super::offload::Offload;
use super::reuse::{TokenCache, TokenReuse};
use super::template::{Template, ValueType};
use crate::error::ConfigError;
use crate::registry::KeyRegistry;

/// The largest `nbf` backdate a signer accepts: one hour.
const MAX_BACKDATE: Duration = Duration::from_secs(60 * 60);

/// What to do with a request that already carries the target header.
///
/// These are the Otoroshi JWT Signer's `replace_if_present: true`
/// ([`Replace`](Self::Replace)), `replace_if_present: false`
/// ([`Keep`](Self::Keep)) and `fail_if_present: true`
/// ([`Reject`](Self::Reject)) as its documentation describes them.
///
/// Whatever the policy, the claims closure
/// ([`JwtSignerLayerBuilder::request_claims`](super::JwtSignerLayerBuilder::request_claims))
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
    type Err = ConfigError;

    /// Parses `replace`, `keep` or `reject`; anything else is a
    /// [`ConfigError`] for the setting `"existing_token"`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "replace" => Ok(ExistingToken::Replace),
            "keep" => Ok(ExistingToken::Keep),
            "reject" => Ok(ExistingToken::Reject),
            _ => Err(ConfigError::new(
                "existing_token",
                s,
                "unknown existing-token policy: use replace, keep or reject",
            )),
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
    /// A cache for each service the layer builds, with checked settings.
    PerService(TokenReuse),
    /// One cache the user shares.
    Shared(TokenCache),
}

impl Reuse {
    /// The cache for a service being built: a fresh one, or the shared one.
    pub(crate) fn cache(&self) -> TokenCache {
        match self {
            Reuse::PerService(settings) => TokenCache::checked(*settings),
            Reuse::Shared(cache) => cache.clone(),
        }
    }
}

/// Tells settings apart: a shared [`TokenCache`] hands a token out again
/// only to the settings that made it.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The checked configuration. Every field holds a setting that was checked
/// by the builder; everything the hot path needs is built here, once.
/// Nothing in it changes while requests are served.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) registry: KeyRegistry,
    /// Unique to these settings.
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
    /// `x5t#S256` in the header of a certificate-backed key's tokens.
    pub(crate) header_x5t_s256: bool,
}

impl Config {
    /// The defaults: `Authorization: Bearer <jwt>`, `typ: JWT`, the
    /// registry's token lifetime, no `iss`/`sub`/`aud`, an existing token
    /// replaced.
    pub(crate) fn new(registry: KeyRegistry) -> Self {
        let ttl = registry.token_ttl().as_secs();
        let mut config = Config {
            registry,
            id: 0,
            header_name: http::header::AUTHORIZATION,
            prefix: "Bearer ".to_owned(),
            token_type: "JWT".to_owned(),
            ttl,
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
            header_x5t_s256: false,
        };
        config.id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        config.compile();
        config
    }

    /// `iss`, `sub` or `aud` as one string, set by the builder method
    /// `setting`.
    pub(crate) fn set_string_claim(
        &mut self,
        setting: &'static str,
        name: &'static str,
        value: String,
    ) -> Result<(), ConfigError> {
        if value.is_empty() {
            return Err(ConfigError::new(
                setting,
                value,
                format!("the `{name}` claim cannot be empty"),
            ));
        }
        self.set_static(name, Value::String(value));
        Ok(())
    }

    /// `aud` as a list of strings.
    pub(crate) fn set_audiences(&mut self, list: Vec<String>) -> Result<(), ConfigError> {
        if list.is_empty() || list.iter().any(String::is_empty) {
            return Err(ConfigError::new(
                "audiences",
                list,
                "the `aud` claim cannot be empty, nor any audience in it",
            ));
        }
        let value = Value::Array(list.into_iter().map(Value::String).collect());
        self.set_static("aud", value);
        Ok(())
    }

    /// A private static claim.
    pub(crate) fn set_claim(&mut self, name: &str, value: Value) -> Result<(), ConfigError> {
        check_claim_name("claim", name, true)?;
        self.set_static(name, value);
        Ok(())
    }

    pub(crate) fn set_template_claim(
        &mut self,
        name: &str,
        template: &str,
    ) -> Result<(), ConfigError> {
        check_claim_name("template_claim", name, false)?;
        let template = Template::parse(template).map_err(|source| {
            ConfigError::new(
                "template_claim",
                template,
                format!("invalid template for claim {name:?}: {source}"),
            )
        })?;
        if TYPED_CLAIMS.contains(&name) && template.value_type() != ValueType::String {
            return Err(ConfigError::new(
                "template_claim",
                template.as_str(),
                format!("not a string template; `{name}` is a string"),
            ));
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

    /// The token lifetime: whole seconds, from 1 s to the registry's
    /// token lifetime (never longer: the rotator retires keys by it).
    pub(crate) fn set_ttl(&mut self, ttl: Duration) -> Result<(), ConfigError> {
        let ceiling = self.registry.token_ttl();
        if ttl.subsec_nanos() != 0 || ttl.is_zero() {
            return Err(ConfigError::new(
                "ttl",
                ttl,
                format!(
                    "use a token lifetime of whole seconds from 1 s to the registry's, {} s",
                    ceiling.as_secs()
                ),
            ));
        }
        if ttl > ceiling {
            return Err(ConfigError::new(
                "ttl",
                ttl,
                format!(
                    "longer than the registry's token lifetime ({} s, set with \
                     KeyRegistryBuilder::token_ttl): keys would leave the JWKS while the \
                     tokens they signed are still valid; use at most that, or raise the \
                     registry's token_ttl",
                    ceiling.as_secs()
                ),
            ));
        }
        self.ttl = ttl.as_secs();
        Ok(())
    }

    pub(crate) fn set_backdate(&mut self, backdate: Duration) -> Result<(), ConfigError> {
        if backdate.subsec_nanos() != 0 || backdate > MAX_BACKDATE {
            return Err(ConfigError::new(
                "not_before_backdate",
                backdate,
                format!(
                    "use an nbf backdate of whole seconds up to {} s",
                    MAX_BACKDATE.as_secs()
                ),
            ));
        }
        self.backdate = backdate.as_secs();
        Ok(())
    }

    pub(crate) fn set_token_type(&mut self, token_type: String) -> Result<(), ConfigError> {
        let valid = (1..=64).contains(&token_type.len())
            && token_type
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+/".contains(&b));
        if !valid {
            return Err(ConfigError::new(
                "token_type",
                token_type,
                "invalid token type: use 1 to 64 characters of A-Z a-z 0-9 !#$&-^_.+/",
            ));
        }
        self.token_type = token_type;
        Ok(())
    }

    pub(crate) fn set_header_name(&mut self, name: &str) -> Result<(), ConfigError> {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ConfigError::new("header_name", name, "not a valid HTTP header name"))?;
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
            return Err(ConfigError::new(
                "header_name",
                name,
                format!(
                    "the token cannot go in the {header} header: it is a hop-by-hop or framing \
                     header"
                ),
            ));
        }
        self.header_name = header;
        Ok(())
    }

    pub(crate) fn set_scheme(&mut self, scheme: &str) -> Result<(), ConfigError> {
        let valid = (1..=64).contains(&scheme.len())
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !valid {
            return Err(ConfigError::new(
                "scheme",
                scheme,
                "use 1 to 64 token characters (letters, digits, !#$%&'*+-.^_`|~), or no scheme",
            ));
        }
        self.prefix = format!("{scheme} ");
        Ok(())
    }

    pub(crate) fn set_max_token_len(&mut self, max: usize) -> Result<(), ConfigError> {
        if max == 0 {
            return Err(ConfigError::new(
                "max_token_len",
                max,
                "use a token size limit of at least 1 byte",
            ));
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

fn check_claim_name(
    setting: &'static str,
    name: &str,
    refuse_typed: bool,
) -> Result<(), ConfigError> {
    if name.is_empty() {
        return Err(ConfigError::new(
            setting,
            name,
            "a claim name cannot be empty",
        ));
    }
    let reserved =
        COMPUTED_CLAIMS.contains(&name) || (refuse_typed && TYPED_CLAIMS.contains(&name));
    if reserved {
        return Err(ConfigError::new(
            setting,
            name,
            ReservedClaim::new(name).to_string(),
        ));
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
            .field("header_x5t_s256", &self.header_x5t_s256)
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

//! [`SignerConfigError`]: why a setting was refused, and the bounds the
//! settings are checked against.

use std::fmt;
use std::time::Duration;

use http::HeaderName;

use super::claims::ReservedClaim;
use super::template::TemplateError;

/// The longest token lifetime [`JwtSignerLayer::ttl`](super::JwtSignerLayer::ttl)
/// accepts: one day.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// The largest `nbf` backdate
/// [`JwtSignerLayer::not_before_backdate`](super::JwtSignerLayer::not_before_backdate)
/// accepts: one hour.
pub const MAX_BACKDATE: Duration = Duration::from_secs(60 * 60);

/// The largest bound of a token reuse cache (`TokenReuse::MAX_ENTRIES`).
pub(crate) const MAX_REUSE_ENTRIES: usize = 1_000_000;

/// Why a [`JwtSignerLayer`](super::JwtSignerLayer) setting was refused.
/// Nothing changed when it is returned.
#[derive(Debug)]
#[non_exhaustive]
pub enum SignerConfigError {
    /// Not a valid HTTP header name.
    InvalidHeaderName(String),
    /// A hop-by-hop or framing header, which proxies drop or which would
    /// break the request.
    ReservedHeaderName(HeaderName),
    /// The scheme is empty, too long, or holds characters other than RFC
    /// 9110 `token` characters (a space, CR or LF, for example).
    InvalidScheme(String),
    /// The `typ` is empty, too long, or holds characters a media type
    /// cannot.
    InvalidTokenType(String),
    /// The ttl is not whole seconds from 1 s to [`MAX_TTL`].
    InvalidTtl(Duration),
    /// The backdate is not whole seconds up to [`MAX_BACKDATE`].
    InvalidBackdate(Duration),
    /// An empty `iss`, `sub` or `aud` (or an empty audience list).
    EmptyClaim(&'static str),
    /// An empty claim name.
    InvalidClaimName(String),
    /// A registered claim name given to a setter that cannot take it.
    ReservedClaim(ReservedClaim),
    /// A claim template that does not parse.
    Template {
        /// The claim.
        claim: String,
        /// Why.
        source: TemplateError,
    },
    /// A `number:` or `boolean:` template for `iss`, `sub` or `aud`, which
    /// are strings.
    TemplateType {
        /// The claim.
        claim: String,
        /// The template.
        template: String,
    },
    /// Not one of `replace`, `keep`, `reject`.
    InvalidPolicy(String),
    /// A [`TokenReuse`](super::TokenReuse) bound outside 1 to
    /// [`TokenReuse::MAX_ENTRIES`](super::TokenReuse::MAX_ENTRIES).
    InvalidReuseEntries(usize),
    /// A [`TokenReuse`](super::TokenReuse) share outside 1 to 100 percent.
    InvalidReusePercent(u8),
    /// Not one of `inline`, `blocking`, `auto`.
    InvalidOffload(String),
    /// A token size limit of zero
    /// ([`JwtSignerLayer::max_token_len`](super::JwtSignerLayer::max_token_len)).
    InvalidMaxTokenLen(usize),
}

impl fmt::Display for SignerConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignerConfigError::InvalidHeaderName(name) => {
                write!(f, "invalid header name {name:?}")
            }
            SignerConfigError::ReservedHeaderName(name) => write!(
                f,
                "the token cannot go in the {name} header: it is a hop-by-hop or framing header"
            ),
            SignerConfigError::InvalidScheme(scheme) => write!(
                f,
                "invalid scheme {scheme:?}: use 1 to 64 token characters (letters, digits, !#$%&'*+-.^_`|~), or no scheme"
            ),
            SignerConfigError::InvalidTokenType(typ) => write!(
                f,
                "invalid token type {typ:?}: use 1 to 64 characters of A-Z a-z 0-9 !#$&-^_.+/"
            ),
            SignerConfigError::InvalidTtl(ttl) => write!(
                f,
                "invalid token lifetime {ttl:?}: use whole seconds from 1 s to {} s",
                MAX_TTL.as_secs()
            ),
            SignerConfigError::InvalidBackdate(backdate) => write!(
                f,
                "invalid nbf backdate {backdate:?}: use whole seconds up to {} s",
                MAX_BACKDATE.as_secs()
            ),
            SignerConfigError::EmptyClaim(name) => write!(f, "the `{name}` claim cannot be empty"),
            SignerConfigError::InvalidClaimName(name) => {
                write!(f, "invalid claim name {name:?}")
            }
            SignerConfigError::ReservedClaim(err) => err.fmt(f),
            SignerConfigError::Template { claim, source } => {
                write!(f, "invalid template for claim {claim:?}: {source}")
            }
            SignerConfigError::TemplateType { claim, template } => write!(
                f,
                "the template {template:?} for `{claim}` is not a string template; `{claim}` is a string"
            ),
            SignerConfigError::InvalidPolicy(policy) => write!(
                f,
                "unknown existing-token policy {policy:?}: use replace, keep or reject"
            ),
            SignerConfigError::InvalidReuseEntries(entries) => write!(
                f,
                "invalid token reuse bound {entries}: use 1 to {MAX_REUSE_ENTRIES} entries"
            ),
            SignerConfigError::InvalidReusePercent(percent) => {
                write!(f, "invalid token reuse share {percent}%: use 1 to 100")
            }
            SignerConfigError::InvalidMaxTokenLen(max) => {
                write!(f, "invalid token size limit {max}: use at least 1 byte")
            }
            SignerConfigError::InvalidOffload(offload) => write!(
                f,
                "unknown offload mode {offload:?}: use inline, blocking or auto"
            ),
        }
    }
}

impl std::error::Error for SignerConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SignerConfigError::ReservedClaim(err) => Some(err),
            SignerConfigError::Template { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<ReservedClaim> for SignerConfigError {
    fn from(err: ReservedClaim) -> Self {
        SignerConfigError::ReservedClaim(err)
    }
}

/// At most 200 characters of a refused value, for an error message.
pub(crate) fn truncate(value: &str) -> String {
    value.chars().take(200).collect()
}

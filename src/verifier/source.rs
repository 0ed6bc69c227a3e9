//! Where the middleware finds the token in a request.

use std::sync::Arc;

use http::header::{self, HeaderName};
use http::{HeaderMap, Request};

use super::token::VerifyError;
use crate::error::ConfigError;

/// Where [`JwtVerifier`](super::JwtVerifier) reads the token.
///
/// The default is `Authorization: Bearer <token>` ([`bearer`](Self::bearer)).
/// A scheme is matched without case; a different scheme counts as no token.
/// A request that carries the token location more than once (two headers,
/// two cookies or two query parameters of that name) is malformed and is
/// answered 400.
///
/// The constructors only record the place;
/// [`JwtVerifierLayerBuilder::build`](super::JwtVerifierLayerBuilder::build)
/// refuses one that cannot appear in a request.
///
/// ```
/// use http::HeaderName;
/// use tower_jwt_signer::verifier::TokenSource;
/// use tower_jwt_signer::{Algorithm, JwtVerifierLayer, KeyRegistry, Verifier};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let default = TokenSource::bearer();
/// let custom = TokenSource::header(HeaderName::from_static("x-gateway-token"), Some("JWT"));
/// let raw = TokenSource::header(HeaderName::from_static("x-jwt"), None);
/// let cookie = TokenSource::cookie("session");
/// let query = TokenSource::query("access_token");
/// # let _ = (default, custom, raw, query);
///
/// let verifier = Verifier::new(KeyRegistry::generate(Algorithm::ES256)?);
/// let layer = JwtVerifierLayer::builder(verifier.clone())
///     .token_source(cookie)
///     .build()?;
/// # let _ = layer;
///
/// // A cookie name with a space cannot appear in a request.
/// let err = JwtVerifierLayer::builder(verifier)
///     .token_source(TokenSource::cookie("my session"))
///     .build()
///     .unwrap_err();
/// assert_eq!(err.setting(), "token_source");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct TokenSource {
    location: Location,
    /// The scheme named in `WWW-Authenticate` challenges.
    challenge: Arc<str>,
}

#[derive(Debug, Clone)]
enum Location {
    Header {
        name: HeaderName,
        scheme: Option<Arc<str>>,
    },
    Cookie(Arc<str>),
    Query(Arc<str>),
}

impl Default for TokenSource {
    fn default() -> Self {
        TokenSource::bearer()
    }
}

impl TokenSource {
    /// `Authorization: Bearer <token>` (RFC 6750 section 2.1).
    pub fn bearer() -> Self {
        TokenSource {
            location: Location::Header {
                name: header::AUTHORIZATION,
                scheme: Some(Arc::from("Bearer")),
            },
            challenge: Arc::from("Bearer"),
        }
    }

    /// A header, with a scheme before the token (`<scheme> <token>`) or,
    /// with `None`, the bare token. The scheme must be an HTTP token
    /// (letters, digits and ``!#$%&'*+-.^_`|~``).
    pub fn header(name: HeaderName, scheme: Option<&str>) -> Self {
        TokenSource {
            location: Location::Header {
                name,
                scheme: scheme.map(Arc::from),
            },
            challenge: Arc::from(scheme.unwrap_or("Bearer")),
        }
    }

    /// A cookie. Its name must be an HTTP token.
    pub fn cookie(name: &str) -> Self {
        TokenSource {
            location: Location::Cookie(Arc::from(name)),
            challenge: Arc::from("Bearer"),
        }
    }

    /// A query parameter, whose name must be 1 or more characters of
    /// `A-Z a-z 0-9 - . _ ~` (RFC 6750 section 2.3 warns that URLs end up in
    /// logs: prefer a header).
    pub fn query(name: &str) -> Self {
        TokenSource {
            location: Location::Query(Arc::from(name)),
            challenge: Arc::from("Bearer"),
        }
    }

    /// Refuses a place that cannot appear in a request: a scheme or cookie
    /// name that is not an HTTP token, a query parameter name that is empty
    /// or not unreserved characters.
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        match &self.location {
            Location::Header { scheme: None, .. } => Ok(()),
            Location::Header {
                scheme: Some(scheme),
                ..
            } => check_token("scheme", scheme),
            Location::Cookie(name) => check_token("cookie name", name),
            Location::Query(name) => {
                let unreserved =
                    |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~');
                if name.is_empty() || !name.chars().all(unreserved) {
                    return Err(ConfigError::new(
                        "token_source",
                        name,
                        "the query parameter name cannot appear in a request: use 1 or more of \
                         A-Z a-z 0-9 - . _ ~",
                    ));
                }
                Ok(())
            }
        }
    }

    /// The scheme used in `WWW-Authenticate` challenges.
    pub(crate) fn challenge(&self) -> &Arc<str> {
        &self.challenge
    }

    /// The token of `request`.
    pub(crate) fn extract<'r, B>(&self, request: &'r Request<B>) -> Result<&'r str, VerifyError> {
        match &self.location {
            Location::Header { name, scheme } => {
                from_header(request.headers(), name, scheme.as_deref())
            }
            Location::Cookie(name) => from_cookies(request.headers(), name),
            Location::Query(name) => from_query(request.uri().query(), name),
        }
    }
}

fn check_token(what: &'static str, value: &str) -> Result<(), ConfigError> {
    let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if value.is_empty() || !value.chars().all(tchar) {
        return Err(ConfigError::new(
            "token_source",
            value,
            format!(
                "the {what} cannot appear in a request: use 1 or more letters, digits or \
                 !#$%&'*+-.^_`|~"
            ),
        ));
    }
    Ok(())
}

fn from_header<'r>(
    headers: &'r HeaderMap,
    name: &HeaderName,
    scheme: Option<&str>,
) -> Result<&'r str, VerifyError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Err(VerifyError::MissingToken);
    };
    if values.next().is_some() {
        return Err(VerifyError::InvalidRequest("the token header is repeated"));
    }
    let value = value
        .to_str()
        .map_err(|_| VerifyError::InvalidRequest("the token header is not visible ASCII"))?
        .trim_matches([' ', '\t']);
    let Some(scheme) = scheme else {
        return if value.is_empty() {
            Err(VerifyError::MissingToken)
        } else {
            Ok(value)
        };
    };
    let (given, rest) = value.split_once([' ', '\t']).unwrap_or((value, ""));
    if !given.eq_ignore_ascii_case(scheme) {
        // Another scheme (Basic, ...) carries no token for us.
        return Err(VerifyError::MissingToken);
    }
    let token = rest.trim_start_matches([' ', '\t']);
    if token.is_empty() {
        return Err(VerifyError::InvalidRequest("no token after the scheme"));
    }
    Ok(token)
}

fn from_cookies<'r>(headers: &'r HeaderMap, name: &str) -> Result<&'r str, VerifyError> {
    let mut found = None;
    for value in headers.get_all(header::COOKIE) {
        let Ok(value) = value.to_str() else {
            continue;
        };
        for pair in value.split(';') {
            let Some((key, cookie)) = pair.trim_matches([' ', '\t']).split_once('=') else {
                continue;
            };
            if key != name {
                continue;
            }
            if found.is_some() {
                return Err(VerifyError::InvalidRequest("the token cookie is repeated"));
            }
            let cookie = cookie
                .strip_prefix('"')
                .and_then(|c| c.strip_suffix('"'))
                .unwrap_or(cookie);
            found = Some(cookie);
        }
    }
    match found {
        Some(token) if !token.is_empty() => Ok(token),
        _ => Err(VerifyError::MissingToken),
    }
}

fn from_query<'r>(query: Option<&'r str>, name: &str) -> Result<&'r str, VerifyError> {
    let mut found = None;
    for pair in query.unwrap_or("").split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key != name {
            continue;
        }
        if found.is_some() {
            return Err(VerifyError::InvalidRequest(
                "the token query parameter is repeated",
            ));
        }
        found = Some(value);
    }
    match found {
        Some(token) if !token.is_empty() => Ok(token),
        _ => Err(VerifyError::MissingToken),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(
        build: impl FnOnce(http::request::Builder) -> http::request::Builder,
    ) -> Request<()> {
        build(Request::builder().uri("/")).body(()).unwrap()
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_strict() {
        let source = TokenSource::bearer();
        for value in [
            "Bearer a.b.c",
            "bearer a.b.c",
            "BEARER   a.b.c ",
            "Bearer\ta.b.c",
        ] {
            let req = request(|b| b.header("authorization", value));
            assert_eq!(source.extract(&req), Ok("a.b.c"), "{value}");
        }
        let req = request(|b| b.header("authorization", "Basic dXNlcjpwYXNz"));
        assert_eq!(source.extract(&req), Err(VerifyError::MissingToken));
        let req = request(|b| b.header("authorization", "Bearerx a.b.c"));
        assert_eq!(source.extract(&req), Err(VerifyError::MissingToken));
        let req = request(|b| b);
        assert_eq!(source.extract(&req), Err(VerifyError::MissingToken));
        let req = request(|b| b.header("authorization", "Bearer "));
        assert!(matches!(
            source.extract(&req),
            Err(VerifyError::InvalidRequest(_))
        ));
        let req = request(|b| {
            b.header("authorization", "Bearer a.b.c")
                .header("authorization", "Bearer d.e.f")
        });
        assert!(matches!(
            source.extract(&req),
            Err(VerifyError::InvalidRequest(_))
        ));
        let req = request(|b| b.header("authorization", &b"Bearer \xff"[..]));
        assert!(matches!(
            source.extract(&req),
            Err(VerifyError::InvalidRequest(_))
        ));
    }

    #[test]
    fn custom_header_cookie_and_query() {
        let raw = TokenSource::header(HeaderName::from_static("x-jwt"), None);
        let req = request(|b| b.header("x-jwt", " a.b.c "));
        assert_eq!(raw.extract(&req), Ok("a.b.c"));

        let cookie = TokenSource::cookie("jwt");
        let req = request(|b| b.header("cookie", "a=1; jwt=a.b.c; b=2"));
        assert_eq!(cookie.extract(&req), Ok("a.b.c"));
        let req = request(|b| b.header("cookie", "jwt=\"a.b.c\""));
        assert_eq!(cookie.extract(&req), Ok("a.b.c"));
        let req = request(|b| b.header("cookie", "jwt=a.b.c").header("cookie", "jwt=d"));
        assert!(matches!(
            cookie.extract(&req),
            Err(VerifyError::InvalidRequest(_))
        ));
        let req = request(|b| b.header("cookie", "xjwt=a.b.c"));
        assert_eq!(cookie.extract(&req), Err(VerifyError::MissingToken));

        let query = TokenSource::query("access_token");
        let req = request(|b| b.uri("/p?x=1&access_token=a.b.c"));
        assert_eq!(query.extract(&req), Ok("a.b.c"));
        let req = request(|b| b.uri("/p?access_token=a&access_token=b"));
        assert!(matches!(
            query.extract(&req),
            Err(VerifyError::InvalidRequest(_))
        ));
        let req = request(|b| b.uri("/p?access_token="));
        assert_eq!(query.extract(&req), Err(VerifyError::MissingToken));
    }

    #[test]
    fn names_are_validated() {
        for bad in [
            TokenSource::header(header::AUTHORIZATION, Some("Bad Scheme")),
            TokenSource::header(header::AUTHORIZATION, Some("")),
            TokenSource::cookie("a;b"),
            TokenSource::query("a&b"),
            TokenSource::query(""),
        ] {
            assert_eq!(bad.check().unwrap_err().setting(), "token_source");
        }
        assert!(TokenSource::bearer().check().is_ok());
    }
}

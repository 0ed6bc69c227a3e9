//! Per-request claims and the answer a claims closure gives to refuse a
//! request.

use std::borrow::Cow;
use std::fmt;

use http::StatusCode;
use serde_json::{Map, Value};

/// Claims the signer always computes itself; no source can set them.
pub(crate) const COMPUTED_CLAIMS: [&str; 4] = ["iat", "nbf", "exp", "jti"];

/// Registered claims with a typed setter (`iss`, `sub`, `aud`).
pub(crate) const TYPED_CLAIMS: [&str; 3] = ["iss", "sub", "aud"];

/// Whether `name` is one of the seven registered claims of RFC 7519
/// section 4.1.
pub(crate) fn is_registered(name: &str) -> bool {
    COMPUTED_CLAIMS.contains(&name) || TYPED_CLAIMS.contains(&name)
}

/// Claims computed for one request by the closure given to
/// [`JwtSignerLayerBuilder::request_claims`](super::JwtSignerLayerBuilder::request_claims).
///
/// They take precedence over templates and static claims of the same name.
/// `iat`, `nbf`, `exp` and `jti` can never be set: the signer computes them.
/// `iss`, `sub` and `aud` have typed setters so they are always strings (or
/// a list of strings for `aud`).
///
/// ```
/// use serde_json::json;
/// use tower_jwt_signer::signer::RequestClaims;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let claims = RequestClaims::new()
///     .subject("alice")
///     .claim("roles", json!(["reader", "writer"]))?;
/// assert_eq!(claims.get("sub"), Some(&json!("alice")));
///
/// // Registered names go through their setters or are the signer's own.
/// assert!(RequestClaims::new().claim("exp", 0).is_err());
/// assert!(RequestClaims::new().claim("sub", "bob").is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[must_use]
pub struct RequestClaims {
    claims: Map<String, Value>,
}

impl RequestClaims {
    /// No claims.
    pub fn new() -> Self {
        RequestClaims::default()
    }

    /// Sets `sub`.
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.claims
            .insert("sub".to_owned(), Value::String(subject.into()));
        self
    }

    /// Sets `iss`.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.claims
            .insert("iss".to_owned(), Value::String(issuer.into()));
        self
    }

    /// Sets `aud` to one audience (a JSON string).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.claims
            .insert("aud".to_owned(), Value::String(audience.into()));
        self
    }

    /// Sets `aud` to a list of audiences (a JSON array of strings).
    pub fn audiences<I>(mut self, audiences: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let list = audiences
            .into_iter()
            .map(|aud| Value::String(aud.into()))
            .collect();
        self.claims.insert("aud".to_owned(), Value::Array(list));
        self
    }

    /// Sets a private claim to any JSON value.
    ///
    /// # Errors
    ///
    /// [`ReservedClaim`] for the registered names (`iss`, `sub`, `aud`,
    /// `iat`, `nbf`, `exp`, `jti`). A closure can return it with `?`: it
    /// becomes a 500 answer.
    pub fn claim(
        mut self,
        name: impl Into<String>,
        value: impl Into<Value>,
    ) -> Result<Self, ReservedClaim> {
        let name = name.into();
        if is_registered(&name) {
            return Err(ReservedClaim::new(&name));
        }
        self.claims.insert(name, value.into());
        Ok(self)
    }

    /// The value of a claim set here.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.claims.get(name)
    }

    /// Whether no claim is set.
    pub fn is_empty(&self) -> bool {
        self.claims.is_empty()
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.claims.contains_key(name)
    }

    /// Appends `,"name":value` for every claim.
    pub(crate) fn write_members(&self, out: &mut Vec<u8>) {
        for (name, value) in &self.claims {
            out.push(b',');
            serde_json::to_writer(&mut *out, name).expect("writing to a Vec cannot fail");
            out.push(b':');
            serde_json::to_writer(&mut *out, value).expect("writing to a Vec cannot fail");
        }
    }
}

/// A registered claim name given to a setter that cannot take it. See
/// [`RequestClaims::claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservedClaim {
    name: String,
}

impl ReservedClaim {
    pub(crate) fn new(name: &str) -> Self {
        ReservedClaim {
            name: name.to_owned(),
        }
    }

    /// The refused name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for ReservedClaim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if COMPUTED_CLAIMS.contains(&self.name.as_str()) {
            write!(
                f,
                "`{}` is always computed by the signer and cannot be set",
                self.name
            )
        } else {
            write!(
                f,
                "`{}` is a registered claim: set it with its typed setter (issuer, subject, audience)",
                self.name
            )
        }
    }
}

impl std::error::Error for ReservedClaim {}

/// A claims closure's refusal: the request is answered with this status
/// and a small JSON body, and is not forwarded.
///
/// The `reason` of a 401 or 403 is sent to the client in the body; the
/// reason of a 500 is only logged (the client sees a generic reason). Never
/// put secrets in a reason.
///
/// ```
/// use http::StatusCode;
/// use tower_jwt_signer::signer::ClaimsRejection;
///
/// let rejection = ClaimsRejection::forbidden("tenant suspended");
/// assert_eq!(rejection.status(), StatusCode::FORBIDDEN);
/// assert_eq!(rejection.reason(), "tenant suspended");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimsRejection {
    status: StatusCode,
    reason: Cow<'static, str>,
}

impl ClaimsRejection {
    /// 401 Unauthorized: the caller is not authenticated.
    pub fn unauthorized(reason: impl Into<Cow<'static, str>>) -> Self {
        ClaimsRejection {
            status: StatusCode::UNAUTHORIZED,
            reason: reason.into(),
        }
    }

    /// 403 Forbidden: the caller is known but may not go on.
    pub fn forbidden(reason: impl Into<Cow<'static, str>>) -> Self {
        ClaimsRejection {
            status: StatusCode::FORBIDDEN,
            reason: reason.into(),
        }
    }

    /// 500 Internal Server Error: the claims could not be computed.
    pub fn internal(reason: impl Into<Cow<'static, str>>) -> Self {
        ClaimsRejection {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            reason: reason.into(),
        }
    }

    /// The status the request is answered with (401, 403 or 500).
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Why.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    pub(crate) fn into_reason(self) -> Cow<'static, str> {
        self.reason
    }
}

impl fmt::Display for ClaimsRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "claims refused ({}): {}", self.status, self.reason)
    }
}

impl std::error::Error for ClaimsRejection {}

impl From<ReservedClaim> for ClaimsRejection {
    fn from(err: ReservedClaim) -> Self {
        ClaimsRejection::internal(err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn registered_names_are_refused() {
        for name in ["iss", "sub", "aud", "iat", "nbf", "exp", "jti"] {
            let err = RequestClaims::new().claim(name, "x").unwrap_err();
            assert_eq!(err.name(), name);
            let rejection = ClaimsRejection::from(err);
            assert_eq!(rejection.status(), StatusCode::INTERNAL_SERVER_ERROR);
        }
        assert!(RequestClaims::new().claim("scope", "read").is_ok());
    }

    #[test]
    fn members_are_json() {
        let claims = RequestClaims::new()
            .subject("a\"b")
            .audiences(["x", "y"])
            .claim("n", 3)
            .unwrap();
        let mut out = b"{\"iat\":1".to_vec();
        claims.write_members(&mut out);
        out.push(b'}');
        let value: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            value,
            json!({"iat": 1, "sub": "a\"b", "aud": ["x", "y"], "n": 3})
        );
    }
}

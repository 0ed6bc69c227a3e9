//! The verified claims a request carries after verification.

use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::keys::Algorithm;

/// The claims of a token that passed verification, with the `kid` and `alg`
/// it was verified with.
///
/// [`JwtVerifier`](super::JwtVerifier) puts one in the request extensions
/// before it calls the inner service. Cloning is cheap (the claims are
/// shared).
///
/// `Debug` lists the claim names only, not their values.
///
/// Every number is the one the token holds, exactly: a token whose numbers
/// would be rounded (an integer beyond 64 bits, a decimal beyond `f64`
/// precision) is refused (see the [module docs](super#numbers-in-the-claims)).
///
/// # Example
///
/// ```
/// use http::Request;
/// use serde::Deserialize;
/// use tower_jwt_signer::VerifiedClaims;
///
/// #[derive(Deserialize)]
/// struct Caller {
///     sub: String,
///     iss: String,
/// }
///
/// fn handler(request: &Request<()>) -> Option<String> {
///     let claims = request.extensions().get::<VerifiedClaims>()?;
///     let caller: Caller = claims.deserialize().ok()?;
///     Some(format!("{} via {} (kid {:?})", caller.sub, caller.iss, claims.kid()))
/// }
/// # let _ = handler;
/// ```
#[derive(Clone)]
pub struct VerifiedClaims {
    inner: Arc<Inner>,
}

struct Inner {
    claims: Map<String, Value>,
    kid: Option<String>,
    alg: Algorithm,
}

impl VerifiedClaims {
    pub(crate) fn new(claims: Map<String, Value>, kid: Option<String>, alg: Algorithm) -> Self {
        VerifiedClaims {
            inner: Arc::new(Inner { claims, kid, alg }),
        }
    }

    /// One claim by name.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.inner.claims.get(name)
    }

    /// Every claim.
    pub fn claims(&self) -> &Map<String, Value> {
        &self.inner.claims
    }

    /// The claims deserialised into the caller's own type.
    ///
    /// # Errors
    ///
    /// The `serde_json` error when the claims do not fit `T`.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(&Value::Object(self.inner.claims.clone()))
    }

    /// The `kid` of the token's header (absent when the key set held a
    /// single key and the token named none).
    pub fn kid(&self) -> Option<&str> {
        self.inner.kid.as_deref()
    }

    /// The algorithm the signature was verified with.
    pub fn alg(&self) -> Algorithm {
        self.inner.alg
    }

    /// The `sub` claim, when it is a string.
    pub fn subject(&self) -> Option<&str> {
        self.get("sub").and_then(Value::as_str)
    }

    /// The `iss` claim, when it is a string.
    pub fn issuer(&self) -> Option<&str> {
        self.get("iss").and_then(Value::as_str)
    }

    /// The audiences of the `aud` claim: one for a string, each element in
    /// order for an array of strings (RFC 7519 section 4.1.3 allows both).
    /// None when `aud` is absent or of another form (a number, an array
    /// holding anything but strings): read [`get("aud")`](Self::get) for
    /// the raw value.
    ///
    /// ```
    /// # use tower_jwt_signer::VerifiedClaims;
    /// fn meant_for_orders(claims: &VerifiedClaims) -> bool {
    ///     claims.audience().any(|aud| aud == "orders-api")
    /// }
    /// # let _ = meant_for_orders;
    /// ```
    pub fn audience(&self) -> impl ExactSizeIterator<Item = &str> + Clone {
        let values: &[Value] = match self.get("aud") {
            Some(one @ Value::String(_)) => std::slice::from_ref(one),
            Some(Value::Array(list)) if list.iter().all(Value::is_string) => list,
            _ => &[],
        };
        // Every value is a string here: the default is never used.
        values
            .iter()
            .map(|value| value.as_str().unwrap_or_default())
    }
}

impl PartialEq for VerifiedClaims {
    fn eq(&self, other: &Self) -> bool {
        self.inner.claims == other.inner.claims
            && self.inner.kid == other.inner.kid
            && self.inner.alg == other.inner.alg
    }
}

impl Eq for VerifiedClaims {}

impl fmt::Debug for VerifiedClaims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedClaims")
            .field("names", &self.inner.claims.keys().collect::<Vec<_>>())
            .field("kid", &self.inner.kid)
            .field("alg", &self.inner.alg)
            .finish()
    }
}

impl serde::Serialize for VerifiedClaims {
    /// Serialises as `{"claims": {...}, "kid": ..., "alg": ...}`.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry("claims", &self.inner.claims)?;
        map.serialize_entry("kid", &self.inner.kid)?;
        map.serialize_entry("alg", &self.inner.alg)?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn with(claims: Value) -> VerifiedClaims {
        let Value::Object(map) = claims else {
            panic!("an object")
        };
        VerifiedClaims::new(map, None, Algorithm::ES256)
    }

    fn audiences(claims: Value) -> Vec<String> {
        let claims = with(claims);
        let audience = claims.audience();
        let len = audience.len();
        let list: Vec<String> = audience.map(str::to_owned).collect();
        assert_eq!(list.len(), len, "the length it reports is its length");
        list
    }

    #[test]
    fn audience_reads_a_string_or_an_array_of_strings() {
        assert_eq!(audiences(json!({"aud": "orders"})), ["orders"]);
        assert_eq!(audiences(json!({"aud": ["a", "b", "a"]})), ["a", "b", "a"]);
        assert!(audiences(json!({"aud": []})).is_empty());
        assert!(audiences(json!({"sub": "alice"})).is_empty());
        // Another form is not an audience, not even in part.
        assert!(audiences(json!({"aud": 7})).is_empty());
        assert!(audiences(json!({"aud": ["a", 7]})).is_empty());
        assert!(audiences(json!({"aud": {"a": "b"}})).is_empty());
        assert!(audiences(json!({"aud": null})).is_empty());
    }

    #[test]
    fn subject_issuer_and_audience_sit_side_by_side() {
        let claims = with(json!({"sub": "alice", "iss": "idp", "aud": ["gw"]}));
        assert_eq!(claims.subject(), Some("alice"));
        assert_eq!(claims.issuer(), Some("idp"));
        assert!(claims.audience().eq(["gw"]));
    }
}

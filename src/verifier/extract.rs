//! The axum extractors (feature `axum`): [`VerifiedClaims`] as it is, and
//! [`Claims<T>`], the claims deserialised into the handler's own type.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use axum::http::{Response, StatusCode};
use axum::response::IntoResponse;
use serde::de::DeserializeOwned;

use super::answer::www_authenticate;
use super::claims::VerifiedClaims;

/// The verified claims deserialised into the handler's own type `T`: an
/// axum extractor (feature `axum`), as jwt-authorizer's `JwtClaims<T>` is.
///
/// [`JwtVerifierLayer`](crate::JwtVerifierLayer) (or the tower-http
/// authorizer) verifies the token and puts the [`VerifiedClaims`] in the
/// request; `Claims<T>` reads them with
/// [`VerifiedClaims::deserialize`]. Refusals, each with the
/// [`ClaimsError`] in the response extensions for an outer layer that
/// renders errors its own way:
///
/// | case | status | answer |
/// |---|---|---|
/// | the claims do not fit `T` (a field missing, of another type) | 401 | no body; `WWW-Authenticate: Bearer error="invalid_token", error_description="the token claims do not have the expected form"` |
/// | no verified claims: no verifier runs in front of this route | 500 | a short text, as axum's `Extension` answers for a missing extension: a server misconfiguration, never the caller's fault |
///
/// The 401 is the verifier's own answer to a token it refuses (RFC 6750):
/// a token that verifies but does not carry what the handler needs is not
/// a token for this route. The challenge names `Bearer`, whatever
/// [`TokenSource`](super::TokenSource) the verifier reads. The
/// description is a fixed text: serde's message, which can quote claim
/// values, is only in the [`ClaimsError`] and is never logged.
///
/// `Option<Claims<T>>` is `None` when no verifier ran (a route where
/// authentication is optional), and still refuses claims that do not fit
/// `T`.
///
/// # Example
///
/// ```
/// use axum::{Router, routing::get};
/// use serde::Deserialize;
/// use tower_jwt_signer::verifier::Claims;
/// use tower_jwt_signer::{Algorithm, JwtVerifierLayer, KeyRegistry, Verifier};
///
/// #[derive(Deserialize)]
/// struct Caller {
///     sub: String,
///     #[serde(default)]
///     roles: Vec<String>,
/// }
///
/// async fn orders(Claims(caller): Claims<Caller>) -> String {
///     format!("orders of {} ({} roles)", caller.sub, caller.roles.len())
/// }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let registry = KeyRegistry::generate(Algorithm::ES256)?;
/// let verifier = Verifier::builder(registry).issuer("https://gateway.example").build()?;
/// let app: Router = Router::new()
///     .route("/orders", get(orders))
///     .layer(JwtVerifierLayer::new(verifier));
/// # let _ = app;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Claims<T>(pub T);

impl<T> Deref for Claims<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> DerefMut for Claims<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

/// Why [`Claims<T>`] (or the [`VerifiedClaims`] extractor) refused a
/// request; the rejection, and the typed cause in the response extensions.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ClaimsError {
    /// No [`VerifiedClaims`] in the request: no verifier runs in front of
    /// this route. 500.
    NotVerified,
    /// The verified claims do not deserialise into the handler's type.
    /// 401 `invalid_token`.
    Mismatch {
        /// The type the handler asked for (`std::any::type_name`).
        type_name: &'static str,
        /// serde's reason. It can quote claim values.
        error: Arc<serde_json::Error>,
    },
}

impl ClaimsError {
    /// The HTTP status of the answer: 500 or 401.
    pub fn status(&self) -> StatusCode {
        match self {
            ClaimsError::NotVerified => StatusCode::INTERNAL_SERVER_ERROR,
            ClaimsError::Mismatch { .. } => StatusCode::UNAUTHORIZED,
        }
    }

    /// The RFC 6750 error code: `invalid_token` for claims that do not fit,
    /// none for a server misconfiguration.
    pub fn error_code(&self) -> Option<&'static str> {
        match self {
            ClaimsError::NotVerified => None,
            ClaimsError::Mismatch { .. } => Some("invalid_token"),
        }
    }

    /// A fixed description, safe to send to the caller: it never quotes
    /// the token.
    pub fn description(&self) -> &'static str {
        match self {
            ClaimsError::NotVerified => {
                "no verified claims: is JwtVerifierLayer applied to this route?"
            }
            ClaimsError::Mismatch { .. } => "the token claims do not have the expected form",
        }
    }
}

impl fmt::Display for ClaimsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClaimsError::NotVerified => f.write_str(self.description()),
            ClaimsError::Mismatch { type_name, error } => {
                write!(f, "the token claims do not fit {type_name}: {error}")
            }
        }
    }
}

impl std::error::Error for ClaimsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClaimsError::NotVerified => None,
            ClaimsError::Mismatch { error, .. } => Some(&**error),
        }
    }
}

impl IntoResponse for ClaimsError {
    fn into_response(self) -> axum::response::Response {
        let mut response = match &self {
            ClaimsError::NotVerified => {
                tracing::error!("request refused: no verified claims (no verifier on this route)");
                Response::new(Body::from(self.description()))
            }
            ClaimsError::Mismatch { type_name, .. } => {
                // serde's message can quote claim values: not logged.
                tracing::debug!(
                    type_name,
                    "request refused: the verified claims do not fit the handler's type"
                );
                let mut response = Response::new(Body::empty());
                if let Some(value) =
                    www_authenticate("Bearer", self.error_code(), self.description())
                {
                    response
                        .headers_mut()
                        .insert(header::WWW_AUTHENTICATE, value);
                }
                response
            }
        };
        *response.status_mut() = self.status();
        response.extensions_mut().insert(self);
        response
    }
}

fn typed<T: DeserializeOwned>(claims: &VerifiedClaims) -> Result<T, ClaimsError> {
    claims.deserialize().map_err(|error| ClaimsError::Mismatch {
        type_name: std::any::type_name::<T>(),
        error: Arc::new(error),
    })
}

impl<S, T> FromRequestParts<S> for Claims<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ClaimsError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let claims = parts
            .extensions
            .get::<VerifiedClaims>()
            .ok_or(ClaimsError::NotVerified)?;
        typed(claims).map(Claims)
    }
}

impl<S, T> OptionalFromRequestParts<S> for Claims<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ClaimsError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        match parts.extensions.get::<VerifiedClaims>() {
            Some(claims) => typed(claims).map(|claims| Some(Claims(claims))),
            None => Ok(None),
        }
    }
}

/// Takes the claims that [`JwtVerifier`](crate::verifier::JwtVerifier) put
/// in the request. Without them (no verifier runs in front of this route)
/// the request is answered 500 with [`ClaimsError::NotVerified`]: that is
/// a server misconfiguration, never the caller's fault. Use
/// `Option<VerifiedClaims>` where the layer is optional.
impl<S: Send + Sync> FromRequestParts<S> for VerifiedClaims {
    type Rejection = ClaimsError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<VerifiedClaims>()
            .cloned()
            .ok_or(ClaimsError::NotVerified)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for VerifiedClaims {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<VerifiedClaims>().cloned())
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use axum::http::Request;
    use serde::Deserialize;
    use serde_json::{Value, json};
    use tower::{ServiceExt, service_fn};

    use super::*;
    use crate::keys::Algorithm;

    #[derive(Debug, Deserialize)]
    struct Caller {
        sub: String,
        level: u8,
    }

    fn verified(claims: Value) -> VerifiedClaims {
        let Value::Object(map) = claims else {
            panic!("an object")
        };
        VerifiedClaims::new(map, None, Algorithm::ES256)
    }

    /// Extracts `Claims<Caller>` from a request carrying `claims` (or none)
    /// in a `service_fn`, and answers with its rejection when it refuses.
    async fn answer(claims: Option<VerifiedClaims>) -> Response<Body> {
        let service = service_fn(|request: Request<Body>| async move {
            let (mut parts, _) = request.into_parts();
            let response =
                match <Claims<Caller> as FromRequestParts<()>>::from_request_parts(&mut parts, &())
                    .await
                {
                    Ok(Claims(caller)) => {
                        format!("{} {}", caller.sub, caller.level).into_response()
                    }
                    Err(rejection) => rejection.into_response(),
                };
            Ok::<_, Infallible>(response)
        });
        let mut request = Request::new(Body::empty());
        if let Some(claims) = claims {
            request.extensions_mut().insert(claims);
        }
        service.oneshot(request).await.unwrap()
    }

    #[tokio::test]
    async fn claims_that_fit_are_the_handlers() {
        let response = answer(Some(verified(json!({"sub": "alice", "level": 3})))).await;
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn claims_that_do_not_fit_answer_401_invalid_token() {
        for claims in [
            json!({"sub": "alice"}),
            json!({"sub": "alice", "level": "high"}),
            json!({"sub": "alice", "level": 300}),
        ] {
            let response = answer(Some(verified(claims.clone()))).await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{claims}");
            assert_eq!(
                response.headers()[header::WWW_AUTHENTICATE],
                "Bearer error=\"invalid_token\", \
                 error_description=\"the token claims do not have the expected form\""
            );
            let cause = response.extensions().get::<ClaimsError>().unwrap();
            let ClaimsError::Mismatch { type_name, .. } = cause else {
                panic!("{cause:?}")
            };
            assert!(type_name.ends_with("Caller"), "{type_name}");
            assert_eq!(cause.error_code(), Some("invalid_token"));
        }
    }

    #[tokio::test]
    async fn no_verified_claims_answer_500() {
        let response = answer(None).await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!response.headers().contains_key(header::WWW_AUTHENTICATE));
        assert!(matches!(
            response.extensions().get::<ClaimsError>(),
            Some(ClaimsError::NotVerified)
        ));
    }
}

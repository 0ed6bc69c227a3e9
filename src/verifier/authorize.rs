//! The verifier as a tower-http authorizer (feature `tower-http`, on by
//! default): [`Authorizer`] implements
//! [`AsyncAuthorizeRequest`](tower_http::auth::AsyncAuthorizeRequest).

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use futures_util::future::BoxFuture;
use http::{Request, Response};
use pin_project::pin_project;
use tower_http::auth::AsyncAuthorizeRequest;

use super::answer::{begin, refusal};
use super::claims::VerifiedClaims;
use super::layer::JwtVerifierLayer;
use super::source::TokenSource;
use super::token::{Attempt, Verifier, VerifyError};

/// A [`Verifier`] as a tower-http authorizer, for
/// `tower_http::auth::AsyncRequireAuthorizationLayer`: the same checks and
/// the same answers as [`JwtVerifierLayer`] (401 with an RFC 6750
/// `WWW-Authenticate` challenge, 400 `invalid_request`, 503 while no keys
/// are available; empty bodies, the [`VerifyError`] in the response
/// extensions), made by the same function, and the [`VerifiedClaims`] in
/// the request extensions of an authorized request.
///
/// Made by [`Verifier::authorizer`] (`Authorization: Bearer`) or
/// [`JwtVerifierLayer::authorizer`] (the layer's [`TokenSource`]).
///
/// tower-http's trait fixes the body of a refusal as an associated type,
/// which must be the inner service's response body: the authorizer
/// carries it as `ResBody` (as tower-http's own `Bearer<ResBody>` does),
/// inferred from the service it wraps. Any `ResBody: Default` works:
/// axum's `Body`, `http_body_util::Full` and `Empty`, boxed bodies.
///
/// ```
/// use axum::{Router, routing::get};
/// use tower_http::auth::AsyncRequireAuthorizationLayer;
/// use tower_jwt_signer::{Algorithm, KeyRegistry, Verifier};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let registry = KeyRegistry::generate(Algorithm::ES256)?;
/// // In a backend: Verifier::builder(RemoteJwks::new("http://gateway/.well-known/...")?)
/// let verifier = Verifier::builder(registry).audience("orders-api").build()?;
/// let app: Router = Router::new()
///     .route("/orders", get(|| async { "verified" }))
///     .layer(AsyncRequireAuthorizationLayer::new(verifier.authorizer()));
/// # let _ = app;
/// # Ok(())
/// # }
/// ```
pub struct Authorizer<ResBody> {
    verifier: Verifier,
    source: TokenSource,
    _body: PhantomData<fn() -> ResBody>,
}

impl Verifier {
    /// This verifier as a tower-http authorizer that reads
    /// `Authorization: Bearer`: `AsyncRequireAuthorizationLayer::new(verifier.authorizer())`.
    /// See [`Authorizer`].
    pub fn authorizer<ResBody>(&self) -> Authorizer<ResBody> {
        Authorizer::from_parts(self.clone(), TokenSource::bearer())
    }
}

impl JwtVerifierLayer {
    /// The layer's verifier and [`TokenSource`] as a tower-http
    /// authorizer. See [`Authorizer`].
    pub fn authorizer<ResBody>(&self) -> Authorizer<ResBody> {
        Authorizer::from_parts(self.verifier().clone(), self.token_source().clone())
    }
}

impl<ResBody> Authorizer<ResBody> {
    fn from_parts(verifier: Verifier, source: TokenSource) -> Self {
        Authorizer {
            verifier,
            source,
            _body: PhantomData,
        }
    }

    /// The verifier.
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// Where the token is read.
    pub fn token_source(&self) -> &TokenSource {
        &self.source
    }
}

impl<ResBody> Clone for Authorizer<ResBody> {
    fn clone(&self) -> Self {
        Authorizer::from_parts(self.verifier.clone(), self.source.clone())
    }
}

impl<ResBody> fmt::Debug for Authorizer<ResBody> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authorizer")
            .field("verifier", &self.verifier)
            .field("source", &self.source)
            .finish()
    }
}

impl<B, ResBody: Default> AsyncAuthorizeRequest<B> for Authorizer<ResBody> {
    type RequestBody = B;
    type ResponseBody = ResBody;
    type Future = AuthorizeFuture<B, ResBody>;

    fn authorize(&mut self, mut request: Request<B>) -> Self::Future {
        let challenge = self.source.challenge();
        let state = match begin(&self.verifier, &self.source, &request) {
            Attempt::Done(Ok(claims)) => {
                request.extensions_mut().insert(claims);
                State::Done(Some(Ok(request)))
            }
            Attempt::Done(Err(err)) => State::Done(Some(Err(refusal(&err, challenge)))),
            Attempt::Pending(verify) => State::Verifying {
                verify,
                request: Some(request),
                challenge: Arc::clone(challenge),
            },
        };
        AuthorizeFuture { state }
    }
}

/// The future of [`Authorizer`]'s `authorize`: the request with its
/// [`VerifiedClaims`], or the refusal.
#[pin_project]
pub struct AuthorizeFuture<B, ResBody> {
    state: State<B, ResBody>,
}

enum State<B, ResBody> {
    /// Decided without waiting (the common case); taken on the first poll.
    Done(Option<Result<Request<B>, Response<ResBody>>>),
    /// Waiting for a remote key fetch before the token can be checked.
    Verifying {
        verify: BoxFuture<'static, Result<VerifiedClaims, VerifyError>>,
        request: Option<Request<B>>,
        challenge: Arc<str>,
    },
}

impl<B, ResBody: Default> Future for AuthorizeFuture<B, ResBody> {
    type Output = Result<Request<B>, Response<ResBody>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // No field is pinned: the request is moved out, the verification
        // future is boxed.
        match self.project().state {
            State::Done(decided) => Poll::Ready(decided.take().expect("polled after completion")),
            State::Verifying {
                verify,
                request,
                challenge,
            } => {
                let result = ready!(verify.as_mut().poll(cx));
                let mut request = request.take().expect("polled after completion");
                Poll::Ready(match result {
                    Ok(claims) => {
                        request.extensions_mut().insert(claims);
                        Ok(request)
                    }
                    Err(err) => Err(refusal(&err, challenge)),
                })
            }
        }
    }
}

impl<B, ResBody> fmt::Debug for AuthorizeFuture<B, ResBody> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Done(_) => "Done",
            State::Verifying { .. } => "Verifying",
        };
        f.debug_struct("AuthorizeFuture")
            .field("state", &state)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http::{StatusCode, header};
    use http_body_util::Full;
    use serde_json::json;
    use tower::{ServiceBuilder, ServiceExt, service_fn};
    use tower_http::auth::AsyncRequireAuthorizationLayer;

    use super::*;
    use crate::keys::{Algorithm, SigningKey};
    use crate::registry::KeyRegistry;

    fn token(key: &SigningKey, claims: &serde_json::Value) -> String {
        use base64::Engine as _;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let header =
            json!({"alg": key.algorithm().as_str(), "typ": "JWT", "kid": key.kid().as_str()});
        let input = format!(
            "{}.{}",
            b64(&serde_json::to_vec(&header).unwrap()),
            b64(&serde_json::to_vec(claims).unwrap())
        );
        let signature = key.sign(input.as_bytes()).unwrap();
        format!("{input}.{}", b64(&signature))
    }

    /// The answer of `AsyncRequireAuthorizationLayer::new(authorizer)` and of
    /// `JwtVerifierLayer` to the same request: status, `WWW-Authenticate`,
    /// the cause, and the subject the handler saw.
    async fn both(
        layer: &JwtVerifierLayer,
        request: impl Fn() -> Request<Full<Bytes>>,
    ) -> [(StatusCode, Option<String>, Option<VerifyError>, String); 2] {
        let handler = service_fn(|request: Request<Full<Bytes>>| async move {
            let sub = request
                .extensions()
                .get::<VerifiedClaims>()
                .and_then(|claims| claims.subject().map(str::to_owned))
                .unwrap_or_default();
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(sub))))
        });
        let via_tower_http = ServiceBuilder::new()
            .layer(AsyncRequireAuthorizationLayer::new(layer.authorizer()))
            .service(handler);
        let via_layer = ServiceBuilder::new().layer(layer.clone()).service(handler);
        let describe = |response: Response<Full<Bytes>>| async move {
            use http_body_util::BodyExt;
            let status = response.status();
            let challenge = response
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .map(|v| v.to_str().unwrap().to_owned());
            let cause = response.extensions().get::<VerifyError>().cloned();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (
                status,
                challenge,
                cause,
                String::from_utf8(body.to_vec()).unwrap(),
            )
        };
        [
            describe(via_tower_http.oneshot(request()).await.unwrap()).await,
            describe(via_layer.oneshot(request()).await.unwrap()).await,
        ]
    }

    #[tokio::test]
    async fn the_authorizer_answers_as_the_layer_does() {
        let key = SigningKey::generate(Algorithm::ES256).unwrap();
        let verifier = Verifier::builder(KeyRegistry::new(key.clone()))
            .audience("api")
            .build()
            .unwrap();
        let exp = crate::clock::Clock::system().unix_seconds() + 600;
        let good = token(&key, &json!({"sub": "alice", "aud": "api", "exp": exp}));
        let other = token(&key, &json!({"sub": "alice", "aud": "other", "exp": exp}));
        let with = |value: String| {
            move || {
                Request::get("/")
                    .header("authorization", value.clone())
                    .body(Full::default())
                    .unwrap()
            }
        };
        let layer = JwtVerifierLayer::new(verifier);
        let [authorizer, own] = both(&layer, with(format!("Bearer {good}"))).await;
        assert_eq!(authorizer, own);
        assert_eq!(
            (authorizer.0, authorizer.3.as_str()),
            (StatusCode::OK, "alice")
        );

        for request in [
            with(format!("Bearer {other}")),
            with("Bearer ".to_owned()),
            with("Basic YTpi".to_owned()),
            with("Bearer not.a.token".to_owned()),
        ] {
            let [authorizer, own] = both(&layer, request).await;
            assert_ne!(authorizer.0, StatusCode::OK);
            assert!(authorizer.2.is_some(), "{authorizer:?}");
            assert_eq!(authorizer, own);
        }

        // A layer's token source goes with its authorizer.
        let cookie = JwtVerifierLayer::builder(layer.verifier().clone())
            .token_source(TokenSource::cookie("jwt"))
            .build()
            .unwrap();
        let [authorizer, own] = both(&cookie, move || {
            Request::get("/")
                .header("cookie", format!("jwt={good}"))
                .body(Full::default())
                .unwrap()
        })
        .await;
        assert_eq!(authorizer, own);
        assert_eq!(authorizer.0, StatusCode::OK);
    }
}

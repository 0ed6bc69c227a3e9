//! The layer that builds [`JwtVerifier`] services.

use tower_layer::Layer;

use super::service::JwtVerifier;
use super::source::TokenSource;
use super::token::Verifier;

/// Applies [`JwtVerifier`] to a service: every request must carry a valid
/// token. See the [module docs](super).
#[derive(Debug, Clone)]
#[must_use]
pub struct JwtVerifierLayer {
    verifier: Verifier,
    source: TokenSource,
}

impl JwtVerifierLayer {
    /// Verifies `Authorization: Bearer` tokens with `verifier`.
    pub fn new(verifier: Verifier) -> Self {
        JwtVerifierLayer {
            verifier,
            source: TokenSource::bearer(),
        }
    }

    /// Reads the token from another place (default
    /// [`TokenSource::bearer`]).
    pub fn with_token_source(mut self, source: TokenSource) -> Self {
        self.source = source;
        self
    }

    /// The verifier.
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }
}

// `JwtVerifier::layer` is defined here, not in service.rs: the service
// stays free of the layer (imports run layer -> service only), and the
// tower-style constructor on the service keeps working.
impl<S> JwtVerifier<S> {
    /// A layer that wraps services with this middleware (the same as
    /// [`JwtVerifierLayer::new`]).
    pub fn layer(verifier: Verifier) -> JwtVerifierLayer {
        JwtVerifierLayer::new(verifier)
    }
}

impl<S> Layer<S> for JwtVerifierLayer {
    type Service = JwtVerifier<S>;

    fn layer(&self, inner: S) -> Self::Service {
        JwtVerifier::new(inner, self.verifier.clone()).with_token_source(self.source.clone())
    }
}

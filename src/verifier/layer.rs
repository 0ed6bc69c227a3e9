//! The layer that builds [`JwtVerifier`] services, and its builder.

use tower_layer::Layer;

use super::service::JwtVerifier;
use super::source::TokenSource;
use super::token::Verifier;
use crate::error::ConfigError;

/// Applies [`JwtVerifier`] to a service: every request must carry a valid
/// token. See the [module docs](super).
///
/// [`new`](Self::new) reads `Authorization: Bearer`;
/// [`builder`](Self::builder) reads the token from another
/// [`TokenSource`].
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

    /// A builder, to read the token from another place.
    pub fn builder(verifier: Verifier) -> JwtVerifierLayerBuilder {
        JwtVerifierLayerBuilder {
            verifier,
            source: TokenSource::bearer(),
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

/// Builds a [`JwtVerifierLayer`]; see [`JwtVerifierLayer::builder`] and the
/// example on [`TokenSource`].
#[derive(Debug, Clone)]
#[must_use]
pub struct JwtVerifierLayerBuilder {
    verifier: Verifier,
    source: TokenSource,
}

impl JwtVerifierLayerBuilder {
    /// Reads the token from another place (default
    /// [`TokenSource::bearer`]).
    pub fn token_source(mut self, source: TokenSource) -> Self {
        self.source = source;
        self
    }

    /// Checks the settings and builds the layer.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] (setting `"token_source"`) for a token source that
    /// cannot appear in a request: a scheme or cookie name that is not an
    /// HTTP token (letters, digits and ``!#$%&'*+-.^_`|~``), a query
    /// parameter name that is empty or holds characters outside
    /// `A-Z a-z 0-9 - . _ ~`.
    pub fn build(self) -> Result<JwtVerifierLayer, ConfigError> {
        self.source.check()?;
        Ok(JwtVerifierLayer {
            verifier: self.verifier,
            source: self.source,
        })
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
        JwtVerifier::from_parts(inner, self.verifier.clone(), self.source.clone())
    }
}

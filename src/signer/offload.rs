//! [`Offload`]: where signatures are computed.

use std::fmt;
use std::str::FromStr;

use crate::error::ConfigError;
use crate::keys::{Algorithm, SigningBackend};

/// Where the signer computes signatures.
///
/// An RSA or RSA-PSS signature takes about 760 µs, ES512 about 215 µs and
/// ES384 about 110 µs (aws-lc-rs, one core of the project's machine):
/// long enough that signing on the async worker thread delays every other
/// task queued on it. [`Blocking`](Self::Blocking)
/// signs on the signer's own threads instead, one per core (at most 16),
/// shared by every signer in the process; the worker goes on serving other
/// requests, and the request waits for its token (it is never forwarded
/// without one) and then goes on to the inner service. Unlike
/// `tokio::task::spawn_blocking`, which starts a thread per waiting
/// signature (up to 512) that all compete with the runtime's workers for
/// the cores, this keeps at most one signature per core in flight; the rest
/// wait in a queue. `BENCHMARKS.md` measures what it buys: a cheap request
/// on an RS256-saturated proxy waited 54 µs at the median instead of 18 ms,
/// on an ES384-saturated one 108 µs instead of 4.9 ms (on the project's
/// busy 2-core machine).
///
/// The default, [`Auto`](Self::Auto), offloads the slow algorithms
/// ([`Algorithm::is_slow`]: a signature over 100 µs; RS*, PS*, ES384,
/// ES512) and signs ES256 (about 20 µs) and EdDSA (about 12 µs) inline,
/// where the hand-off would cost more than it saves. It
/// follows the active key: after a rotation to another algorithm the choice
/// changes with it.
///
/// The signing threads need no runtime. A token handed out again
/// ([`TokenReuse`](super::TokenReuse)) needs no signature and is never
/// offloaded; a request dropped before its turn is not signed. If the
/// signature cannot be made (the signer failed or panicked), the request
/// is answered `500` (`signing_failed`) and the inner service is not
/// called. Should no signing thread start, signatures are made inline.
///
/// A [`SigningBackend`](crate::keys::SigningBackend) backed by an HSM or a
/// KMS waits on its device or the network: one that says so
/// ([`SigningBackend::blocks`](crate::keys::SigningBackend::blocks), as a
/// PKCS#11 key does) is offloaded by [`Auto`](Self::Auto) whatever its
/// algorithm ([`offloads_key`](Self::offloads_key)). Only
/// [`Inline`](Self::Inline) signs it on the async worker.
///
/// ```
/// use tower_jwt_signer::signer::Offload;
/// use tower_jwt_signer::Algorithm;
///
/// assert_eq!(Offload::default(), Offload::Auto);
/// assert!(Offload::Auto.offloads(Algorithm::RS256));
/// assert!(!Offload::Auto.offloads(Algorithm::ES256));
/// assert_eq!("blocking".parse::<Offload>().unwrap(), Offload::Blocking);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Offload {
    /// Sign on the task that calls the service.
    Inline,
    /// Sign on the signing threads, whatever the algorithm.
    Blocking,
    /// Blocking for [`Algorithm::is_slow`] algorithms and for backends
    /// that [block](SigningBackend::blocks) (an HSM), inline for ES256 and
    /// EdDSA keys held in this process. The default.
    #[default]
    Auto,
}

impl Offload {
    /// Whether a signature by a key of `algorithm` goes to the signing
    /// threads.
    pub fn offloads(self, algorithm: Algorithm) -> bool {
        match self {
            Offload::Inline => false,
            Offload::Blocking => true,
            Offload::Auto => algorithm.is_slow(),
        }
    }

    /// Whether a signature by `key` goes to the signing threads: as
    /// [`offloads`](Self::offloads) for its algorithm, and under
    /// [`Auto`](Self::Auto) also whenever the backend
    /// [blocks](SigningBackend::blocks).
    pub fn offloads_key(self, key: &dyn SigningBackend) -> bool {
        match self {
            Offload::Auto => key.blocks() || key.public_jwk().algorithm().is_slow(),
            other => other.offloads(key.public_jwk().algorithm()),
        }
    }

    /// The lower-case name (`"inline"`, `"blocking"`, `"auto"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Offload::Inline => "inline",
            Offload::Blocking => "blocking",
            Offload::Auto => "auto",
        }
    }
}

impl fmt::Display for Offload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Offload {
    type Err = ConfigError;

    /// Parses `inline`, `blocking` or `auto`; anything else is a
    /// [`ConfigError`] for the setting `"offload"`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "inline" => Ok(Offload::Inline),
            "blocking" => Ok(Offload::Blocking),
            "auto" => Ok(Offload::Auto),
            _ => Err(ConfigError::new(
                "offload",
                s,
                "unknown offload mode: use inline, blocking or auto",
            )),
        }
    }
}

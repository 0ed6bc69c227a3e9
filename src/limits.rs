//! Limits that the signer and the verifier share, kept apart from both so
//! that neither imports the other for a number.

/// The default size limit of a token, in bytes (8 KiB): the longest token
/// the signer makes and the longest the verifier accepts, unless configured
/// otherwise.
pub(crate) const DEFAULT_MAX_TOKEN_LEN: usize = 8 * 1024;

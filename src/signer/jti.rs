//! `jti`: 128 fresh random bits for each token, base64url, drawn from
//! AWS-LC's generator in batches.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The length of a `jti`: 128 random bits are 22 base64url characters.
pub(crate) const JTI_LEN: usize = 22;

const JTI_BYTES: usize = 16;
const JTI_POOL_LEN: usize = 64 * JTI_BYTES;

thread_local! {
    /// Random bytes for `jti`, drawn from AWS-LC in batches: each call to
    /// the generator has a fixed cost (with OpenSSL 3.0 it was about 30
    /// base64 passes), so each thread takes 64 ids' worth at a time.
    static JTI_POOL: std::cell::RefCell<(usize, [u8; JTI_POOL_LEN])> =
        const { std::cell::RefCell::new((JTI_POOL_LEN, [0; JTI_POOL_LEN])) };
}

/// The random source failed; the error is logged here.
#[derive(Debug)]
pub(crate) struct NoRandom;

/// Writes 128 fresh random bits, base64url, into `out` ([`JTI_LEN`] bytes).
pub(crate) fn fill_jti(out: &mut [u8]) -> Result<(), NoRandom> {
    let mut jti = [0u8; JTI_BYTES];
    JTI_POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let (used, bytes) = &mut *pool;
        if *used == JTI_POOL_LEN {
            aws_lc_rs::rand::fill(bytes).map_err(|_| {
                tracing::error!("request refused: no random bytes for jti");
                NoRandom
            })?;
            *used = 0;
        }
        jti.copy_from_slice(&bytes[*used..*used + JTI_BYTES]);
        // Each id is handed out once.
        bytes[*used..*used + JTI_BYTES].fill(0);
        *used += JTI_BYTES;
        Ok::<_, NoRandom>(())
    })?;
    let written = URL_SAFE_NO_PAD.encode_slice(jti, out).map_err(|_| {
        tracing::error!("request refused: the jti does not fit its placeholder");
        NoRandom
    })?;
    debug_assert_eq!(written, JTI_LEN);
    Ok(())
}

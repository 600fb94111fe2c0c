//! Random bytes from the OS (getrandom(2)), never from a userspace PRNG.

use crate::IdentityError;
use zeroize::Zeroizing;

/// `N` random bytes, zeroized on drop because callers use them as keys.
pub(crate) fn bytes<const N: usize>() -> Result<Zeroizing<[u8; N]>, IdentityError> {
    let mut out = Zeroizing::new([0u8; N]);
    getrandom::fill(out.as_mut_slice()).map_err(IdentityError::Random)?;
    Ok(out)
}

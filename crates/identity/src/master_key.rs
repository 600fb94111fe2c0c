//! The master key that seals secrets: 32 bytes from `CLAWKEEP_MASTER_KEY`
//! (64 hex characters) or from a 0600 key file made on first use.
//!
//! Guarantees: the key is zeroized on drop and never printed; an invalid
//! environment value is refused with a message that never repeats it; a key
//! file that group or others can read is refused, because it may have leaked.

use crate::{private_file, random, IdentityError};
use std::fmt;
use std::path::Path;
use zeroize::Zeroizing;

/// The environment variable that carries the master key.
pub const MASTER_KEY_ENV: &str = "CLAWKEEP_MASTER_KEY";

/// A 256-bit AES key. `Debug` prints `MasterKey(***)`.
#[derive(Clone)]
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl MasterKey {
    /// Uses `env` (the value of `CLAWKEEP_MASTER_KEY`, if set) when present;
    /// otherwise reads `path`, creating it (0600, parent 0700) with 32
    /// random bytes if it does not exist.
    pub fn from_env_or_file(env: Option<String>, path: &Path) -> Result<MasterKey, IdentityError> {
        match env.map(Zeroizing::new) {
            Some(value) => MasterKey::from_hex(value.as_str()).ok_or(IdentityError::MasterKeyEnv { reason: "not 64 hex characters" }),
            None => MasterKey::from_file(path),
        }
    }

    /// A key from raw bytes (tests, or a key held elsewhere).
    pub fn from_bytes(bytes: [u8; 32]) -> MasterKey {
        MasterKey(Zeroizing::new(bytes))
    }

    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn from_file(path: &Path) -> Result<MasterKey, IdentityError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            private_file::ensure_dir(dir)?;
        }
        if private_file::read(path)?.is_none() {
            let fresh = random::bytes::<32>()?;
            // create_new, not write: if another process made the key first,
            // overwriting it would orphan every secret sealed under it.
            private_file::create_new(path, fresh.as_slice())?;
        }
        let bytes = private_file::read(path)?.ok_or_else(|| IdentityError::MasterKeyFile { path: path.to_path_buf(), reason: "gone" })?;
        if let Ok(raw) = <[u8; 32]>::try_from(bytes.as_slice()) {
            return Ok(MasterKey::from_bytes(raw));
        }
        // Also accept hex, so an operator can write `openssl rand -hex 32`.
        let text = std::str::from_utf8(&bytes).map(str::trim).unwrap_or("");
        MasterKey::from_hex(text)
            .ok_or_else(|| IdentityError::MasterKeyFile { path: path.to_path_buf(), reason: "neither 32 bytes nor 64 hex characters" })
    }

    fn from_hex(text: &str) -> Option<MasterKey> {
        let mut key = Zeroizing::new([0u8; 32]);
        if text.len() != 64 {
            return None;
        }
        hex::decode_to_slice(text, key.as_mut_slice()).ok()?;
        Some(MasterKey(key))
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

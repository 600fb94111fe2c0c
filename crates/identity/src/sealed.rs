//! The sealed secret store: one AES-256-GCM sealed file per secret.
//!
//! File format, `<dir>/<name>.sealed` (0600): version byte (1), 12-byte
//! random nonce, ciphertext with its 16-byte tag. The AAD is
//! `clawkeep-sealed-v1:<name>`, so a file renamed to another secret's name
//! fails to open instead of handing out the wrong secret.
//!
//! Guarantees: a value is returned only if it authenticates under the
//! master key and its name; plaintext lives only in `Zeroizing` buffers and
//! never reaches `Debug` or an error. Random 96-bit nonces are safe far
//! beyond the number of writes a host makes (NIST SP 800-38D §8.3: 2^32).

use crate::{private_file, random, IdentityError, MasterKey};
use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const SUFFIX: &str = ".sealed";
const MAX_NAME_LEN: usize = 64;

/// Secrets sealed under one master key in one directory.
pub struct SealedStore {
    dir: PathBuf,
    /// The key schedule zeroizes on drop (aes-gcm's `zeroize` feature).
    cipher: Aes256Gcm,
}

impl SealedStore {
    /// Opens (creating, 0700) the store in `dir`.
    pub fn open(dir: &Path, master: MasterKey) -> Result<SealedStore, IdentityError> {
        private_file::ensure_dir(dir)?;
        let cipher = Aes256Gcm::new(master.as_bytes().into());
        Ok(SealedStore { dir: dir.to_path_buf(), cipher })
    }

    /// The directory the sealed files live in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Seals `value` under `name`, replacing any previous value atomically.
    pub fn set(&self, name: &str, value: &[u8]) -> Result<(), IdentityError> {
        let path = self.path_of(name)?;
        let nonce = random::bytes::<NONCE_LEN>()?;
        let sealed = self
            .cipher
            .encrypt(&Nonce::from(*nonce), Payload { msg: value, aad: &aad(name) })
            .map_err(|_| IdentityError::Seal { name: name.to_string() })?;
        let mut file = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        file.push(VERSION);
        file.extend_from_slice(nonce.as_slice());
        file.extend_from_slice(&sealed);
        private_file::write(&path, &file)
    }

    /// The value of `name`, or `None` if there is no such secret.
    pub fn get(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, IdentityError> {
        let path = self.path_of(name)?;
        let Some(file) = private_file::read(&path)? else { return Ok(None) };
        let format = |reason| IdentityError::SealedFormat { path: path.clone(), reason };
        let (&version, rest) = file.split_first().ok_or_else(|| format("empty"))?;
        if version != VERSION {
            return Err(format("unknown version byte"));
        }
        if rest.len() < NONCE_LEN + TAG_LEN {
            return Err(format("shorter than a nonce and a tag"));
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_from(nonce).map_err(|_| format("bad nonce"))?;
        let plain = self
            .cipher
            .decrypt(&nonce, Payload { msg: sealed, aad: &aad(name) })
            .map_err(|_| IdentityError::Unseal { name: name.to_string(), path: path.clone() })?;
        Ok(Some(Zeroizing::new(plain)))
    }

    /// The names of all secrets, sorted; never their values.
    pub fn list(&self) -> Result<Vec<String>, IdentityError> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(IdentityError::io("list", &self.dir))? {
            let entry = entry.map_err(IdentityError::io("list", &self.dir))?;
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str().and_then(|n| n.strip_suffix(SUFFIX)) else { continue };
            if valid_name(name) {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Deletes `name`; false if it did not exist.
    pub fn remove(&self, name: &str) -> Result<bool, IdentityError> {
        private_file::remove(&self.path_of(name)?)
    }

    fn path_of(&self, name: &str) -> Result<PathBuf, IdentityError> {
        if !valid_name(name) {
            // Cap what we echo: the name is not secret, but may be huge.
            return Err(IdentityError::SecretName { name: name.chars().take(80).collect() });
        }
        Ok(self.dir.join(format!("{name}{SUFFIX}")))
    }
}

impl fmt::Debug for SealedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedStore").field("dir", &self.dir).finish_non_exhaustive()
    }
}

/// `[A-Za-z0-9_.-]{1,64}`: no slash, so a name never leaves the directory.
pub fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn aad(name: &str) -> Vec<u8> {
    format!("clawkeep-sealed-v1:{name}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn names() {
        for ok in ["a", "OPENAI_API_KEY", "x.y-z_1", &"a".repeat(64)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "a/b", "../x", "a b", "é", &"a".repeat(65), "a\0"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}

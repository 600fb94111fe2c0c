//! Which key images must be signed by. Trust is explicit: signing an image
//! never makes its key trusted; `clawkeep image trust FILE` does.

use crate::sign::{public_key_text, read_public_key};
use crate::{private_fs, ImageError, Result};
use ed25519_dalek::VerifyingKey;
use std::path::{Path, PathBuf};

/// Names a public key file; overrides `<state>/images/trusted.pub`.
pub const PUBKEY_ENV: &str = "CLAWKEEP_IMAGE_PUBKEY";
pub const TRUSTED_FILE: &str = "trusted.pub";

/// `<state>/images/trusted.pub`.
pub fn trusted_path(state_dir: &Path) -> PathBuf {
    state_dir.join(crate::store::IMAGES_DIR).join(TRUSTED_FILE)
}

/// The key images must be signed by: `$CLAWKEEP_IMAGE_PUBKEY` (a path to a
/// public key file; an error if it is set but unreadable), else
/// `<state>/images/trusted.pub` when present, else `None` (no signature
/// required).
pub fn configured_pubkey(state_dir: &Path) -> Result<Option<VerifyingKey>> {
    if let Some(p) = std::env::var_os(PUBKEY_ENV).filter(|v| !v.is_empty()) {
        return read_public_key(Path::new(&p)).map(Some);
    }
    let p = trusted_path(state_dir);
    match std::fs::symlink_metadata(&p) {
        Ok(_) => read_public_key(&p).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ImageError::Io { op: "inspect", path: p, source: e }),
    }
}

/// Installs the public key in `pubkey_file` as `<state>/images/trusted.pub`
/// (replacing any previous one). Returns the key.
pub fn trust(state_dir: &Path, pubkey_file: &Path) -> Result<VerifyingKey> {
    let key = read_public_key(pubkey_file)?;
    let p = trusted_path(state_dir);
    if let Some(dir) = p.parent() {
        private_fs::ensure_dir(dir)?;
    }
    private_fs::write(&p, public_key_text(&key).as_bytes())?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_pub_is_used_once_installed() {
        let t = tempfile::tempdir().unwrap();
        // The env var is process-wide; this test only runs when it is unset.
        if std::env::var_os(PUBKEY_ENV).is_some() {
            return;
        }
        assert!(configured_pubkey(t.path()).unwrap().is_none());
        let k = ed25519_dalek::SigningKey::from_bytes(&[3; 32]).verifying_key();
        let f = t.path().join("k.pub");
        std::fs::write(&f, public_key_text(&k)).unwrap();
        trust(t.path(), &f).unwrap();
        assert_eq!(configured_pubkey(t.path()).unwrap(), Some(k));
    }
}

//! Ed25519 signatures over `manifest.json`.
//!
//! Key files are text: the 32 key bytes as 64 hex digits and a newline
//! (`signing.key` holds the secret seed, 0600; `signing.pub` the public
//! key). Reading also accepts base64 or the 32 raw bytes. A key's id is the
//! first 16 hex digits of SHA-256 over the public key.
//!
//! `manifest.sig` is `{"alg":"Ed25519","key_id":...,"sig":<base64>}` over
//! the exact bytes of manifest.json.

use crate::manifest::SIGNATURE_FILE;
use crate::{private_fs, ImageError, Result};
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

pub const KEY_DIR: &str = "image-key";
pub const SIGNING_KEY_FILE: &str = "signing.key";
pub const PUBLIC_KEY_FILE: &str = "signing.pub";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureFile {
    pub alg: String,
    pub key_id: String,
    pub sig: String,
}

/// The id of a public key: first 16 hex digits of its SHA-256.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))[..16].to_string()
}

/// `<state>/image-key/signing.key`.
pub fn default_key_path(state_dir: &Path) -> PathBuf {
    state_dir.join(KEY_DIR).join(SIGNING_KEY_FILE)
}

/// Loads the signing key at `path`. With `create`, a missing key is made
/// (from getrandom) together with `signing.pub` beside it.
pub fn load_or_create_signing_key(path: &Path, create: bool) -> Result<(SigningKey, bool)> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let bytes = Zeroizing::new(bytes);
            let seed = Zeroizing::new(decode_key_bytes(&bytes).ok_or_else(|| ImageError::BadKey {
                path: path.to_path_buf(),
                reason: "expected 32 bytes as 64 hex digits, base64, or raw".into(),
            })?);
            Ok((SigningKey::from_bytes(&seed), false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            let mut seed = Zeroizing::new([0u8; 32]);
            getrandom::fill(seed.as_mut_slice()).map_err(ImageError::Random)?;
            let key = SigningKey::from_bytes(&seed);
            if let Some(dir) = path.parent() {
                private_fs::ensure_dir(dir)?;
            }
            private_fs::write(path, Zeroizing::new(format!("{}\n", hex::encode(seed.as_slice()))).as_bytes())?;
            private_fs::write(&path.with_file_name(PUBLIC_KEY_FILE), public_key_text(&key.verifying_key()).as_bytes())?;
            Ok((key, true))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(ImageError::InputMissing { what: "signing key", path: path.to_path_buf(), hint: "pass --key FILE with an existing key" })
        }
        Err(e) => Err(ImageError::Io { op: "read", path: path.to_path_buf(), source: e }),
    }
}

/// How a public key is written: hex and a newline.
pub fn public_key_text(key: &VerifyingKey) -> String {
    format!("{}\n", hex::encode(key.as_bytes()))
}

/// Reads a public key file (hex, base64 or raw 32 bytes).
pub fn read_public_key(path: &Path) -> Result<VerifyingKey> {
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            ImageError::InputMissing { what: "public key", path: path.to_path_buf(), hint: "pass the signer's signing.pub" }
        }
        _ => ImageError::Io { op: "read", path: path.to_path_buf(), source: e },
    })?;
    let raw = decode_key_bytes(&bytes).ok_or_else(|| ImageError::BadKey {
        path: path.to_path_buf(),
        reason: "expected 32 bytes as 64 hex digits, base64, or raw".into(),
    })?;
    VerifyingKey::from_bytes(&raw)
        .map_err(|e| ImageError::BadKey { path: path.to_path_buf(), reason: format!("not an Ed25519 public key: {e}") })
}

fn decode_key_bytes(bytes: &[u8]) -> Option<[u8; 32]> {
    if bytes.len() == 32 {
        return bytes.try_into().ok();
    }
    let text = std::str::from_utf8(bytes).ok()?.trim();
    let decoded = if text.len() == 64 { hex::decode(text).ok()? } else { base64::engine::general_purpose::STANDARD.decode(text).ok()? };
    decoded.try_into().ok()
}

/// Signs `manifest` bytes.
pub fn sign_bytes(key: &SigningKey, manifest: &[u8]) -> SignatureFile {
    let sig = key.sign(manifest);
    SignatureFile {
        alg: "Ed25519".into(),
        key_id: key_id(&key.verifying_key()),
        sig: base64::engine::general_purpose::STANDARD.encode(sig.to_bytes()),
    }
}

/// Writes `manifest.sig` for the manifest bytes in `dir`.
pub fn write_signature(dir: &Path, key: &SigningKey, manifest: &[u8]) -> Result<SignatureFile> {
    let sig = sign_bytes(key, manifest);
    let mut text = serde_json::to_string_pretty(&sig).unwrap_or_default();
    text.push('\n');
    private_fs::write(&dir.join(SIGNATURE_FILE), text.as_bytes())?;
    Ok(sig)
}

/// Checks `sig` over `manifest` against `trusted`. `name` is for messages.
pub fn check(name: &str, sig: &SignatureFile, manifest: &[u8], trusted: &VerifyingKey) -> Result<()> {
    let trusted_id = key_id(trusted);
    if sig.alg != "Ed25519" {
        return Err(ImageError::BadSignature { name: name.into(), key_id: sig.key_id.clone() });
    }
    if sig.key_id != trusted_id {
        return Err(ImageError::WrongKey { name: name.into(), signed_by: sig.key_id.clone(), trusted: trusted_id });
    }
    let bad = || ImageError::BadSignature { name: name.into(), key_id: sig.key_id.clone() };
    let raw: [u8; 64] = base64::engine::general_purpose::STANDARD.decode(&sig.sig).map_err(|_| bad())?.try_into().map_err(|_| bad())?;
    trusted.verify_strict(manifest, &Signature::from_bytes(&raw)).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> SigningKey {
        SigningKey::from_bytes(&[b; 32])
    }

    #[test]
    fn signature_verifies_and_tampering_is_refused() {
        let k = key(7);
        let msg = br#"{"version":1}"#;
        let sig = sign_bytes(&k, msg);
        assert_eq!(sig.key_id.len(), 16);
        check("t", &sig, msg, &k.verifying_key()).unwrap();
        let err = check("t", &sig, br#"{"version":2}"#, &k.verifying_key()).unwrap_err();
        assert!(matches!(err, ImageError::BadSignature { .. }), "{err}");
        let err = check("t", &sig, msg, &key(8).verifying_key()).unwrap_err();
        assert!(matches!(err, ImageError::WrongKey { .. }), "{err}");
        let mut forged = sig.clone();
        forged.sig = base64::engine::general_purpose::STANDARD.encode([0u8; 64]);
        assert!(matches!(check("t", &forged, msg, &k.verifying_key()), Err(ImageError::BadSignature { .. })));
    }

    #[test]
    fn keys_are_created_once_and_read_back_in_every_encoding() {
        let t = tempfile::tempdir().unwrap();
        let p = default_key_path(t.path());
        let (k1, created) = load_or_create_signing_key(&p, true).unwrap();
        assert!(created);
        let (k2, created) = load_or_create_signing_key(&p, true).unwrap();
        assert!(!created);
        assert_eq!(k1.to_bytes(), k2.to_bytes());
        let pubkey = read_public_key(&p.with_file_name(PUBLIC_KEY_FILE)).unwrap();
        assert_eq!(pubkey, k1.verifying_key());
        let b64 = t.path().join("b64.pub");
        std::fs::write(&b64, base64::engine::general_purpose::STANDARD.encode(pubkey.as_bytes())).unwrap();
        assert_eq!(read_public_key(&b64).unwrap(), pubkey);
        std::fs::write(&b64, "nonsense").unwrap();
        assert!(matches!(read_public_key(&b64), Err(ImageError::BadKey { .. })));
        assert!(matches!(load_or_create_signing_key(&t.path().join("none"), false), Err(ImageError::InputMissing { .. })));
    }
}

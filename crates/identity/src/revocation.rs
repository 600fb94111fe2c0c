//! Revoked token ids, persisted beside the keys in `revoked.json` (0600).
//!
//! Guarantee: once `revoke` returns Ok, the jti is refused by `verify` in
//! this process and in any process that opens the ring later. An entry is
//! dropped when its token could no longer verify anyway (exp + leeway).

use crate::keys::unix_secs;
use crate::{private_file, IdentityError, KeyRing, LEEWAY};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::PoisonError;
use std::time::SystemTime;

const MAX_JTI_LEN: usize = 128;

pub(crate) struct RevocationList {
    path: PathBuf,
    file: RevokedFile,
}

/// jti → the token's exp, in seconds since the epoch.
#[derive(Default, Clone, Serialize, Deserialize)]
struct RevokedFile {
    revoked: BTreeMap<String, u64>,
}

impl RevocationList {
    pub(crate) fn load(path: PathBuf) -> Result<RevocationList, IdentityError> {
        let file = match private_file::read(&path)? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|source| IdentityError::BadStateFile { path: path.clone(), source })?,
            None => RevokedFile::default(),
        };
        Ok(RevocationList { path, file })
    }

    fn insert(&mut self, jti: &str, exp: u64, now: u64) -> Result<(), IdentityError> {
        let mut next = self.file.clone();
        next.revoked.insert(jti.to_string(), exp);
        next.revoked.retain(|_, exp| exp.saturating_add(LEEWAY.as_secs()) > now);
        let json = serde_json::to_vec_pretty(&next).map_err(|source| IdentityError::BadStateFile { path: self.path.clone(), source })?;
        private_file::write(&self.path, &json)?;
        self.file = next;
        Ok(())
    }
}

impl KeyRing {
    /// Revokes the token with this `jti`; `exp` is its expiry (from its
    /// claims), after which the entry is forgotten.
    pub fn revoke(&self, jti: &str, exp: u64) -> Result<(), IdentityError> {
        if jti.is_empty() || jti.len() > MAX_JTI_LEN {
            return Err(IdentityError::BadJti);
        }
        let mut list = self.revoked.lock().unwrap_or_else(PoisonError::into_inner);
        list.insert(jti, exp, unix_secs(SystemTime::now()))
    }

    /// Whether `jti` has been revoked.
    pub fn is_revoked(&self, jti: &str) -> bool {
        self.revoked.lock().unwrap_or_else(PoisonError::into_inner).file.revoked.contains_key(jti)
    }
}

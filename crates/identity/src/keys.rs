//! The key ring: Ed25519 signing keys in one directory.
//!
//! Layout: `<dir>/<kid>.key` (32 secret bytes, 0600), `<dir>/index.json`
//! (which key is current and when each was made and retired) and
//! `<dir>/revoked.log` (see `revocation`). `kid` is the first 16 hex digits
//! of SHA-256 over the public key, so it names the key and nothing else.
//!
//! Guarantees: after `open` there is exactly one current key; a retired key
//! keeps verifying until `prune` removes it; a key file that is not 0600 or
//! does not match its name is refused, never silently used.

use crate::revocation::RevocationList;
use crate::{private_file, random, IdentityError, LEEWAY};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const INDEX_FILE: &str = "index.json";
const REVOKED_LOG: &str = "revoked.log";
/// The revocation file of earlier versions (read, then folded into the log).
const REVOKED_LEGACY: &str = "revoked.json";

/// A set of Ed25519 keys: one signs new tokens, all verify. Share it behind
/// an `Arc`; every method takes `&self`.
pub struct KeyRing {
    dir: PathBuf,
    keys: RwLock<Keys>,
    pub(crate) revoked: Mutex<RevocationList>,
    /// Tokens whose signature already verified, with their claims and kid
    /// (see `verify`): the same bytes under the same key verify the same.
    pub(crate) verified: Mutex<std::collections::HashMap<String, (crate::Claims, String)>>,
}

#[derive(Clone)]
struct Keys {
    current: String,
    by_kid: BTreeMap<String, Key>,
}

/// `SigningKey` zeroizes its secret on drop (ed25519-dalek's `zeroize` feature).
#[derive(Clone)]
struct Key {
    signing: SigningKey,
    meta: KeyMeta,
}

#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct KeyMeta {
    created: u64,
    retired: Option<u64>,
}

#[derive(Default, Serialize, Deserialize)]
struct Index {
    current: Option<String>,
    keys: BTreeMap<String, KeyMeta>,
}

impl KeyRing {
    /// Loads every key in `dir` (created 0700 if missing) and makes a first
    /// key if there is none. A key file the index does not know (a crash
    /// between writing it and the index) is kept as retired.
    pub fn open(dir: &Path) -> Result<KeyRing, IdentityError> {
        private_file::ensure_dir(dir)?;
        let now = unix_secs(SystemTime::now());
        let index_path = dir.join(INDEX_FILE);
        let index: Index = match private_file::read(&index_path)? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|source| IdentityError::BadStateFile { path: index_path, source })?,
            None => Index::default(),
        };
        let mut by_kid = BTreeMap::new();
        for entry in fs::read_dir(dir).map_err(IdentityError::io("list", dir))? {
            let path = entry.map_err(IdentityError::io("list", dir))?.path();
            let Some(stem) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".key")) else { continue };
            if stem.starts_with('.') {
                continue;
            }
            let signing = load_key(&path)?;
            if kid_of(&signing.verifying_key()) != stem {
                return Err(IdentityError::BadKeyFile { path, reason: "its public key does not match its name" });
            }
            let meta = index.keys.get(stem).copied().unwrap_or(KeyMeta { created: now, retired: Some(now) });
            by_kid.insert(stem.to_string(), Key { signing, meta });
        }
        let current = index.current.filter(|kid| by_kid.get(kid).is_some_and(|k| k.meta.retired.is_none()));
        // Only the current key may be unretired; anything else is an orphan.
        for (kid, key) in &mut by_kid {
            if Some(kid) != current.as_ref() && key.meta.retired.is_none() {
                key.meta.retired = Some(now);
            }
        }
        let ring = KeyRing {
            dir: dir.to_path_buf(),
            keys: RwLock::new(Keys { current: current.clone().unwrap_or_default(), by_kid }),
            revoked: Mutex::new(RevocationList::open(dir.join(REVOKED_LOG), dir.join(REVOKED_LEGACY))?),
            verified: Mutex::default(),
        };
        match current {
            // Written only when opening changed it (an orphan retired, a
            // vanished key dropped): opening is on every run's start path.
            Some(_) => {
                let keys = ring.read();
                let unchanged = index.keys.len() == keys.by_kid.len()
                    && keys.by_kid.iter().all(|(kid, k)| index.keys.get(kid).is_some_and(|m| *m == k.meta));
                if !unchanged {
                    ring.save_index(&keys)?;
                }
            }
            None => {
                ring.rotate()?;
            }
        }
        Ok(ring)
    }

    /// The directory this ring lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The kid of the key that signs new tokens.
    pub fn current_kid(&self) -> String {
        self.read().current.clone()
    }

    /// Every kid that still verifies, current and retired, sorted.
    pub fn kids(&self) -> Vec<String> {
        self.read().by_kid.keys().cloned().collect()
    }

    /// Makes a new current key; the previous one is retired now and keeps
    /// verifying until `prune`. Returns the new kid.
    pub fn rotate(&self) -> Result<String, IdentityError> {
        let mut keys = self.write();
        let secret = random::bytes::<32>()?;
        let signing = SigningKey::from_bytes(&secret);
        let kid = kid_of(&signing.verifying_key());
        private_file::write(&self.dir.join(format!("{kid}.key")), secret.as_slice())?;
        let now = unix_secs(SystemTime::now());
        let mut next = keys.clone();
        if let Some(old) = next.by_kid.get_mut(&next.current) {
            old.meta.retired.get_or_insert(now);
        }
        next.by_kid.insert(kid.clone(), Key { signing, meta: KeyMeta { created: now, retired: None } });
        next.current = kid.clone();
        self.save_index(&next)?;
        *keys = next;
        Ok(kid)
    }

    /// Removes keys retired at least `max_token_lifetime` (plus the leeway)
    /// ago: no token they signed can still be valid. Returns removed kids.
    pub fn prune(&self, max_token_lifetime: Duration) -> Result<Vec<String>, IdentityError> {
        self.prune_at(max_token_lifetime, SystemTime::now())
    }

    /// `prune` as of `now`.
    pub fn prune_at(&self, max_token_lifetime: Duration, now: SystemTime) -> Result<Vec<String>, IdentityError> {
        let mut keys = self.write();
        let now = unix_secs(now);
        let keep_for = max_token_lifetime.saturating_add(LEEWAY).as_secs();
        let gone: Vec<String> = keys
            .by_kid
            .iter()
            .filter(|(_, k)| k.meta.retired.is_some_and(|r| r.saturating_add(keep_for) <= now))
            .map(|(kid, _)| kid.clone())
            .collect();
        if gone.is_empty() {
            return Ok(gone);
        }
        // Files first: an index entry without a file is dropped on open,
        // while a file without an entry would be adopted again.
        for kid in &gone {
            private_file::remove(&self.dir.join(format!("{kid}.key")))?;
            keys.by_kid.remove(kid);
        }
        self.save_index(&keys)?;
        Ok(gone)
    }

    /// Builds the signing input from the current kid and signs it with that
    /// key, under one lock. Returns (kid, signing input, signature).
    pub(crate) fn sign_with(
        &self,
        build: impl FnOnce(&str) -> Result<String, IdentityError>,
    ) -> Result<(String, String, Signature), IdentityError> {
        let keys = self.read();
        let key = &keys.by_kid[&keys.current];
        let input = build(&keys.current)?;
        let sig = key.signing.sign(input.as_bytes());
        Ok((keys.current.clone(), input, sig))
    }

    /// The public key for `kid`, if it has not been pruned.
    pub(crate) fn has_key(&self, kid: &str) -> bool {
        self.read().by_kid.contains_key(kid)
    }

    pub(crate) fn verifying_key(&self, kid: &str) -> Option<VerifyingKey> {
        self.read().by_kid.get(kid).map(|k| k.signing.verifying_key())
    }

    /// Every (kid, public key) that still verifies.
    pub(crate) fn public_keys(&self) -> Vec<(String, VerifyingKey)> {
        self.read().by_kid.iter().map(|(kid, k)| (kid.clone(), k.signing.verifying_key())).collect()
    }

    fn save_index(&self, keys: &Keys) -> Result<(), IdentityError> {
        let index = Index { current: Some(keys.current.clone()), keys: keys.by_kid.iter().map(|(k, v)| (k.clone(), v.meta)).collect() };
        let path = self.dir.join(INDEX_FILE);
        let json = serde_json::to_vec_pretty(&index).map_err(|source| IdentityError::BadStateFile { path: path.clone(), source })?;
        private_file::write(&path, &json)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Keys> {
        // A panic while holding the lock cannot leave `Keys` half-updated:
        // writers build the new value aside and swap it in whole.
        self.keys.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Keys> {
        self.keys.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self.read();
        f.debug_struct("KeyRing")
            .field("dir", &self.dir)
            .field("current", &keys.current)
            .field("kids", &keys.by_kid.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn load_key(path: &Path) -> Result<SigningKey, IdentityError> {
    let bytes = private_file::read(path)?
        .ok_or_else(|| IdentityError::BadKeyFile { path: path.to_path_buf(), reason: "it vanished while loading" })?;
    let secret: &[u8; 32] =
        bytes.as_slice().try_into().map_err(|_| IdentityError::BadKeyFile { path: path.to_path_buf(), reason: "not 32 bytes" })?;
    Ok(SigningKey::from_bytes(secret))
}

/// First 16 hex digits of SHA-256 over the public key.
pub(crate) fn kid_of(key: &VerifyingKey) -> String {
    let digest = Sha256::digest(key.as_bytes());
    hex::encode(&digest[..8])
}

/// Seconds since the epoch; instants before it count as 0.
pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

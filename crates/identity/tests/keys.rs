#![allow(clippy::unwrap_used, clippy::expect_used)]

use clawkeep_identity::{IdentityError, KeyRing, TokenError};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

fn mode(p: &std::path::Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn files_are_private_and_reopen_loads_same_key() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("identity/keys");
    let ring = KeyRing::open(&dir).unwrap();
    let kid = ring.current_kid();
    assert_eq!(kid.len(), 16);
    assert!(kid.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join(format!("{kid}.key"))), 0o600);
    assert_eq!(mode(&dir.join("index.json")), 0o600);
    assert_eq!(fs::read(dir.join(format!("{kid}.key"))).unwrap().len(), 32);
    drop(ring);

    let again = KeyRing::open(&dir).unwrap();
    assert_eq!(again.current_kid(), kid);
    assert_eq!(again.kids(), vec![kid]);
}

#[test]
fn debug_never_shows_secret_bytes() {
    let t = tempfile::tempdir().unwrap();
    let ring = KeyRing::open(t.path()).unwrap();
    let secret = fs::read(t.path().join(format!("{}.key", ring.current_kid()))).unwrap();
    let debug = format!("{ring:?}");
    assert!(debug.contains(&ring.current_kid()));
    assert!(!debug.contains(&hex::encode(&secret)));
    assert!(!debug.contains(&format!("{secret:?}")));
    let issued = ring.issue("a1", &[], Duration::from_secs(60)).unwrap();
    assert!(!format!("{issued:?}").contains(&issued.token));
}

#[test]
fn rotate_then_prune() {
    let t = tempfile::tempdir().unwrap();
    let ring = KeyRing::open(t.path()).unwrap();
    let old_kid = ring.current_kid();
    let lifetime = Duration::from_secs(3600);
    let old = ring.issue("agent-a", &[], lifetime).unwrap();
    assert_eq!(old.kid, old_kid);

    let new_kid = ring.rotate().unwrap();
    assert_ne!(new_kid, old_kid);
    assert_eq!(ring.current_kid(), new_kid);
    assert_eq!(ring.issue("agent-a", &[], lifetime).unwrap().kid, new_kid);
    assert_eq!(ring.verify(&old.token, SystemTime::now()).unwrap(), old.claims);

    // Survives a reopen: new key current, old one still verifying.
    drop(ring);
    let ring = KeyRing::open(t.path()).unwrap();
    assert_eq!(ring.current_kid(), new_kid);
    assert!(ring.verify(&old.token, SystemTime::now()).is_ok());

    // Within the lifetime nothing is pruned.
    assert!(ring.prune(lifetime).unwrap().is_empty());
    assert_eq!(ring.kids().len(), 2);

    let later = SystemTime::now() + lifetime + Duration::from_secs(120);
    assert_eq!(ring.prune_at(lifetime, later).unwrap(), vec![old_kid.clone()]);
    assert_eq!(ring.kids(), vec![new_kid.clone()]);
    assert!(!t.path().join(format!("{old_kid}.key")).exists());
    assert_eq!(ring.verify(&old.token, SystemTime::now()), Err(TokenError::UnknownKey));

    // The current key is never pruned, and the removal survives reopening.
    assert!(ring.prune_at(Duration::ZERO, later).unwrap().is_empty());
    drop(ring);
    let ring = KeyRing::open(t.path()).unwrap();
    assert_eq!(ring.kids(), vec![new_kid]);
    assert_eq!(ring.verify(&old.token, SystemTime::now()), Err(TokenError::UnknownKey));
}

#[test]
fn orphan_key_file_is_adopted_as_retired() {
    let t = tempfile::tempdir().unwrap();
    let ring = KeyRing::open(t.path()).unwrap();
    let first = ring.current_kid();
    let token = ring.issue("a", &[], Duration::from_secs(60)).unwrap();
    drop(ring);
    // As if the index write was lost: the key file alone remains.
    fs::remove_file(t.path().join("index.json")).unwrap();
    let ring = KeyRing::open(t.path()).unwrap();
    assert_ne!(ring.current_kid(), first, "a key of unknown standing must not sign");
    assert!(ring.verify(&token.token, SystemTime::now()).is_ok());
}

#[test]
fn refuses_readable_key_file() {
    let t = tempfile::tempdir().unwrap();
    let ring = KeyRing::open(t.path()).unwrap();
    let path = t.path().join(format!("{}.key", ring.current_kid()));
    drop(ring);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let err = KeyRing::open(t.path()).unwrap_err();
    assert!(matches!(err, IdentityError::TooOpen { .. }), "{err}");
    assert!(err.to_string().contains("chmod 600"), "{err}");
}

#[test]
fn refuses_key_file_under_wrong_name() {
    let t = tempfile::tempdir().unwrap();
    let ring = KeyRing::open(t.path()).unwrap();
    let path = t.path().join(format!("{}.key", ring.current_kid()));
    drop(ring);
    fs::rename(&path, t.path().join("0000000000000000.key")).unwrap();
    let err = KeyRing::open(t.path()).unwrap_err();
    assert!(matches!(err, IdentityError::BadKeyFile { .. }), "{err}");
}

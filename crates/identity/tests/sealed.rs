#![allow(clippy::unwrap_used, clippy::expect_used)]

use clawkeep_identity::{IdentityError, IdentityPaths, MasterKey, SealedStore, MASTER_KEY_ENV};
use std::fs;
use std::os::unix::fs::PermissionsExt;

const VALUE: &[u8] = b"sk-live-THIS-IS-THE-PLAINTEXT-0123456789";

fn mode(p: &std::path::Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn store(dir: &std::path::Path, byte: u8) -> SealedStore {
    SealedStore::open(dir, MasterKey::from_bytes([byte; 32])).unwrap()
}

#[test]
fn set_get_list_remove() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("secrets");
    let s = store(&dir, 7);
    assert_eq!(mode(&dir), 0o700);
    assert!(s.get("OPENAI_API_KEY").unwrap().is_none());
    s.set("OPENAI_API_KEY", VALUE).unwrap();
    s.set("anthropic.key", b"second").unwrap();
    assert_eq!(s.get("OPENAI_API_KEY").unwrap().unwrap().as_slice(), VALUE);

    let file = dir.join("OPENAI_API_KEY.sealed");
    assert_eq!(mode(&file), 0o600);
    let raw = fs::read(&file).unwrap();
    assert_eq!(raw[0], 1, "version byte");
    assert_eq!(raw.len(), 1 + 12 + VALUE.len() + 16);
    assert!(!raw.windows(VALUE.len()).any(|w| w == VALUE), "plaintext on disk");
    assert!(!raw.windows(8).any(|w| w == b"sk-live-"), "plaintext on disk");

    assert_eq!(s.list().unwrap(), vec!["OPENAI_API_KEY".to_string(), "anthropic.key".to_string()]);
    let debug = format!("{s:?}");
    assert!(!debug.contains("sk-live"), "{debug}");

    s.set("OPENAI_API_KEY", b"rotated").unwrap();
    assert_eq!(s.get("OPENAI_API_KEY").unwrap().unwrap().as_slice(), b"rotated");
    assert!(s.remove("OPENAI_API_KEY").unwrap());
    assert!(!s.remove("OPENAI_API_KEY").unwrap());
    assert!(s.get("OPENAI_API_KEY").unwrap().is_none());
    assert_eq!(s.list().unwrap(), vec!["anthropic.key".to_string()]);
}

#[test]
fn wrong_master_key_is_an_error_not_garbage() {
    let t = tempfile::tempdir().unwrap();
    store(t.path(), 1).set("k", VALUE).unwrap();
    let err = store(t.path(), 2).get("k").unwrap_err();
    assert!(matches!(err, IdentityError::Unseal { .. }), "{err}");
    assert!(err.to_string().contains("master key"), "{err}");
}

#[test]
fn renamed_file_fails_to_open() {
    let t = tempfile::tempdir().unwrap();
    let s = store(t.path(), 1);
    s.set("good", VALUE).unwrap();
    fs::rename(t.path().join("good.sealed"), t.path().join("evil.sealed")).unwrap();
    assert!(matches!(s.get("evil"), Err(IdentityError::Unseal { .. })));
}

#[test]
fn tampered_or_truncated_file_fails() {
    let t = tempfile::tempdir().unwrap();
    let s = store(t.path(), 1);
    s.set("k", VALUE).unwrap();
    let path = t.path().join("k.sealed");
    let mut raw = fs::read(&path).unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 1;
    fs::write(&path, &raw).unwrap();
    assert!(matches!(s.get("k"), Err(IdentityError::Unseal { .. })));
    fs::write(&path, &raw[..10]).unwrap();
    assert!(matches!(s.get("k"), Err(IdentityError::SealedFormat { .. })));
}

#[test]
fn invalid_names_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let s = store(t.path(), 1);
    for bad in ["", "../escape", "a/b", "has space", &"x".repeat(65)] {
        assert!(matches!(s.set(bad, b"v"), Err(IdentityError::SecretName { .. })), "{bad:?}");
        assert!(s.get(bad).is_err());
        assert!(s.remove(bad).is_err());
    }
    assert!(s.list().unwrap().is_empty());
}

#[test]
fn values_never_in_errors() {
    let t = tempfile::tempdir().unwrap();
    store(t.path(), 1).set("k", VALUE).unwrap();
    let err = store(t.path(), 2).get("k").unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(!text.contains("sk-live"), "{text}");
}

#[test]
fn env_key_must_be_64_hex() {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("master.key");
    let good = "ab".repeat(32);
    let key = MasterKey::from_env_or_file(Some(good), &path).unwrap();
    assert_eq!(format!("{key:?}"), "MasterKey(***)");
    assert!(!path.exists(), "an env key must not create the file");

    let short = "c0ffee".repeat(10) + "abc"; // 63 hex chars
    assert_eq!(short.len(), 63);
    for bad in [short.clone(), "zz".repeat(32), String::new(), "ab".repeat(33)] {
        let err = MasterKey::from_env_or_file(Some(bad.clone()), &path).unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(text.contains(MASTER_KEY_ENV), "{text}");
        if !bad.is_empty() {
            assert!(!text.contains(&bad), "value echoed: {text}");
        }
        assert!(!text.contains("c0ffee"), "value echoed: {text}");
    }
}

#[test]
fn key_file_created_0600_and_reused() {
    let t = tempfile::tempdir().unwrap();
    let paths = IdentityPaths::under(t.path());
    let key = MasterKey::from_env_or_file(None, &paths.master_key).unwrap();
    assert_eq!(mode(&paths.master_key), 0o600);
    assert_eq!(mode(paths.master_key.parent().unwrap()), 0o700);
    assert_eq!(fs::read(&paths.master_key).unwrap().len(), 32);

    SealedStore::open(&paths.secrets, key).unwrap().set("k", VALUE).unwrap();
    let again = MasterKey::from_env_or_file(None, &paths.master_key).unwrap();
    let s = SealedStore::open(&paths.secrets, again).unwrap();
    assert_eq!(s.get("k").unwrap().unwrap().as_slice(), VALUE);
}

#[test]
fn hex_key_file_is_accepted() {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("master.key");
    fs::write(&path, format!("{}\n", "42".repeat(32))).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let from_file = MasterKey::from_env_or_file(None, &path).unwrap();
    SealedStore::open(t.path(), from_file).unwrap().set("k", VALUE).unwrap();
    let got = store(t.path(), 0x42).get("k").unwrap().unwrap();
    assert_eq!(got.as_slice(), VALUE);

    fs::write(&path, b"short").unwrap();
    assert!(matches!(MasterKey::from_env_or_file(None, &path), Err(IdentityError::MasterKeyFile { .. })));
}

#[test]
fn readable_key_file_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("master.key");
    MasterKey::from_env_or_file(None, &path).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let err = MasterKey::from_env_or_file(None, &path).unwrap_err();
    assert!(err.to_string().contains("chmod 600"), "{err}");
}

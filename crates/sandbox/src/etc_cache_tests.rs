#![allow(clippy::unwrap_used)]

use super::*;
use crate::mounts::COPY_MAX;
use std::os::unix::fs::symlink;
use std::path::PathBuf;

const NAMES: &[&str] = &["small", "link", "dir", "big", "absent"];

fn as_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("{test}: skipped: reading as the jail's root needs root (CI runs as root)");
    }
    root
}

/// A stand-in for the host's /etc that the jail's root may read, and a cache.
fn host() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let etc = t.path().join("etc");
    fs::DirBuilder::new().mode(0o755).create(&etc).unwrap();
    fs::write(etc.join("small"), b"one\n").unwrap();
    fs::set_permissions(etc.join("small"), fs::Permissions::from_mode(0o640 | 0o004)).unwrap();
    symlink("../usr/lib/os-release", etc.join("link")).unwrap();
    fs::DirBuilder::new().mode(0o755).create(etc.join("dir")).unwrap();
    fs::write(etc.join("dir/inside"), b"bound, not copied").unwrap();
    fs::write(etc.join("big"), vec![b'x'; COPY_MAX as usize + 1]).unwrap();
    fs::set_permissions(etc.join("big"), fs::Permissions::from_mode(0o644)).unwrap();
    let cache = t.path().join("cache");
    (t, etc, cache)
}

/// The names in `cache`, sorted.
fn names(cache: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(cache).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}

fn kept(etc: &Path, cache: &Path) -> PreparedEtc {
    prepared_from(etc, NAMES, cache, Duration::ZERO).unwrap().expect("a generation is kept")
}

#[test]
fn a_kept_generation_holds_the_hosts_entries_and_is_used_again() {
    if !as_root("etc cache: kept generation") {
        return;
    }
    let (_t, etc, cache) = host();
    let first = kept(&etc, &cache);
    assert_eq!(first.binds, ["dir", "big"]);
    let gens = names(&cache);
    assert_eq!(gens.len(), 1, "{gens:?}");
    let g = cache.join(&gens[0]);
    // The small file bit for bit and mode; the link as it was; mount points
    // for what is bound; the jail's own identity files.
    assert_eq!(fs::read(g.join("small")).unwrap(), b"one\n");
    assert_eq!(fs::metadata(g.join("small")).unwrap().mode() & 0o7777, 0o644);
    assert_eq!(fs::read_link(g.join("link")).unwrap(), Path::new("../usr/lib/os-release"));
    assert!(fs::read_dir(g.join("dir")).unwrap().next().is_none(), "a bound dir is only a mount point");
    assert_eq!(fs::metadata(g.join("big")).unwrap().len(), 0, "a large file is only a mount point");
    assert!(fs::read_to_string(g.join("passwd")).unwrap().contains("agent:x:1000:"));
    assert!(!g.join("absent").exists());
    // The host's root owns it all, open to read, closed to write.
    for name in ["", "small", "dir", "big", "passwd", "hosts"] {
        let m = fs::symlink_metadata(g.join(name)).unwrap();
        assert_eq!((m.uid(), m.gid()), (0, 0), "{name}");
        let want = if m.is_dir() { 0o755 } else { 0o644 };
        assert_eq!(m.mode() & 0o7777, want, "{name}");
    }
    // The tree sent to init is a mount of that generation, read-only.
    let tree = format!("/proc/self/fd/{}", first.tree.as_raw_fd());
    assert_eq!(fs::read(Path::new(&tree).join("small")).unwrap(), b"one\n");
    assert_eq!(fs::write(Path::new(&tree).join("small"), b"two").unwrap_err().raw_os_error(), Some(libc::EROFS));
    let ino = fs::metadata(&g).unwrap().ino();
    drop(first);
    let again = kept(&etc, &cache);
    assert_eq!(names(&cache), gens, "nothing was built again");
    assert_eq!(fs::metadata(&g).unwrap().ino(), ino);
    assert_eq!(again.binds, ["dir", "big"]);
}

#[test]
fn an_entry_changed_within_fresh_is_not_kept() {
    if !as_root("etc cache: fresh") {
        return;
    }
    let (_t, etc, cache) = host();
    drop(kept(&etc, &cache));
    let before = names(&cache);
    fs::write(etc.join("small"), b"changed just now\n").unwrap();
    assert!(prepared_from(&etc, NAMES, &cache, FRESH).unwrap().is_none());
    assert_eq!(names(&cache), before, "no generation of a just-changed /etc is kept");
    // Settled, it is kept with the new content.
    let now = kept(&etc, &cache);
    let gens = names(&cache);
    assert_eq!(gens.len(), 1, "the old one, held by no run, is gone: {gens:?}");
    assert_ne!(gens, before);
    assert_eq!(fs::read(cache.join(&gens[0]).join("small")).unwrap(), b"changed just now\n");
    drop(now);
}

#[test]
fn a_generation_a_run_holds_stays_and_the_rest_is_collected() {
    if !as_root("etc cache: collect") {
        return;
    }
    let (_t, etc, cache) = host();
    let held = kept(&etc, &cache);
    let first = names(&cache);
    // A build that died, a generation no run holds, and something not ours.
    fs::create_dir(cache.join(".new-0123456789abcdef")).unwrap();
    fs::create_dir(cache.join("0123456789abcdef0123456789abcdef")).unwrap();
    fs::write(cache.join("0123456789abcdef0123456789abcdef/passwd"), b"stale").unwrap();
    // Removal never descends: what is in a dir of a generation stays (were
    // it a mount, it would be the host's), and the generation with it.
    fs::create_dir_all(cache.join("fedcba9876543210fedcba9876543210/ssl")).unwrap();
    fs::write(cache.join("fedcba9876543210fedcba9876543210/ssl/host-file"), b"not ours").unwrap();
    fs::write(cache.join("notes"), b"an operator's").unwrap();
    fs::write(etc.join("small"), b"two\n").unwrap();
    let second = kept(&etc, &cache);
    let now = names(&cache);
    assert_eq!(now.len(), 4, "{now:?}");
    assert!(now.contains(&first[0]), "the held generation stays: {now:?}");
    assert!(now.contains(&"notes".to_string()));
    // Renamed away first, so no run finds it half removed under its name.
    let old = now.iter().find(|n| n.starts_with(".old-")).expect("the one that could not be removed, renamed away");
    assert_eq!(fs::read(cache.join(old).join("ssl/host-file")).unwrap(), b"not ours");
    fs::remove_dir_all(cache.join(old)).unwrap();
    // Released, it goes with the next build.
    drop((held, second));
    symlink("elsewhere", etc.join("link.new")).unwrap();
    fs::rename(etc.join("link.new"), etc.join("link")).unwrap();
    drop(kept(&etc, &cache));
    let last = names(&cache);
    assert_eq!(last.len(), 2, "{last:?}");
    assert!(!last.contains(&first[0]) && last.contains(&"notes".to_string()), "{last:?}");
}

#[test]
fn an_entry_the_jails_root_cannot_read_keeps_nothing() {
    if !as_root("etc cache: unreadable") {
        return;
    }
    let (_t, etc, cache) = host();
    fs::set_permissions(etc.join("small"), fs::Permissions::from_mode(0o600)).unwrap();
    let e = prepared_from(&etc, NAMES, &cache, Duration::ZERO).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
    assert!(names(&cache).is_empty(), "nothing half-built stays");
}

//! The default root's /etc, kept between runs (root launchers only).
//!
//! Made afresh, the jail's /etc (a detached tmpfs, some 30 host files read
//! and written, torn down again at the run's end) was ~0.6 ms of every
//! run's CPU here. It changes only when the host's listed entries do, so
//! the launcher keeps it in the state dir, one directory per state of
//! those entries: a *generation*, named by a hash of each entry's kind
//! and, for what is copied (small files, links), its device, inode, size,
//! mode, owner and change times. A run whose generation exists binds it
//! read-only: ~30 lstat calls and one `open_tree`.
//!
//! - Owned by the host's root, in the 0700 state dir: the jail sees the
//!   files as `nobody`'s, and not even the jail's root could change what
//!   later runs see (it owns nothing there, and the owner is not mapped
//!   into its namespace).
//! - Read with the jail root's file-system ids, like a fresh /etc: no
//!   generation holds a host file the jail could not have read. Each file
//!   read must still be the one stat'ed for its name, else nothing is kept.
//! - Kept only when every entry last changed [`FRESH`] or more ago: a
//!   change within the clock tick of a stat could leave the same times.
//! - Written into a `.new-*` dir, synced (one syncfs), then renamed to its
//!   name, locked all the while: a crash leaves no half-written generation
//!   under a real name, and no other build removes it meanwhile.
//! - A run holds its generation with a shared `flock` for its whole life.
//!   A build removes the other generations no run holds (an exclusive,
//!   non-blocking `flock`; renamed away first), and the `.new-*` dirs of
//!   builds that died, never descending into a mount. A run that finds its
//!   generation gone once it has the lock makes /etc afresh.
//! - The bind sent to init is private: what init binds onto it (host /etc
//!   dirs) never propagates back to the state dir's mount.

use crate::idmap::FsIdentity;
use crate::mounts::{identity_files, kind_of, read_small, Kind, PreparedEtc, HOST_ETC_ENTRIES};
use crate::sys;
use sha2::{Digest, Sha256};
use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

/// How long ago an entry must have last changed for its copy to be kept.
pub const FRESH: Duration = Duration::from_secs(2);

/// Whether any of `times` (seconds and nanoseconds since the epoch, as
/// stat gives them) is less than `fresh` ago (or ahead of the clock).
pub(crate) fn changed_within(times: impl IntoIterator<Item = (i64, i64)>, fresh: Duration) -> bool {
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let Some(before) = now.checked_sub(fresh) else { return true };
    times.into_iter().any(|(secs, nsecs)| Duration::new(secs.max(0) as u64, nsecs.clamp(0, 999_999_999) as u32) >= before)
}

/// Changes whenever what a generation holds, or how it is named, does.
const FORMAT: &[u8] = b"clawkeep etc generation 1\n";

/// One listed host entry as it was stat'ed.
struct Listed {
    name: &'static str,
    meta: fs::Metadata,
    kind: Kind,
}

/// The jail's /etc from the generation in `cache` that matches the host's
/// `/etc` now, built first if there is none. None when it could not be kept
/// (an entry changed too recently, or while it was read): /etc is then
/// made afresh for this run.
pub fn prepared(cache: &Path) -> io::Result<Option<PreparedEtc>> {
    prepared_from(Path::new("/etc"), HOST_ETC_ENTRIES, cache, FRESH)
}

/// [`prepared`] from the entries `names` of `etc`, kept when older than `fresh`.
pub(crate) fn prepared_from(etc: &Path, names: &[&'static str], cache: &Path, fresh: Duration) -> io::Result<Option<PreparedEtc>> {
    let listed = list(etc, names)?;
    let name = generation_name(&listed);
    if let Some(held) = hold(cache, &name)? {
        return attach(held, &listed).map(Some);
    }
    if !settled(&listed, fresh) {
        return Ok(None);
    }
    fs::DirBuilder::new().mode(0o700).recursive(true).create(cache)?;
    if !build(etc, &listed, cache, &name)? {
        return Ok(None);
    }
    collect(cache, &name, fresh);
    match hold(cache, &name)? {
        Some(held) => attach(held, &listed).map(Some),
        None => Ok(None),
    }
}

/// Every listed entry of `etc` there is, stat'ed with the jail root's ids.
fn list(etc: &Path, names: &[&'static str]) -> io::Result<Vec<Listed>> {
    let _as_jail_root = FsIdentity::jail_root()?;
    Ok(names
        .iter()
        .filter_map(|&name| {
            let meta = fs::symlink_metadata(etc.join(name)).ok()?;
            let kind = kind_of(&meta)?;
            Some(Listed { name, meta, kind })
        })
        .collect())
}

/// The generation's name: a hash of everything its content depends on.
fn generation_name(listed: &[Listed]) -> String {
    let mut h = Sha256::new();
    h.update(FORMAT);
    for (name, body) in identity_files() {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(body.as_bytes());
        h.update([0]);
    }
    for l in listed {
        h.update(l.name.as_bytes());
        h.update([0, l.kind as u8]);
        // Directories and large files are bound from the host at each run:
        // only their kind is the generation's.
        if matches!(l.kind, Kind::Small | Kind::Link) {
            let m = &l.meta;
            for v in [m.dev(), m.ino(), m.size(), u64::from(m.mode()), u64::from(m.uid()), u64::from(m.gid())] {
                h.update(v.to_le_bytes());
            }
            for v in [m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec()] {
                h.update(v.to_le_bytes());
            }
        }
    }
    h.finalize()[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether every entry copied (small files, links) last changed `fresh`
/// or more ago; what is bound is the host's own at each run.
fn settled(listed: &[Listed], fresh: Duration) -> bool {
    let copied = listed.iter().filter(|l| matches!(l.kind, Kind::Small | Kind::Link));
    !changed_within(copied.flat_map(|l| [(l.meta.ctime(), l.meta.ctime_nsec()), (l.meta.mtime(), l.meta.mtime_nsec())]), fresh)
}

/// The generation `name`, opened and locked shared, if it is there.
fn hold(cache: &Path, name: &str) -> io::Result<Option<OwnedFd>> {
    let path = cache.join(name);
    let fd = match sys::open_path(&path, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    sys::flock(&fd, libc::LOCK_SH)?;
    // A build may have removed it between the open and the lock.
    let held = fs::File::from(fd);
    let (now, ours) = (fs::symlink_metadata(&path), held.metadata()?);
    Ok(now.ok().filter(|m| (m.dev(), m.ino()) == (ours.dev(), ours.ino())).map(|_| OwnedFd::from(held)))
}

/// A read-only, private bind of the held generation, to send to init:
/// the directories init binds onto it must not propagate to the state
/// dir's mount (shared on systemd hosts), where they would stay, and be
/// writable binds of host /etc dirs.
fn attach(held: OwnedFd, listed: &[Listed]) -> io::Result<PreparedEtc> {
    let tree = sys::open_tree_clone(held.as_raw_fd(), false, sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV)?;
    let binds = listed.iter().filter(|l| matches!(l.kind, Kind::Dir | Kind::Large)).map(|l| OsString::from(l.name)).collect();
    Ok(PreparedEtc { tree, binds, held: Some(held) })
}

/// What a generation holds for one entry.
enum Body {
    File(Vec<u8>, u32),
    Link(std::path::PathBuf),
    /// A mount point: a directory, or an empty file for a large one.
    Point(Kind),
}

/// Builds generation `name` in `cache`. False when an entry changed since
/// it was listed (nothing is kept then).
fn build(etc: &Path, listed: &[Listed], cache: &Path, name: &str) -> io::Result<bool> {
    let same = |a: &fs::Metadata, b: &fs::Metadata| {
        (a.dev(), a.ino(), a.size(), a.mode(), a.ctime(), a.ctime_nsec())
            == (b.dev(), b.ino(), b.size(), b.mode(), b.ctime(), b.ctime_nsec())
    };
    let mut bodies = Vec::with_capacity(listed.len());
    {
        let _as_jail_root = FsIdentity::jail_root()?;
        for l in listed {
            let p = etc.join(l.name);
            let body = match l.kind {
                Kind::Small => {
                    let f = fs::File::from(sys::open_path(&p, libc::O_RDONLY | libc::O_NOFOLLOW)?);
                    if !same(&l.meta, &f.metadata()?) {
                        return Ok(false);
                    }
                    let body = read_small(f, l.meta.len() as usize)?;
                    if body.len() as u64 != l.meta.len() {
                        return Ok(false);
                    }
                    // Never setuid, setgid or sticky in the jail's copy.
                    Body::File(body, l.meta.mode() & 0o777)
                }
                Kind::Link => {
                    let to = fs::read_link(&p)?;
                    if !same(&l.meta, &fs::symlink_metadata(&p)?) {
                        return Ok(false);
                    }
                    Body::Link(to)
                }
                k => Body::Point(k),
            };
            bodies.push((l.name, body));
        }
    }
    let tmp = cache.join(format!(".new-{}", sys::random_hex()));
    fs::DirBuilder::new().mode(0o700).create(&tmp)?;
    // Locked until it is in place under its name: no other run's build
    // removes it meanwhile (see `collect`).
    let lock = sys::open_path(&tmp, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW)?;
    sys::flock(&lock, libc::LOCK_EX)?;
    if let Err(e) = write_generation(&tmp, &lock, &bodies) {
        remove_generation(&tmp);
        return Err(e);
    }
    if let Err(e) = fs::rename(&tmp, cache.join(name)) {
        remove_generation(&tmp);
        // Another run built the same generation first: theirs is as good.
        if !matches!(e.raw_os_error(), Some(libc::ENOTEMPTY | libc::EEXIST)) {
            return Err(e);
        }
    }
    Ok(true)
}

/// Fills `dir` (`lock` is it), opens it to all and syncs its file
/// system: nothing of it is renamed into place before it is on disk.
/// Modes are set outright: the launcher's umask must not narrow them.
fn write_generation(dir: &Path, lock: &OwnedFd, bodies: &[(&str, Body)]) -> io::Result<()> {
    let file = |name: &str, body: &[u8], mode: u32| -> io::Result<()> {
        let mut f = fs::OpenOptions::new().write(true).create_new(true).custom_flags(libc::O_NOFOLLOW).mode(0o600).open(dir.join(name))?;
        f.write_all(body)?;
        f.set_permissions(fs::Permissions::from_mode(mode))
    };
    for (name, body) in identity_files() {
        file(name, body.as_bytes(), 0o644)?;
    }
    for (name, body) in bodies {
        match body {
            Body::File(content, mode) => file(name, content, *mode)?,
            Body::Link(to) => std::os::unix::fs::symlink(to, dir.join(name))?,
            Body::Point(Kind::Dir) => {
                fs::DirBuilder::new().mode(0o755).create(dir.join(name))?;
                fs::set_permissions(dir.join(name), fs::Permissions::from_mode(0o755))?;
            }
            Body::Point(_) => file(name, b"", 0o644)?,
        }
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    // One syncfs for the contents, the modes and the entries alike, on any
    // file system (an fdatasync need not carry a mode change).
    // SAFETY: syncfs on a descriptor we own.
    if unsafe { libc::syncfs(lock.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Removes every generation but `keep` that no run holds and that was not
/// placed in the last `fresh`, and what builds that died left. Best
/// effort: what cannot be removed stays for the next.
/// A generation is renamed away first, under its exclusive lock, so no run
/// finds it half removed under its name.
fn collect(cache: &Path, keep: &str, fresh: Duration) {
    let Ok(entries) = fs::read_dir(cache) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let ours =
            name.starts_with(".new-") || name.starts_with(".old-") || (name.len() == 32 && name.bytes().all(|b| b.is_ascii_hexdigit()));
        if name == keep || !ours {
            continue;
        }
        let path = e.path();
        // A build in progress, or one just placed whose run has yet to
        // take its shared lock, is left alone.
        let Ok(fd) = sys::open_path(&path, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW) else { continue };
        if sys::flock(&fd, libc::LOCK_EX | libc::LOCK_NB).is_err() {
            continue;
        }
        // Still what the name is (another clean-up may have renamed it
        // away, and a build placed a new one there, since it was opened).
        let held = fs::File::from(fd);
        let (Ok(ours), Ok(now)) = (held.metadata(), fs::symlink_metadata(&path)) else { continue };
        if (ours.dev(), ours.ino()) != (now.dev(), now.ino()) || changed_within([(now.ctime(), now.ctime_nsec())], fresh) {
            continue;
        }
        let gone = cache.join(format!(".old-{}", sys::random_hex()));
        if name.starts_with(".old-") || fs::rename(&path, &gone).is_ok() {
            remove_generation(if name.starts_with(".old-") { &path } else { &gone });
        }
    }
}

/// Removes a generation's files, links and (empty) mount-point dirs, then
/// the generation, never descending into anything: a mount on it (EBUSY)
/// or a dir that is not empty stays, and the generation with it.
fn remove_generation(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let _ = match e.file_type() {
                Ok(t) if t.is_dir() => fs::remove_dir(e.path()),
                _ => fs::remove_file(e.path()),
            };
        }
    }
    let _ = fs::remove_dir(dir);
}

#[cfg(test)]
#[path = "etc_cache_tests.rs"]
mod tests;

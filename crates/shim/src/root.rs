//! Paths inside a sandbox's root seen from outside it: what the jail and
//! the VM guest both need to find the real files a gated command name
//! reaches.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What a path was when a walk looked at it: device, inode, mode, links,
/// size, modification and change times (seconds, nanoseconds); None when
/// it could not be stat'ed.
pub type Stamp = Option<[u64; 9]>;

/// Every path a walk looked at (with whether symlinks were followed), and
/// its [`Stamp`] from just before it looked: see [`recording`].
pub type Seen = BTreeMap<(PathBuf, bool), Stamp>;

thread_local! {
    static SEEN: RefCell<Option<Seen>> = const { RefCell::new(None) };
}

/// `p`'s stamp now, following a final symlink when `follow`.
pub fn stamp(p: &Path, follow: bool) -> Stamp {
    let m = if follow { fs::metadata(p) } else { fs::symlink_metadata(p) }.ok()?;
    let t = |v: i64| v as u64;
    Some([m.dev(), m.ino(), u64::from(m.mode()), m.nlink(), m.size(), t(m.mtime()), t(m.mtime_nsec()), t(m.ctime()), t(m.ctime_nsec())])
}

/// Runs `walk`, returning what it looked at on this thread (each path's
/// stamp taken before it first looked): while every stamp stays the same,
/// the walk would look at the same things and find the same.
pub fn recording<T>(walk: impl FnOnce() -> T) -> (T, Seen) {
    SEEN.with(|s| *s.borrow_mut() = Some(Seen::new()));
    let out = walk();
    (out, SEEN.with(|s| s.borrow_mut().take()).unwrap_or_default())
}

/// Before a walk looks `p` up (by name in its parent, whose listing it
/// reads; `follow`ing a final symlink or not) or lists it: notes both
/// while [`recording`], and, where the parent is not there, the nearest
/// ancestor that is (whose listing would show it appear). A directory is
/// stamped as what it resolves to, so its listing's changes show in its
/// times. Where following a path finds nothing but the path is there (a
/// dangling symlink), its own stamp is noted too: see [`kept`].
pub fn note(p: &Path, follow: bool) {
    SEEN.with(|s| {
        let mut s = s.borrow_mut();
        let Some(seen) = s.as_mut() else { return };
        let mut there = |x: &Path, follow: bool| -> bool {
            let st = *seen.entry((x.to_path_buf(), follow)).or_insert_with(|| stamp(x, follow));
            if st.is_none() && follow {
                seen.entry((x.to_path_buf(), false)).or_insert_with(|| stamp(x, false));
            }
            st.is_some()
        };
        there(p, follow);
        let mut dir = p.parent();
        while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty()) {
            if there(d, true) {
                break;
            }
            dir = d.parent();
        }
    });
}

/// The stamps of `seen` that tell whether the walk would find the same:
/// all of what was there; of what was not, only paths that are there
/// unfollowed (a dangling symlink: no listing would show its target
/// appear). The rest shows in the listing of its nearest ancestor that
/// is there, noted too.
pub fn kept(seen: Seen) -> impl Iterator<Item = ((PathBuf, bool), Stamp)> {
    let links: std::collections::BTreeSet<PathBuf> =
        seen.iter().filter(|((_, follow), s)| !follow && s.is_some()).map(|((p, _), _)| p.clone()).collect();
    seen.into_iter().filter(move |((p, _), s)| s.is_some() || links.contains(p))
}

/// Resolves `rel` against `base` as if `base` were `/`: absolute symlink
/// targets restart at `base` (the way they will resolve inside the jail).
pub fn resolve_in(base: &Path, rel: &Path) -> Option<PathBuf> {
    resolve_within(base, rel, |_| true)
}

/// [`resolve_in`], where every path the walk visits (relative to `base`)
/// must pass `has`, or nothing resolves: a symlink chain that leaves what
/// a jail's root holds resolves to nothing there, even when it comes back.
pub fn resolve_within(base: &Path, rel: &Path, has: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    let mut todo: Vec<std::ffi::OsString> = rel.components().rev().map(|c| c.as_os_str().to_owned()).collect();
    let mut cur = base.to_path_buf();
    let mut hops = 0;
    while let Some(part) = todo.pop() {
        match part.to_str() {
            Some("/") | Some(".") => continue,
            Some("..") => {
                if cur != base {
                    cur.pop();
                }
                continue;
            }
            _ => {}
        }
        let next = cur.join(&part);
        if !has(next.strip_prefix(base).ok()?) {
            return None;
        }
        note(&next, false);
        let meta = fs::symlink_metadata(&next).ok()?;
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > 40 {
                return None;
            }
            let target = fs::read_link(&next).ok()?;
            if target.is_absolute() {
                cur = base.to_path_buf();
            }
            todo.extend(target.components().rev().map(|c| c.as_os_str().to_owned()));
        } else {
            cur = next;
        }
    }
    Some(cur)
}

/// Separate copies of the covered file `real` (same name, same size, not
/// the same inode) in the places a package keeps a tool's private helpers:
/// a few stats per command, where walking /usr/lib would cost milliseconds.
pub fn private_copies(real: &Path, meta: &fs::Metadata, cmd: &str) -> Vec<PathBuf> {
    let Some(prefix) = real.parent().and_then(Path::parent) else { return Vec::new() };
    let mut out = Vec::new();
    for root in [prefix.join("libexec"), prefix.join("lib")] {
        for dir in [root.clone(), root.join(format!("{cmd}-core")), root.join(cmd)] {
            let p = dir.join(cmd);
            note(&p, false);
            let Ok(m) = fs::symlink_metadata(&p) else { continue };
            if m.is_file() && m.len() == meta.len() && (m.dev(), m.ino()) != (meta.dev(), meta.ino()) {
                out.push(p);
            }
        }
    }
    out
}

/// Directories under `dir` (to `depth` levels, within `budget` entries)
/// that hold a hard link to inode `ino` on `dev`.
pub fn find_link_dirs(dir: &Path, ino: u64, dev: u64, depth: usize, budget: &mut usize, missing: &mut u64, out: &mut Vec<PathBuf>) {
    // A file is on its directory's device (only a mount point could be
    // elsewhere, and those are directories): one stat per directory, not
    // one per matching entry (git-core holds ~140 links).
    note(dir, true);
    if fs::metadata(dir).map_or(true, |m| m.dev() != dev) {
        return;
    }
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        if *budget == 0 || *missing == 0 {
            return;
        }
        *budget -= 1;
        use std::os::unix::fs::DirEntryExt;
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() && depth > 0 {
            find_link_dirs(&e.path(), ino, dev, depth - 1, budget, missing, out);
        } else if ft.is_file() && e.ino() == ino {
            *missing = missing.saturating_sub(1);
            if !out.contains(&dir.to_path_buf()) {
                out.push(dir.to_path_buf());
            }
        }
    }
}

/// Which of the gated `commands` reaching a covered `path` the shim there
/// is run as: the one named like the file (`/usr/bin/gzip` is gzip, though
/// gunzip is the same file), else the first.
pub fn own_name<'a>(commands: &'a std::collections::BTreeSet<String>, path: &Path) -> Option<&'a str> {
    let name = path.file_name().and_then(|n| n.to_str());
    commands.iter().find(|c| Some(c.as_str()) == name).or_else(|| commands.first()).map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_reached_by_several_commands_is_named_after_itself() {
        let both: std::collections::BTreeSet<String> = ["gunzip", "gzip"].map(String::from).into();
        assert_eq!(own_name(&both, Path::new("/usr/bin/gzip")), Some("gzip"));
        assert_eq!(own_name(&both, Path::new("/usr/bin/gunzip")), Some("gunzip"));
        assert_eq!(own_name(&both, Path::new("/usr/bin/zcat")), Some("gunzip"));
        assert_eq!(own_name(&Default::default(), Path::new("/usr/bin/x")), None);
    }
}

//! Paths inside a sandbox's root seen from outside it: what the jail and
//! the VM guest both need to find the real files a gated command name
//! reaches.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

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

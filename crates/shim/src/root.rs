//! Paths inside a sandbox's root seen from outside it: what the jail and
//! the VM guest both need to find the real files a gated command name
//! reaches.

use std::fs;
use std::path::{Path, PathBuf};

/// Resolves `rel` against `base` as if `base` were `/`: absolute symlink
/// targets restart at `base` (the way they will resolve inside the jail).
pub fn resolve_in(base: &Path, rel: &Path) -> Option<PathBuf> {
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

//! What the host workspace looked like when the guest got its copy, so
//! that copy-back leaves alone whatever the host changed during the run.

use super::{io_err, DiskError};
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub(super) fn snapshot_path(img: &Path) -> PathBuf {
    img.with_extension("snap")
}

/// (size, mtime s, mtime ns, inode) of every entry under a directory, by
/// path relative to it.
#[derive(Debug, Default)]
pub(super) struct Snapshot(std::collections::HashMap<PathBuf, (u64, i64, i64, u64)>);

impl Snapshot {
    fn key(m: &fs::Metadata) -> (u64, i64, i64, u64) {
        (if m.is_dir() { 0 } else { m.len() }, m.mtime(), m.mtime_nsec(), m.ino())
    }

    pub(super) fn of(dir: &Path) -> Snapshot {
        fn walk(root: &Path, d: &Path, out: &mut Snapshot) {
            let Ok(rd) = fs::read_dir(d) else { return };
            for e in rd.flatten() {
                let p = e.path();
                let Ok(m) = p.symlink_metadata() else { continue };
                if let Ok(rel) = p.strip_prefix(root) {
                    out.0.insert(rel.to_path_buf(), Snapshot::key(&m));
                }
                if m.is_dir() {
                    walk(root, &p, out);
                }
            }
        }
        let mut s = Snapshot::default();
        walk(dir, dir, &mut s);
        s
    }

    pub(super) fn save(&self, path: &Path) -> Result<(), DiskError> {
        let rows: Vec<_> = self.0.iter().map(|(p, k)| (p.to_string_lossy(), k)).collect();
        let bytes =
            serde_json::to_vec(&rows).map_err(|e| DiskError::Io { op: "encode", path: path.into(), source: io::Error::other(e) })?;
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .and_then(|mut f| io::Write::write_all(&mut f, &bytes))
            .map_err(io_err("write", path))
    }

    pub(super) fn load(path: &Path) -> Option<Snapshot> {
        let rows: Vec<(String, (u64, i64, i64, u64))> = serde_json::from_slice(&fs::read(path).ok()?).ok()?;
        Some(Snapshot(rows.into_iter().map(|(p, k)| (PathBuf::from(p), k)).collect()))
    }
}

/// Copy-back's view of the host tree: which paths the host changed since
/// the snapshot (those are kept as the host has them), and what was kept.
pub(super) struct HostGuard<'a> {
    pub(super) root: &'a Path,
    pub(super) snap: Option<Snapshot>,
    pub(super) kept: Vec<PathBuf>,
}

impl HostGuard<'_> {
    /// True when `p` is as it was at the snapshot (or there is none).
    fn unchanged(&self, p: &Path) -> bool {
        let Some(snap) = &self.snap else { return true };
        let Ok(rel) = p.strip_prefix(self.root) else { return false };
        match (snap.0.get(rel), p.symlink_metadata()) {
            (Some(k), Ok(m)) => m.is_dir() || *k == Snapshot::key(&m),
            (None, Err(_)) => true,
            _ => false,
        }
    }

    /// May copy-back replace or remove `p`? Otherwise it is kept and named.
    pub(super) fn may_touch(&mut self, p: &Path) -> bool {
        let ok = self.unchanged(p);
        if !ok {
            self.kept.push(p.to_path_buf());
        }
        ok
    }

    /// Removes `p` as the guest did, except what the host changed under it.
    pub(super) fn remove(&mut self, p: &Path) -> Result<(), DiskError> {
        match p.symlink_metadata() {
            Ok(m) if m.is_dir() => {
                for e in fs::read_dir(p).map_err(io_err("read", p))?.flatten() {
                    self.remove(&e.path())?;
                }
                let _ = fs::remove_dir(p);
                Ok(())
            }
            Ok(_) if self.may_touch(p) => fs::remove_file(p).map_err(io_err("remove", p)),
            _ => Ok(()),
        }
    }
}

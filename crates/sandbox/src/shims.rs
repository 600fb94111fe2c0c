//! Gated commands inside the jail: the shim in place of every real binary.
//!
//! Guarantee, for every gated command name: in the agent's mount
//! namespace, every file that name resolves to through the standard PATH
//! directories (following symlinks), and every hard link to such a file in
//! those directories, is covered by a read-only bind of the shim. Running
//! it by name, by full path, through a symlink or from `sh -c` therefore
//! reaches the gate; the real binary is visible only in the executor's
//! namespace. `/run/clawkeep/manifest` maps each covered path to its
//! command so the shim knows what it was called as.

use crate::error::{SetupFailure, Step};
use crate::sys;
pub use clawkeep_shim::root::resolve_in;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};

/// Where the gate meets the jail.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GateMounts {
    /// The clawkeep-shim binary on the host.
    pub shim_binary: PathBuf,
    /// The agent's gate socket on the host (bound at /run/clawkeep/gate.sock).
    pub socket: PathBuf,
    /// Command names to gate.
    pub commands: Vec<String>,
}

/// Directories (relative to the new root) searched for real binaries.
const PATH_DIRS: &[&str] = &["usr/local/bin", "usr/local/sbin", "usr/bin", "usr/sbin", "bin", "sbin"];

/// Where the shim binary and the gate socket come from: detached mounts
/// the helper cloned in the host namespace (a root caller's jail cannot
/// reach the 0700 state directory), or paths init opens itself (an
/// unprivileged caller's jail runs as the caller).
#[derive(Debug)]
pub enum GateSource {
    Tree(OwnedFd),
    Path(OwnedFd),
}

#[derive(Debug)]
pub struct GateSources {
    shim: GateSource,
    socket: GateSource,
}

/// Detached clones of the shim and socket, made by the helper (root only).
pub fn clone_trees(g: &GateMounts) -> Result<(OwnedFd, OwnedFd), SetupFailure> {
    let t = |p: &Path| sys::open_tree_path(p).map_err(|e| SetupFailure::new(Step::OpenSource, p.display().to_string(), &e));
    Ok((t(&g.shim_binary)?, t(&g.socket)?))
}

/// Opened before the base tmpfs hides the host's /tmp.
pub fn open_sources(g: &GateMounts, trees: Option<(OwnedFd, OwnedFd)>) -> Result<GateSources, SetupFailure> {
    if let Some((shim, socket)) = trees {
        return Ok(GateSources { shim: GateSource::Tree(shim), socket: GateSource::Tree(socket) });
    }
    let open = |p: &Path| sys::open_path(p, libc::O_PATH).map_err(|e| SetupFailure::new(Step::OpenSource, p.display().to_string(), &e));
    Ok(GateSources { shim: GateSource::Path(open(&g.shim_binary)?), socket: GateSource::Path(open(&g.socket)?) })
}

fn fd_src(fd: &OwnedFd) -> CString {
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or_default()
}

fn bind_file(src: &CString, target: &Path) -> Result<(), SetupFailure> {
    if !target.exists() {
        fs::write(target, b"").map_err(|e| SetupFailure::new(Step::MakeNode, target.display().to_string(), &e))?;
    }
    let t = sys::cpath(target).map_err(|e| SetupFailure::new(Step::MountBind, target.display().to_string(), &e))?;
    sys::mount(Some(src), &t, None, libc::MS_BIND, None).map_err(|e| SetupFailure::new(Step::MountBind, target.display().to_string(), &e))
}

fn attach(src: &GateSource, target: &Path) -> Result<(), SetupFailure> {
    if !target.exists() {
        fs::write(target, b"").map_err(|e| SetupFailure::new(Step::MakeNode, target.display().to_string(), &e))?;
    }
    match src {
        GateSource::Path(fd) => bind_file(&fd_src(fd), target),
        GateSource::Tree(tree) => {
            let t = sys::cpath(target).map_err(|e| SetupFailure::new(Step::MountBind, target.display().to_string(), &e))?;
            sys::move_mount_to(tree, &t).map_err(|e| SetupFailure::new(Step::MountBind, target.display().to_string(), &e))
        }
    }
}

/// Installs /run/clawkeep (shim, socket, shims dir, manifest) under `base`
/// and covers the real binaries. Returns the covered paths as the jail
/// will see them (for the executor to uncover in its own namespace).
pub fn install(base: &Path, g: &GateMounts, src: &GateSources) -> Result<Vec<PathBuf>, SetupFailure> {
    let mk = |p: &Path| fs::create_dir_all(p).map_err(|e| SetupFailure::new(Step::MakeNode, p.display().to_string(), &e));
    let run = base.join("run/clawkeep");
    mk(&run.join("shims"))?;
    attach(&src.shim, &run.join("shim"))?;
    attach(&src.socket, &run.join("gate.sock"))?;
    // Every mask is a bind of the attached shim, now in this namespace.
    let shim_src = sys::cpath(&run.join("shim")).map_err(|e| SetupFailure::new(Step::MountBind, "shim", &e))?;

    // Every real file a command name reaches, and the names that reach it.
    let mut targets: BTreeMap<PathBuf, String> = BTreeMap::new();
    let mut inodes: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut manifest: BTreeMap<PathBuf, String> = BTreeMap::new();
    for cmd in &g.commands {
        if cmd.is_empty() || cmd.contains('/') {
            continue;
        }
        symlink("../shim", run.join("shims").join(cmd)).map_err(|e| SetupFailure::new(Step::MakeNode, cmd.clone(), &e))?;
        for dir in PATH_DIRS {
            let p = base.join(dir).join(cmd);
            let Some(real) = resolve_in(base, &Path::new(dir).join(cmd)) else { continue };
            let Ok(meta) = fs::metadata(&real) else { continue };
            if !meta.is_file() || !real.starts_with(base) {
                continue;
            }
            if meta.nlink() > 1 {
                inodes.insert((meta.dev(), meta.ino()), real.clone());
            }
            targets.insert(real.clone(), cmd.clone());
            manifest.insert(jail_path(base, &real), cmd.clone());
            manifest.insert(jail_path(base, &p), cmd.clone());
        }
    }
    // Hard links to a covered file under another name in the PATH dirs
    // (scanned only when some covered file has more than one link).
    if !inodes.is_empty() {
        for dir in PATH_DIRS {
            let d = base.join(dir);
            if fs::symlink_metadata(&d).map(|m| m.file_type().is_symlink()).unwrap_or(true) {
                continue;
            }
            let Ok(rd) = fs::read_dir(&d) else { continue };
            for e in rd.flatten() {
                // d_ino comes free with readdir; stat only the candidates.
                use std::os::unix::fs::DirEntryExt;
                if !inodes.keys().any(|(_, ino)| *ino == e.ino()) {
                    continue;
                }
                let Ok(m) = e.metadata() else { continue };
                if let Some(real) = inodes.get(&(m.dev(), m.ino())) {
                    let cmd = targets[real].clone();
                    targets.entry(e.path()).or_insert_with(|| cmd.clone());
                    manifest.insert(jail_path(base, &e.path()), cmd);
                }
            }
        }
    }
    for t in targets.keys() {
        bind_file(&shim_src, t)?;
    }
    // Hard links outside the PATH dirs (git's libexec/git-core holds ~140):
    // hide each directory that holds one under an empty read-only tmpfs.
    // One mount instead of one per link; only the gated tool uses them, and
    // it runs in the executor's namespace, where they are uncovered.
    let mut hidden = Vec::new();
    for ((_, ino), real) in &inodes {
        let Ok(meta) = fs::metadata(real) else { continue };
        let found = targets.iter().filter(|(p, _)| fs::metadata(p).map(|m| m.ino() == *ino).unwrap_or(false)).count() as u64;
        if found >= meta.nlink() {
            continue;
        }
        let Some(prefix) = real.parent().and_then(Path::parent) else { continue };
        let mut budget = 20_000usize;
        let mut missing = meta.nlink() - found;
        for root in [prefix.join("libexec"), prefix.join("lib")] {
            find_link_dirs(&root, *ino, meta.dev(), 3, &mut budget, &mut missing, &mut hidden);
        }
    }
    hidden.sort();
    hidden.dedup();
    for dir in &hidden {
        let t = sys::cpath(dir).map_err(|e| SetupFailure::new(Step::MaskPath, dir.display().to_string(), &e))?;
        sys::mount(
            Some(c"tmpfs"),
            &t,
            Some(c"tmpfs"),
            libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            Some(c"mode=0755,size=4k"),
        )
        .map_err(|e| SetupFailure::new(Step::MaskPath, dir.display().to_string(), &e))?;
    }
    let text: String = manifest.iter().map(|(p, c)| format!("{}\t{c}\n", p.display())).collect();
    let mpath = run.join("manifest");
    fs::write(&mpath, text).map_err(|e| SetupFailure::new(Step::WriteFile, mpath.display().to_string(), &e))?;
    Ok(targets.keys().chain(hidden.iter()).map(|t| jail_path(base, t)).collect())
}

/// Directories under `dir` (to `depth` levels, within `budget` entries)
/// that hold a hard link to inode `ino` on `dev`.
fn find_link_dirs(dir: &Path, ino: u64, dev: u64, depth: usize, budget: &mut usize, missing: &mut u64, out: &mut Vec<PathBuf>) {
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
        } else if ft.is_file() && e.ino() == ino && e.metadata().map(|m| m.dev() == dev).unwrap_or(false) {
            *missing = missing.saturating_sub(1);
            if !out.contains(&dir.to_path_buf()) {
                out.push(dir.to_path_buf());
            }
        }
    }
}

fn jail_path(base: &Path, p: &Path) -> PathBuf {
    Path::new("/").join(p.strip_prefix(base).unwrap_or(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_symlinks_inside_the_base() {
        let t = tempfile::tempdir().unwrap();
        let b = t.path();
        fs::create_dir_all(b.join("usr/bin")).unwrap();
        fs::create_dir_all(b.join("etc/alternatives")).unwrap();
        fs::write(b.join("usr/bin/mawk"), b"x").unwrap();
        symlink("usr/bin", b.join("bin")).unwrap();
        symlink("/etc/alternatives/awk", b.join("usr/bin/awk")).unwrap();
        symlink("/usr/bin/mawk", b.join("etc/alternatives/awk")).unwrap();
        assert_eq!(resolve_in(b, Path::new("bin/awk")).unwrap(), b.join("usr/bin/mawk"));
        assert_eq!(resolve_in(b, Path::new("usr/bin/../bin/mawk")).unwrap(), b.join("usr/bin/mawk"));
        symlink("loop", b.join("loop")).unwrap();
        assert!(resolve_in(b, Path::new("loop")).is_none());
        assert!(resolve_in(b, Path::new("usr/bin/none")).is_none());
    }
}

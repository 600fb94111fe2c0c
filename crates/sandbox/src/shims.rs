//! Gated commands inside the jail: the shim in place of every real binary.
//!
//! Guarantee, for every gated command name: in the agent's mount
//! namespace, every file that name resolves to through the standard PATH
//! directories (following symlinks), and every hard link to such a file in
//! those directories, is covered by a read-only bind of the shim, and so is
//! a copy of it where packages keep a tool's private helpers
//! (`<prefix>/lib{,exec}/{cmd,cmd-core}/cmd`: Debian's git ships
//! `/usr/lib/git-core/git`, byte for byte `/usr/bin/git`). Running
//! it by name, by full path, through a symlink or from `sh -c` therefore
//! reaches the gate; the real binary is visible only in the executor's
//! namespace. `/run/clawkeep/manifest` maps each covered path to its
//! command so the shim knows what it was called as.
//!
//! The helper plans the coverage ([`plan`]) while init builds the root,
//! from the same directories the root binds, keeping only paths the
//! jail's root holds; init mounts it ([`install`]). This assumes, as
//! before, that no one untrusted writes to a `--rootfs` tree during a run.

use crate::error::{SetupFailure, Step};
use crate::sys;
use clawkeep_shim::root::{find_link_dirs, note, own_name, private_copies};
pub use clawkeep_shim::root::{resolve_in, resolve_within};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{symlink, MetadataExt, OpenOptionsExt};
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
/// Each private (see `sys::open_tree_path`): init binds the shim onto
/// every covered file, and a bind of a shared mount would be the host
/// mount's peer.
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

/// An empty 0644 file to bind onto (init builds the root under umask 0).
fn mount_point(target: &Path) -> Result<(), SetupFailure> {
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(target)
        .map(drop)
        .map_err(|e| SetupFailure::new(Step::MakeNode, target.display().to_string(), &e))
}

fn fd_src(fd: &OwnedFd) -> CString {
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or_default()
}

fn bind_file(src: &CString, target: &Path) -> Result<(), SetupFailure> {
    if !target.exists() {
        mount_point(target)?;
    }
    let t = sys::cpath(target).map_err(|e| SetupFailure::new(Step::MountBind, target.display().to_string(), &e))?;
    sys::mount(Some(src), &t, None, libc::MS_BIND, None).map_err(|e| SetupFailure::new(Step::MountBind, target.display().to_string(), &e))
}

fn attach(src: &GateSource, target: &Path) -> Result<(), SetupFailure> {
    if !target.exists() {
        mount_point(target)?;
    }
    match src {
        GateSource::Path(fd) => bind_file(&fd_src(fd), target),
        GateSource::Tree(tree) => {
            let t = sys::cpath(target).map_err(|e| SetupFailure::new(Step::MountBind, target.display().to_string(), &e))?;
            sys::move_mount_to(tree, &t).map_err(|e| SetupFailure::new(Step::MountBind, target.display().to_string(), &e))
        }
    }
}

/// A path the shim covers (or an empty tmpfs hides) in the agent's mount
/// namespace, as the jail sees it, and the gated commands that reach it.
/// The executor uncovers a job's own command's masks, and only those.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    pub path: PathBuf,
    pub commands: BTreeSet<String>,
    /// A directory hidden under an empty tmpfs (else a file the shim covers).
    pub dir: bool,
}

/// What the shim covers (see the module's guarantee), worked out from a
/// root's files by [`plan`]. Paths are relative to that root.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "CoverageWire", from = "CoverageWire")]
pub struct Coverage {
    /// Real files, each covered by a bind of the shim, with the commands
    /// that reach them.
    pub files: BTreeMap<PathBuf, BTreeSet<String>>,
    /// Directories holding other hard links, each hidden under an empty
    /// tmpfs, with the commands whose links they hold.
    pub dirs: BTreeMap<PathBuf, BTreeSet<String>>,
    /// Each covered path and PATH spelling, as the jail sees it, and the
    /// command it stands for (`/run/clawkeep/manifest`).
    pub manifest: BTreeMap<PathBuf, String>,
}

/// [`Coverage`] as it crosses the pipe: paths as bytes, since a file name
/// need not be UTF-8 (JSON strings must be).
#[derive(Serialize, Deserialize)]
struct CoverageWire {
    files: Vec<(Vec<u8>, BTreeSet<String>)>,
    dirs: Vec<(Vec<u8>, BTreeSet<String>)>,
    manifest: Vec<(Vec<u8>, String)>,
}

impl From<Coverage> for CoverageWire {
    fn from(c: Coverage) -> Self {
        let bytes = |p: PathBuf| p.into_os_string().into_vec();
        CoverageWire {
            files: c.files.into_iter().map(|(p, v)| (bytes(p), v)).collect(),
            dirs: c.dirs.into_iter().map(|(p, v)| (bytes(p), v)).collect(),
            manifest: c.manifest.into_iter().map(|(p, v)| (bytes(p), v)).collect(),
        }
    }
}

impl From<CoverageWire> for Coverage {
    fn from(w: CoverageWire) -> Self {
        let path = |b: Vec<u8>| PathBuf::from(std::ffi::OsString::from_vec(b));
        Coverage {
            files: w.files.into_iter().map(|(p, v)| (path(p), v)).collect(),
            dirs: w.dirs.into_iter().map(|(p, v)| (path(p), v)).collect(),
            manifest: w.manifest.into_iter().map(|(p, v)| (path(p), v)).collect(),
        }
    }
}

/// A plan kept between runs (in the state dir's `plan-cache`): the
/// coverage, and every path the walk that made it looked at, stamped as it
/// was (see `clawkeep_shim::root::recording`). While every stamp is the
/// same (inode, links, size, mode and times of each file looked up, and
/// of each directory whose listing was read), the walk would find the
/// same, so the plan is taken as it is: ~40 stat calls where the walk
/// makes ~140 and reads git's libexec dir whole (~0.3 ms here). A walk is
/// kept only when nothing it looked at changed in the last
/// [`crate::etc_cache::FRESH`] (a change in the same clock tick could leave
/// the same times), and only for the host's root.
#[derive(Debug, Serialize, Deserialize)]
pub struct KeptPlan {
    format: String,
    commands: Vec<String>,
    /// The helper binary that made it (its rules), as stamped.
    exe: clawkeep_shim::root::Stamp,
    seen: Vec<(Vec<u8>, bool, clawkeep_shim::root::Stamp)>,
    coverage: Coverage,
}

/// Changes whenever the rules of [`plan`] do; the running helper binary's
/// stamp must match too (a rebuilt or reinstalled helper plans afresh).
const PLAN_FORMAT: &str = "clawkeep plan 1";

impl KeptPlan {
    fn file(dir: &Path, commands: &[String]) -> PathBuf {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for c in commands {
            h.update(c.as_bytes());
            h.update([0]);
        }
        let name: String = h.finalize()[..8].iter().map(|b| format!("{b:02x}")).collect();
        dir.join(format!("{name}.json"))
    }

    /// The running helper binary's stamp (`/proc/self/exe`), taken with
    /// its own ids.
    pub fn this_exe() -> clawkeep_shim::root::Stamp {
        clawkeep_shim::root::stamp(Path::new("/proc/self/exe"), true)
    }

    /// The plan kept in `dir` for `commands` by the binary stamped `exe`,
    /// if any (read as ourselves: the state dir is the caller's; see
    /// [`KeptPlan::check`]).
    pub fn read(dir: &Path, commands: &[String], exe: clawkeep_shim::root::Stamp) -> Option<KeptPlan> {
        let k: KeptPlan = serde_json::from_slice(&fs::read(Self::file(dir, commands)).ok()?).ok()?;
        (k.format == PLAN_FORMAT && k.commands == commands && exe.is_some() && k.exe == exe).then_some(k)
    }

    /// Its coverage, if every path it looked at is as it was (checked with
    /// the ids the plan is made with).
    pub fn check(self) -> Option<Coverage> {
        let same = |(p, follow, was): &(Vec<u8>, bool, clawkeep_shim::root::Stamp)| {
            clawkeep_shim::root::stamp(Path::new(std::ffi::OsStr::from_bytes(p)), *follow) == *was
        };
        self.seen.iter().all(same).then_some(self.coverage)
    }

    /// [`plan`], recording what it looks at; kept-to-be (by the binary
    /// stamped `exe`) when all of it last changed `fresh` or more ago.
    pub fn plan(
        root: &Path,
        commands: &[String],
        in_jail: impl Fn(&Path) -> bool,
        fresh: std::time::Duration,
        exe: clawkeep_shim::root::Stamp,
    ) -> (Coverage, Option<KeptPlan>) {
        let (coverage, seen) = clawkeep_shim::root::recording(|| plan(root, commands, in_jail));
        let times = seen.values().flatten().flat_map(|s| [(s[5] as i64, s[6] as i64), (s[7] as i64, s[8] as i64)]);
        let settled = !crate::etc_cache::changed_within(times, fresh);
        let kept = (settled && exe.is_some()).then(|| KeptPlan {
            format: PLAN_FORMAT.to_string(),
            commands: commands.to_vec(),
            exe,
            seen: clawkeep_shim::root::kept(seen).map(|((p, f), s)| (p.into_os_string().into_vec(), f, s)).collect(),
            coverage: coverage.clone(),
        });
        (coverage, kept)
    }

    /// Keeps it in `dir` (as the host's root), replacing what was there:
    /// written beside and renamed over, so a reader never sees half of it.
    /// Not synced: one cut short by a crash does not parse, and is planned
    /// afresh.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new().mode(0o700).recursive(true).create(dir)?;
        let file = Self::file(dir, &self.commands);
        let tmp = file.with_extension(format!("new-{}", std::process::id()));
        let body = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).and_then(|mut f| f.write_all(&body))?;
        fs::rename(&tmp, file).inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })?;
        // What writers that died left (`<name>.new-<pid>`, pid gone).
        for e in fs::read_dir(dir)?.flatten() {
            let name = e.file_name();
            let pid = name.to_str().and_then(|n| n.rsplit_once(".new-")).and_then(|(_, p)| p.parse::<i32>().ok());
            // SAFETY: kill with signal 0 only checks for existence.
            if pid.is_some_and(|p| unsafe { libc::kill(p, 0) } != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH))
            {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(())
    }
}

/// Works out what covers `commands` in the tree at `root`, keeping only
/// what `in_jail` (given a path relative to `root`) says the jail has.
///
/// The helper calls it on the host's files (or the `--rootfs` tree) while
/// init builds the jail's root, which binds those same directories: a
/// path the jail has resolves in the jail as it does here. A symlink chain
/// that leaves what the jail has (even to come back) resolves to nothing
/// in the jail, and to nothing here ([`resolve_within`]). It looks with the
/// file-system ids of the jail's root (see `idmap::FsIdentity`), so it
/// finds what init would have found, no more.
pub fn plan(root: &Path, commands: &[String], in_jail: impl Fn(&Path) -> bool) -> Coverage {
    let dirs = path_dirs(root, &in_jail);
    let mut cov = Coverage::default();
    // Covered files with other hard links: where each lives, how many
    // links it has, and the covered paths found so far.
    let mut linked: HashMap<(u64, u64), Linked> = HashMap::new();
    for cmd in commands {
        if cmd.is_empty() || cmd.contains('/') {
            continue;
        }
        for (real_dir, spellings) in &dirs {
            // A name the jail cannot resolve (its symlink leaves the
            // jail's root) runs nothing there.
            let Some((real, meta)) = lookup(root, real_dir, cmd, &in_jail) else { continue };
            let prefix = real.parent().and_then(Path::parent).map(Path::to_path_buf);
            if meta.nlink() > 1 {
                let l = linked.entry((meta.dev(), meta.ino())).or_insert_with(|| Linked::new(&real, meta.nlink(), prefix.clone()));
                l.found.insert(real.clone());
            }
            for copy in private_copies(&real, &meta, cmd) {
                // A private copy can have hard links of its own (git built
                // with NO_CROSS_DIRECTORY_HARDLINKS links execdir/git-* to
                // execdir/git): looked for where the real file's are.
                note(&copy, true);
                if let Ok(m) = fs::metadata(&copy).map(|m| (m.dev(), m.ino(), m.nlink())) {
                    if m.2 > 1 {
                        let l = linked.entry((m.0, m.1)).or_insert_with(|| Linked::new(&copy, m.2, prefix.clone()));
                        l.found.insert(copy.clone());
                    }
                }
                cov.manifest.insert(jail_path(root, &copy), cmd.clone());
                cov.files.entry(copy).or_default().insert(cmd.clone());
            }
            cov.files.entry(real.clone()).or_default().insert(cmd.clone());
            cov.manifest.insert(jail_path(root, &real), cmd.clone());
            for dir in spellings {
                cov.manifest.insert(Path::new("/").join(dir).join(cmd), cmd.clone());
            }
        }
    }
    // Hard links to a covered file under other names: first in its own
    // directory, then (see below) in its prefix's libexec and lib, and in
    // the other PATH dirs only while some link is still unaccounted for
    // (reading /usr/bin whole costs more than the rest of the set-up).
    let own: BTreeSet<PathBuf> =
        linked.values().filter_map(|l| l.real.parent().map(Path::to_path_buf)).filter(|d| dirs.iter().any(|(r, _)| r == d)).collect();
    for dir in &own {
        scan_links(root, dir, &mut linked, &mut cov);
    }
    // Hard links outside the PATH dirs (git's libexec/git-core holds ~140):
    // hide each directory that holds one under an empty read-only tmpfs.
    // One mount instead of one per link; only the gated tool uses them, and
    // it runs in the executor's namespace, where they are uncovered.
    for ((dev, ino), l) in &mut linked {
        let mut missing = l.missing();
        let Some(prefix) = l.prefix.clone().filter(|_| missing > 0) else { continue };
        let mut budget = 20_000usize;
        let mut found = Vec::new();
        for dir in [prefix.join("libexec"), prefix.join("lib")] {
            find_link_dirs(&dir, *ino, *dev, 3, &mut budget, &mut missing, &mut found);
        }
        for d in found {
            cov.dirs.entry(d).or_default().extend(cov.files[&l.real].iter().cloned());
        }
        l.elsewhere = l.missing() - missing;
    }
    if linked.values().any(|l| l.missing() > l.elsewhere) {
        for (dir, _) in dirs.iter().filter(|(d, _)| !own.contains(d)) {
            scan_links(root, dir, &mut linked, &mut cov);
        }
    }
    // Relative to the root, and only what the jail has: the walks above
    // stay in it, and the scans under a covered file's prefix are cut
    // back here.
    let rel = |p: &Path| p.strip_prefix(root).map(Path::to_path_buf).ok();
    let keep = |m: BTreeMap<PathBuf, BTreeSet<String>>| -> BTreeMap<PathBuf, BTreeSet<String>> {
        m.into_iter().filter_map(|(p, c)| rel(&p).filter(|r| in_jail(r)).map(|r| (r, c))).collect()
    };
    Coverage {
        files: keep(cov.files),
        dirs: keep(cov.dirs),
        manifest: cov.manifest.into_iter().filter(|(p, _)| in_jail(p.strip_prefix("/").unwrap_or(p))).collect(),
    }
}

/// Installs /run/clawkeep (shim, socket, shims dir, manifest) under `base`
/// and covers what `cov` (planned from the tree the root is built from)
/// names. Returns what it covered.
pub fn install(base: &Path, g: &GateMounts, src: &GateSources, cov: &Coverage) -> Result<Vec<Mask>, SetupFailure> {
    // 0755 named: init builds the root under umask 0.
    let mk = |p: &Path| {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .mode(0o755)
            .recursive(true)
            .create(p)
            .map_err(|e| SetupFailure::new(Step::MakeNode, p.display().to_string(), &e))
    };
    let run = base.join("run/clawkeep");
    mk(&run.join("shims"))?;
    attach(&src.shim, &run.join("shim"))?;
    attach(&src.socket, &run.join("gate.sock"))?;
    // Every mask is a bind of the attached shim, now in this namespace.
    let shim_src = sys::cpath(&run.join("shim")).map_err(|e| SetupFailure::new(Step::MountBind, "shim", &e))?;
    for cmd in g.commands.iter().filter(|c| !c.is_empty() && !c.contains('/')) {
        symlink("../shim", run.join("shims").join(cmd)).map_err(|e| SetupFailure::new(Step::MakeNode, cmd.clone(), &e))?;
    }
    for file in cov.files.keys() {
        bind_file(&shim_src, &base.join(file))?;
    }
    for dir in cov.dirs.keys() {
        let dir = base.join(dir);
        let t = sys::cpath(&dir).map_err(|e| SetupFailure::new(Step::MaskPath, dir.display().to_string(), &e))?;
        sys::mount(
            Some(c"tmpfs"),
            &t,
            Some(c"tmpfs"),
            libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            Some(c"mode=0755,size=4k"),
        )
        .map_err(|e| SetupFailure::new(Step::MaskPath, dir.display().to_string(), &e))?;
    }
    let text: String = cov.manifest.iter().map(|(p, c)| format!("{}\t{c}\n", p.display())).collect();
    let mpath = run.join("manifest");
    // 0644 named: init builds the root under umask 0.
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&mpath)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| SetupFailure::new(Step::WriteFile, mpath.display().to_string(), &e))?;
    let mask = |dir: bool| {
        move |(t, commands): (&PathBuf, &BTreeSet<String>)| Mask { path: Path::new("/").join(t), commands: commands.clone(), dir }
    };
    Ok(cov.files.iter().map(mask(false)).chain(cov.dirs.iter().map(mask(true))).collect())
}

/// A covered file with more than one hard link.
struct Linked {
    real: PathBuf,
    nlink: u64,
    /// Where its links outside the PATH dirs are looked for (`libexec`
    /// and `lib` under it): the covered binary's prefix.
    prefix: Option<PathBuf>,
    /// Covered paths with this inode (each gets its own bind).
    found: BTreeSet<PathBuf>,
    /// Links found outside the PATH dirs (hidden with their directory).
    elsewhere: u64,
}

impl Linked {
    fn new(real: &Path, nlink: u64, prefix: Option<PathBuf>) -> Linked {
        Linked { real: real.to_path_buf(), nlink, prefix, found: BTreeSet::new(), elsewhere: 0 }
    }

    fn missing(&self) -> u64 {
        self.nlink.saturating_sub(self.found.len() as u64)
    }
}

/// The PATH dirs as they resolve under `base`: each real directory once,
/// with the spellings that reach it (`bin` and `usr/bin` on merged-/usr).
fn path_dirs(base: &Path, in_jail: &dyn Fn(&Path) -> bool) -> Vec<(PathBuf, Vec<&'static str>)> {
    let mut out: Vec<(PathBuf, Vec<&'static str>)> = Vec::new();
    for dir in PATH_DIRS {
        let Some(real) = resolve_within(base, Path::new(dir), in_jail) else { continue };
        note(&real, true);
        if !real.starts_with(base) || !real.is_dir() {
            continue;
        }
        match out.iter_mut().find(|(r, _)| *r == real) {
            Some((_, spellings)) => spellings.push(dir),
            None => out.push((real, vec![dir])),
        }
    }
    out
}

/// The regular file `cmd` in `real_dir` reaches under `base` (following
/// symlinks as the jail will, through what `in_jail` says it holds), with
/// its metadata.
fn lookup(base: &Path, real_dir: &Path, cmd: &str, in_jail: &dyn Fn(&Path) -> bool) -> Option<(PathBuf, fs::Metadata)> {
    let p = real_dir.join(cmd);
    note(&p, false);
    let lmeta = fs::symlink_metadata(&p).ok()?;
    let (real, meta) = if lmeta.file_type().is_symlink() {
        let real = resolve_within(base, p.strip_prefix(base).ok()?, in_jail)?;
        note(&real, true);
        let meta = fs::metadata(&real).ok()?;
        (real, meta)
    } else {
        (p, lmeta)
    };
    (meta.is_file() && real.starts_with(base)).then_some((real, meta))
}

/// Covers the hard links in PATH dir `dir` to the files in `linked`.
fn scan_links(root: &Path, dir: &Path, linked: &mut HashMap<(u64, u64), Linked>, cov: &mut Coverage) {
    note(dir, true);
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        // d_ino comes free with readdir; stat only the candidates.
        use std::os::unix::fs::DirEntryExt;
        if !linked.keys().any(|(_, ino)| *ino == e.ino()) {
            continue;
        }
        note(&e.path(), false);
        let Ok(m) = e.metadata() else { continue };
        let Some(l) = linked.get_mut(&(m.dev(), m.ino())) else { continue };
        if !m.is_file() || !l.found.insert(e.path()) {
            continue;
        }
        let cmds = cov.files[&l.real].clone();
        if let Some(cmd) = own_name(&cmds, &e.path()) {
            cov.manifest.insert(jail_path(root, &e.path()), cmd.to_string());
        }
        cov.files.entry(e.path()).or_default().extend(cmds);
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

    /// What the helper plans from a tree: every hard link in the PATH dirs
    /// (relative to the tree), the libexec dir of another hidden, the
    /// merged-/usr spelling in the manifest; and nothing for a name whose
    /// symlink leaves what the jail has (its /tmp is the jail's own).
    #[test]
    fn plan_covers_the_links_and_drops_what_the_jail_lacks() {
        let t = tempfile::tempdir().unwrap();
        let b = t.path();
        for d in ["usr/bin", "usr/sbin", "usr/libexec/tool-core", "tmp"] {
            fs::create_dir_all(b.join(d)).unwrap();
        }
        symlink("usr/bin", b.join("bin")).unwrap();
        fs::write(b.join("usr/bin/tool"), b"x").unwrap();
        for link in ["usr/bin/tool-alias", "usr/sbin/tool-admin", "usr/libexec/tool-core/tool-sub"] {
            fs::hard_link(b.join("usr/bin/tool"), b.join(link)).unwrap();
        }
        fs::write(b.join("tmp/real-other"), b"x").unwrap();
        symlink("/tmp/real-other", b.join("usr/bin/other")).unwrap();
        let source = crate::mounts::RootSource::Tree(b.to_path_buf());
        let cov = plan(b, &["tool".into(), "other".into(), "a/b".into()], |r| source.in_jail(r));
        let files: Vec<&Path> = cov.files.keys().map(PathBuf::as_path).collect();
        assert_eq!(files, [Path::new("usr/bin/tool"), Path::new("usr/bin/tool-alias"), Path::new("usr/sbin/tool-admin")]);
        assert!(cov.files.values().all(|c| c.iter().eq(["tool"])));
        assert_eq!(cov.dirs.keys().collect::<Vec<_>>(), [Path::new("usr/libexec/tool-core")]);
        for p in ["/usr/bin/tool", "/bin/tool", "/usr/bin/tool-alias", "/usr/sbin/tool-admin"] {
            assert_eq!(cov.manifest.get(Path::new(p)).map(String::as_str), Some("tool"), "{p}");
        }
        assert!(!cov.manifest.values().any(|c| c == "other"), "{:?}", cov.manifest);
        // Seen from the host, the symlink reaches a file: dropped because
        // the jail's /tmp is not the tree's.
        let everything = plan(b, &["other".into()], |_| true);
        assert!(everything.files.contains_key(Path::new("tmp/real-other")));
    }

    /// A chain that leaves what the jail holds and comes back resolves to
    /// nothing there, so it covers nothing; a hard link whose name is not
    /// UTF-8 is covered, and crosses the pipe intact.
    #[test]
    fn plan_follows_the_jail_and_keeps_names_that_are_not_utf8() {
        use std::os::unix::ffi::OsStrExt;
        let t = tempfile::tempdir().unwrap();
        let b = t.path();
        for d in ["usr/bin", "tmp"] {
            fs::create_dir_all(b.join(d)).unwrap();
        }
        fs::write(b.join("usr/bin/realtool"), b"x").unwrap();
        symlink("/tmp/t", b.join("usr/bin/tool2")).unwrap();
        symlink("/usr/bin/realtool", b.join("tmp/t")).unwrap();
        fs::write(b.join("usr/bin/tool"), b"x").unwrap();
        let odd = b.join("usr/bin").join(std::ffi::OsStr::from_bytes(b"tool-\xff"));
        fs::hard_link(b.join("usr/bin/tool"), &odd).unwrap();
        let source = crate::mounts::RootSource::Tree(b.to_path_buf());
        let cov = plan(b, &["tool2".into()], |r| source.in_jail(r));
        assert_eq!(cov, Coverage::default(), "the jail cannot resolve tool2");
        assert!(plan(b, &["tool2".into()], |_| true).files.contains_key(Path::new("usr/bin/realtool")));
        let cov = plan(b, &["tool".into()], |r| source.in_jail(r));
        let rel = odd.strip_prefix(b).unwrap();
        assert!(cov.files.contains_key(rel), "{:?}", cov.files);
        let (r, w) = crate::sys::pipe().unwrap();
        crate::protocol::write_frame(std::os::fd::AsRawFd::as_raw_fd(&w), &cov).unwrap();
        let back: Coverage = crate::protocol::read_frame(std::os::fd::AsRawFd::as_raw_fd(&r)).unwrap();
        assert_eq!(back, cov);
    }

    /// On the host's layout, a name that resolves through
    /// /etc/alternatives (as `nc`, `editor` or `awk` do on Debian) is
    /// covered: the walk passes /etc itself.
    #[test]
    fn plan_follows_debian_alternatives_on_the_host_layout() {
        let t = tempfile::tempdir().unwrap();
        let b = t.path();
        for d in ["usr/bin", "etc/alternatives"] {
            fs::create_dir_all(b.join(d)).unwrap();
        }
        fs::write(b.join("usr/bin/nc.openbsd"), b"x").unwrap();
        symlink("/etc/alternatives/nc", b.join("usr/bin/nc")).unwrap();
        symlink("/usr/bin/nc.openbsd", b.join("etc/alternatives/nc")).unwrap();
        let host = crate::mounts::RootSource::Host;
        let cov = plan(b, &["nc".into()], |r| host.in_jail(r));
        assert_eq!(cov.files.keys().collect::<Vec<_>>(), [Path::new("usr/bin/nc.openbsd")]);
        assert_eq!(cov.manifest.get(Path::new("/usr/bin/nc")).map(String::as_str), Some("nc"));
    }

    #[test]
    fn the_jail_has_only_what_its_root_binds_copies_or_links() {
        let host = crate::mounts::RootSource::Host;
        for (p, has) in [
            ("usr/bin/git", true),
            ("lib64/ld.so", true),
            ("etc/ssl/certs", true),
            ("etc/alternatives/awk", true),
            ("etc/shadow", false),
            ("etc", true),
            ("var/lib/x", false),
            ("home/u/bin/git", false),
            ("tmp/x", false),
            ("", false),
            ("usr/../var/x", false),
        ] {
            assert_eq!(host.in_jail(Path::new(p)), has, "host: {p}");
        }
        use std::os::unix::ffi::OsStrExt;
        assert!(host.in_jail(&Path::new("usr/bin").join(std::ffi::OsStr::from_bytes(b"git-\xff"))));
        let tree = crate::mounts::RootSource::Tree(PathBuf::from("/srv/root"));
        for (p, has) in [("usr/bin/git", true), ("opt/x", true), ("tmp/x", false), ("proc/1", false), ("workspace/x", false)] {
            assert_eq!(tree.in_jail(Path::new(p)), has, "tree: {p}");
        }
    }

    /// A stand-in for the helper binary's stamp.
    fn exe(t: &tempfile::TempDir) -> clawkeep_shim::root::Stamp {
        let p = t.path().join("helper");
        if !p.exists() {
            fs::write(&p, b"helper").unwrap();
        }
        clawkeep_shim::root::stamp(&p, true)
    }

    /// A tree where `tool` is gated: a file with a hard link beside it,
    /// reached through /bin too, and a lib dir its private copies would be
    /// in. The plan is kept (`fresh` zero: everything here is new).
    fn kept_plan() -> (tempfile::TempDir, PathBuf, Coverage, KeptPlan) {
        let t = tempfile::tempdir().unwrap();
        let b = t.path().join("root");
        fs::create_dir_all(b.join("usr/bin")).unwrap();
        fs::create_dir_all(b.join("usr/lib")).unwrap();
        fs::write(b.join("usr/bin/tool"), b"x").unwrap();
        fs::hard_link(b.join("usr/bin/tool"), b.join("usr/bin/tool-alias")).unwrap();
        symlink("usr/bin", b.join("bin")).unwrap();
        // Private copies would be looked for through this link too; its
        // target's parent is there, but nothing the walk lists.
        fs::create_dir_all(b.join("opt")).unwrap();
        symlink("../opt/libexec", b.join("usr/libexec")).unwrap();
        let cmds = ["tool".to_string(), "late".to_string()];
        let (cov, kept) = KeptPlan::plan(&b, &cmds, |_| true, std::time::Duration::ZERO, exe(&t));
        assert_eq!(cov, plan(&b, &cmds, |_| true), "recording changes nothing of the plan");
        // Changes below come a clock tick or more after the stamps.
        std::thread::sleep(std::time::Duration::from_millis(30));
        (t, b, cov, kept.expect("kept"))
    }

    #[test]
    fn a_kept_plan_is_used_while_nothing_it_looked_at_changed() {
        let (t, b, cov, kept) = kept_plan();
        assert!(cov.files.contains_key(Path::new("usr/bin/tool-alias")), "{cov:?}");
        let dir = t.path().join("cache");
        kept.write(&dir).unwrap();
        let cmds = ["tool".to_string(), "late".to_string()];
        let me = exe(&t);
        assert_eq!(KeptPlan::read(&dir, &cmds, me).unwrap().check().unwrap(), cov);
        assert!(KeptPlan::read(&dir, &["tool".to_string()], me).is_none(), "kept per command list");
        // Another helper binary (rebuilt: a new inode) plans afresh.
        fs::rename(t.path().join("helper"), t.path().join("old-helper")).unwrap();
        assert!(KeptPlan::read(&dir, &cmds, exe(&t)).is_none(), "kept by another binary");
        assert!(KeptPlan::read(&dir, &cmds, None).is_none(), "no stamp of the binary");
        // Taken as kept, not walked again: a mark put into the kept plan
        // comes back.
        let mut marked = KeptPlan::read(&dir, &cmds, me).unwrap();
        marked.coverage.manifest.insert(PathBuf::from("/marked"), "tool".into());
        marked.write(&dir).unwrap();
        assert!(KeptPlan::read(&dir, &cmds, me).unwrap().check().unwrap().manifest.contains_key(Path::new("/marked")));
        // A file cut short (a crash before it reached the disk) is no plan.
        fs::write(KeptPlan::file(&dir, &cmds), b"{\"format\":").unwrap();
        assert!(KeptPlan::read(&dir, &cmds, me).is_none());
        // What a writer that died left is cleared by the next write.
        let dead = KeptPlan::file(&dir, &cmds).with_extension("new-2147483646");
        fs::write(&dead, b"{").unwrap();
        marked.write(&dir).unwrap();
        assert!(!dead.exists());
        drop(b);
    }

    #[test]
    fn a_change_to_what_the_plan_looked_at_makes_it_walk_again() {
        type Change = fn(&Path);
        let changes: [(&str, Change); 6] = [
            ("a new hard link to a covered file", |b| fs::hard_link(b.join("usr/bin/tool"), b.join("usr/lib/tool.bak")).unwrap()),
            ("a gated name appearing in a PATH dir", |b| fs::write(b.join("usr/bin/late"), b"y").unwrap()),
            ("a PATH dir that was not there", |b| {
                fs::create_dir_all(b.join("usr/local/bin")).unwrap();
            }),
            ("a private copy appearing", |b| {
                fs::create_dir_all(b.join("usr/lib/tool")).unwrap();
            }),
            ("a private copy behind a dangling link appearing", |b| {
                fs::create_dir_all(b.join("opt/libexec")).unwrap();
                fs::write(b.join("opt/libexec/tool"), b"y").unwrap();
            }),
            ("a covered file replaced", |b| {
                fs::write(b.join("usr/bin/tool.new"), b"z").unwrap();
                fs::rename(b.join("usr/bin/tool.new"), b.join("usr/bin/tool")).unwrap();
            }),
        ];
        for (what, change) in changes {
            let (_t, b, _, kept) = kept_plan();
            change(&b);
            assert!(kept.check().is_none(), "{what}: the kept plan was still taken");
        }
        // Unchanged, it is taken.
        let (_t, _b, cov, kept) = kept_plan();
        assert_eq!(kept.check(), Some(cov));
    }

    #[test]
    fn a_plan_of_what_just_changed_is_not_kept() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("usr/bin")).unwrap();
        fs::write(t.path().join("usr/bin/tool"), b"x").unwrap();
        let (cov, kept) = KeptPlan::plan(t.path(), &["tool".to_string()], |_| true, crate::etc_cache::FRESH, exe(&t));
        assert!(kept.is_none());
        assert!(cov.files.contains_key(Path::new("usr/bin/tool")));
    }
}

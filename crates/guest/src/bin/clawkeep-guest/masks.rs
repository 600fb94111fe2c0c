//! Gate masks: this binary, read-only, in place of every gated command.
//!
//! Guarantee, once [`apply`] returns Ok: for every gated name, every file
//! that name reaches through the PATH directories of the guest root
//! (following symlinks), and every hard link to such a file in those
//! directories, is covered by a bind of `/init` — unless that file is a
//! multi-call binary (busybox) that ungated names also reach through
//! symlinks in those directories; then
//! the name's own directory entries (symlink or hard link) are covered
//! instead, so `sh` keeps working while `/bin/wget` reaches the gate. A
//! private copy of a covered file (`<prefix>/lib{,exec}/{cmd,cmd-core}/cmd`,
//! as Debian's git-core) is covered too, and a directory holding its other
//! hard links outside the PATH dirs is hidden under an empty tmpfs. The
//! pristine root stays reachable for root only, at [`REAL_ROOT`] (its
//! parent is 0700), to find an approved command's binary; each approved
//! job lifts its own command's masks in a mount namespace of its own
//! ([`Plan::owned_by`]). Same coverage rules as the jail's shims
//! (crates/sandbox/src/shims.rs).
//!
//! Mount propagation is made private first, so the masks never show in
//! the [`REAL_ROOT`] bind. A mount over a symlink is made through an
//! `O_PATH|O_NOFOLLOW` descriptor: path walks cross the mount before they
//! would follow the link (fs/namei.c, step_into).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Directories (relative to the root) searched for gated binaries.
pub const PATH_DIRS: &[&str] = &["usr/local/bin", "usr/local/sbin", "usr/bin", "usr/sbin", "bin", "sbin"];
/// Root-only parent of the pristine root.
pub const REAL_PARENT: &str = "/run/clawkeep.real";
/// The pristine (unmasked) root, for approved commands.
pub const REAL_ROOT: &str = "/run/clawkeep.real/root";
/// Where the gate socket and the manifest live (0755).
pub const GATE_DIR: &str = clawkeep_shim::JAIL_GATE_DIR;

/// What the gate covers in the guest: files (each a bind of this binary)
/// and directories (each under an empty read-only tmpfs: a package's
/// private directory holding more hard links of a gated binary, as
/// git-core), each with the gated commands that reach it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub files: BTreeMap<PathBuf, BTreeSet<String>>,
    pub dirs: BTreeMap<PathBuf, BTreeSet<String>>,
}

impl Plan {
    /// Where an approved `command`'s own job lifts the masks: its files
    /// and directories, and no other command's.
    pub fn owned_by(&self, command: &str) -> Vec<PathBuf> {
        // Hidden directories first: a covered file may sit in one.
        self.dirs.iter().chain(&self.files).filter(|(_, c)| c.contains(command)).map(|(p, _)| p.clone()).collect()
    }
}

/// Which guest paths to cover, and the commands that reach each one.
pub fn plan(base: &Path, commands: &[String]) -> Plan {
    let gated: BTreeSet<&str> = commands.iter().map(String::as_str).filter(|c| !c.is_empty() && !c.contains('/')).collect();
    // Each PATH directory once (a merged /usr makes /bin and /usr/bin one).
    let mut dirs: Vec<PathBuf> = PATH_DIRS.iter().filter_map(|d| resolve_in(base, Path::new(d))).filter(|d| d.is_dir()).collect();
    dirs.sort();
    dirs.dedup();
    // Symlinked names in those directories, by the file they reach (a
    // multi-call binary has many); hard links are the file itself.
    let mut names: HashMap<(u64, u64), BTreeSet<String>> = HashMap::new();
    let mut links: HashMap<(u64, u64), Vec<PathBuf>> = HashMap::new();
    for d in &dirs {
        let Ok(rd) = fs::read_dir(d) else { continue };
        for e in rd.flatten() {
            let Some(name) = e.file_name().to_str().map(str::to_string) else { continue };
            let Some(real) = resolve_in(base, &d.join(&name).strip_prefix(base).map(Path::to_path_buf).unwrap_or_default()) else {
                continue;
            };
            let Ok(m) = fs::metadata(&real) else { continue };
            if !m.is_file() {
                continue;
            }
            if e.file_type().is_ok_and(|t| t.is_file()) {
                links.entry((m.dev(), m.ino())).or_default().push(e.path());
            } else {
                names.entry((m.dev(), m.ino())).or_default().insert(name);
            }
        }
    }
    let mut out = Plan::default();
    let add = |map: &mut BTreeMap<PathBuf, BTreeSet<String>>, p: &Path, cmd: &str| {
        map.entry(guest_path(base, p)).or_default().insert(cmd.to_string());
    };
    for cmd in &gated {
        for d in &dirs {
            let entry = d.join(cmd);
            if fs::symlink_metadata(&entry).is_err() {
                continue;
            }
            let Some(real) = resolve_in(base, entry.strip_prefix(base).unwrap_or(&entry)) else { continue };
            let Ok(m) = fs::metadata(&real) else { continue };
            if !m.is_file() || !real.starts_with(base) {
                continue;
            }
            let key = (m.dev(), m.ino());
            let exclusive = names.get(&key).is_none_or(|n| n.iter().all(|x| gated.contains(x.as_str())));
            if exclusive {
                add(&mut out.files, &real, cmd);
                let in_path = links.get(&key).map_or(0, Vec::len) as u64;
                for l in links.get(&key).into_iter().flatten() {
                    add(&mut out.files, l, cmd);
                }
                // A private copy (Debian's /usr/lib/git-core/git), and the
                // directories holding hard links outside the PATH dirs.
                // Each inode to look for, with the links not found yet: the
                // real file, and a private copy with hard links of its own
                // (git built with NO_CROSS_DIRECTORY_HARDLINKS).
                let mut inodes = vec![(m.dev(), m.ino(), m.nlink().saturating_sub(in_path.max(1)))];
                for copy in private_copies(&real, &m, cmd) {
                    if let Ok(c) = fs::metadata(&copy) {
                        inodes.push((c.dev(), c.ino(), c.nlink().saturating_sub(1)));
                    }
                    add(&mut out.files, &copy, cmd);
                }
                for (dev, ino, mut missing) in inodes {
                    let Some(prefix) = real.parent().and_then(Path::parent).filter(|_| missing > 0) else { continue };
                    let (mut budget, mut found) = (20_000usize, Vec::new());
                    for root in [prefix.join("libexec"), prefix.join("lib")] {
                        find_link_dirs(&root, ino, dev, 3, &mut budget, &mut missing, &mut found);
                    }
                    for dir in found {
                        add(&mut out.dirs, &dir, cmd);
                    }
                }
            }
            add(&mut out.files, &entry, cmd);
        }
    }
    out
}

pub use clawkeep_shim::root::resolve_in;
use clawkeep_shim::root::{find_link_dirs, own_name, private_copies};

fn guest_path(base: &Path, p: &Path) -> PathBuf {
    Path::new("/").join(p.strip_prefix(base).unwrap_or(p))
}

/// The real binary for an approved `command`, inside [`REAL_ROOT`].
pub fn real_binary(command: &str) -> Option<PathBuf> {
    if command.is_empty() || command.contains('/') {
        return None;
    }
    let base = Path::new(REAL_ROOT);
    PATH_DIRS.iter().find_map(|d| {
        let p = resolve_in(base, &Path::new(d).join(command))?;
        let m = fs::metadata(&p).ok()?;
        (m.is_file() && m.permissions().mode() & 0o111 != 0 && p.starts_with(base)).then_some(p)
    })
}

fn cstr(p: &Path) -> Result<CString, String> {
    CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| format!("NUL byte in {}", p.display()))
}

fn mount(src: Option<&Path>, target: &Path, flags: libc::c_ulong, step: &str) -> Result<(), String> {
    let s = src.map(cstr).transpose()?;
    let t = cstr(target)?;
    // SAFETY: every pointer is a NUL-terminated string or null.
    let r =
        unsafe { libc::mount(s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()), t.as_ptr(), std::ptr::null(), flags, std::ptr::null()) };
    if r != 0 {
        return Err(format!("{step} {}: {}", target.display(), std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Private propagation, the root-only pristine root, then the masks and
/// the manifest. Returns what was covered.
pub fn apply(commands: &[String]) -> Result<Plan, String> {
    mount(None, Path::new("/"), libc::MS_REC | libc::MS_PRIVATE, "make private")?;
    let parent = Path::new(REAL_PARENT);
    fs::DirBuilder::new().mode(0o700).create(parent).map_err(|e| format!("mkdir {REAL_PARENT}: {e}"))?;
    fs::set_permissions(parent, fs::Permissions::from_mode(0o700)).map_err(|e| format!("chmod {REAL_PARENT}: {e}"))?;
    fs::create_dir(REAL_ROOT).map_err(|e| format!("mkdir {REAL_ROOT}: {e}"))?;
    mount(Some(Path::new("/")), Path::new(REAL_ROOT), libc::MS_BIND, "bind the real root at")?;
    mount(None, Path::new(REAL_ROOT), libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY, "read-only")?;
    let targets = plan(Path::new("/"), commands);
    for t in targets.files.keys() {
        cover(t)?;
    }
    for d in targets.dirs.keys() {
        let c = cstr(d)?;
        let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        // SAFETY: every pointer is a NUL-terminated string.
        if unsafe { libc::mount(c"tmpfs".as_ptr(), c.as_ptr(), c"tmpfs".as_ptr(), flags, c"mode=0755,size=4k".as_ptr().cast()) } != 0 {
            return Err(format!("hide {}: {}", d.display(), std::io::Error::last_os_error()));
        }
    }
    fs::DirBuilder::new().recursive(true).mode(0o755).create(GATE_DIR).map_err(|e| format!("mkdir {GATE_DIR}: {e}"))?;
    let text: String = targets.files.iter().filter_map(|(p, c)| own_name(c, p).map(|c| format!("{}\t{c}\n", p.display()))).collect();
    fs::write(clawkeep_shim::JAIL_MANIFEST, text).map_err(|e| format!("write {}: {e}", clawkeep_shim::JAIL_MANIFEST))?;
    Ok(targets)
}

/// Binds this binary over `target` (a file or a symlink), read-only.
fn cover(target: &Path) -> Result<(), String> {
    let c = cstr(target)?;
    // SAFETY: c is NUL-terminated; the fd is owned below.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(format!("open {}: {}", target.display(), std::io::Error::last_os_error()));
    }
    // SAFETY: open returned a fresh fd nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let at = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    mount(Some(Path::new("/proc/self/exe")), &at, libc::MS_BIND, "mask")?;
    // The walk now crosses the new mount: remount that one read-only.
    mount(None, target, libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY, "read-only mask")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn multi_call_binaries_are_masked_by_name_plain_ones_by_file() {
        let t = std::env::temp_dir().join(format!("ck-masks-{}", std::process::id()));
        let _ = fs::remove_dir_all(&t);
        let b = t.as_path();
        for d in ["bin", "usr/bin", "etc/alternatives", "usr/lib/git-core"] {
            fs::create_dir_all(b.join(d)).unwrap();
        }
        fs::write(b.join("bin/busybox"), b"bb").unwrap();
        for a in ["sh", "wget", "ls"] {
            symlink("busybox", b.join("bin").join(a)).unwrap();
        }
        symlink("/bin/wget", b.join("usr/bin/wget")).unwrap();
        fs::write(b.join("usr/bin/git"), b"git").unwrap();
        fs::hard_link(b.join("usr/bin/git"), b.join("usr/bin/git-upload-pack")).unwrap();
        fs::write(b.join("usr/bin/mawk"), b"awk").unwrap();
        symlink("/etc/alternatives/awk", b.join("usr/bin/awk")).unwrap();
        symlink("/usr/bin/mawk", b.join("etc/alternatives/awk")).unwrap();
        let cmds = ["wget", "git", "awk", "nope", "../x"].map(String::from);
        let p = plan(b, &cmds);
        assert!(p.dirs.is_empty(), "{p:?}");
        let got: Vec<(String, &str)> = p.files.iter().map(|(k, v)| (k.display().to_string(), v.first().unwrap().as_str())).collect();
        assert_eq!(
            got,
            [
                ("/bin/wget".to_string(), "wget"),
                // git's hard link is git; mawk's only symlinked name is
                // awk, so the file itself is covered too.
                ("/usr/bin/awk".into(), "awk"),
                ("/usr/bin/git".into(), "git"),
                ("/usr/bin/git-upload-pack".into(), "git"),
                ("/usr/bin/mawk".into(), "awk"),
                ("/usr/bin/wget".into(), "wget"),
            ]
        );
        assert!(!plan(b, &["wget".into()]).files.contains_key(Path::new("/bin/busybox")));
        fs::remove_dir_all(b).unwrap();
    }

    /// As in the jail: a private copy of a gated binary is covered, a
    /// directory holding its hard links outside the PATH dirs is hidden,
    /// and each belongs to its command alone.
    #[test]
    fn private_copies_and_hard_link_dirs_are_covered() {
        let t = std::env::temp_dir().join(format!("ck-masks-priv-{}", std::process::id()));
        let _ = fs::remove_dir_all(&t);
        let b = t.as_path();
        for d in ["usr/bin", "usr/lib/git-core", "usr/libexec/git-core/sub"] {
            fs::create_dir_all(b.join(d)).unwrap();
        }
        fs::write(b.join("usr/bin/git"), b"git binary").unwrap();
        fs::write(b.join("usr/lib/git-core/git"), b"git binary").unwrap();
        fs::write(b.join("usr/lib/git-core/git-remote-http"), b"other").unwrap();
        fs::hard_link(b.join("usr/bin/git"), b.join("usr/libexec/git-core/sub/git-push")).unwrap();
        fs::write(b.join("usr/bin/curl"), b"curl").unwrap();
        let p = plan(b, &["git".into(), "curl".into()]);
        let files: Vec<String> = p.files.keys().map(|k| k.display().to_string()).collect();
        assert_eq!(files, ["/usr/bin/curl", "/usr/bin/git", "/usr/lib/git-core/git"]);
        let dirs: Vec<String> = p.dirs.keys().map(|k| k.display().to_string()).collect();
        assert_eq!(dirs, ["/usr/libexec/git-core/sub"]);
        // Directories are lifted first: a covered file may sit in one.
        let git: Vec<String> = p.owned_by("git").iter().map(|k| k.display().to_string()).collect();
        assert_eq!(git, ["/usr/libexec/git-core/sub", "/usr/bin/git", "/usr/lib/git-core/git"]);
        // A hard link of the private copy (git's NO_CROSS_DIRECTORY_HARDLINKS
        // layout) hides the copy's directory too.
        fs::hard_link(b.join("usr/lib/git-core/git"), b.join("usr/lib/git-core/git-status")).unwrap();
        let p = plan(b, &["git".into(), "curl".into()]);
        let dirs: Vec<String> = p.dirs.keys().map(|k| k.display().to_string()).collect();
        assert_eq!(dirs, ["/usr/lib/git-core", "/usr/libexec/git-core/sub"]);
        assert_eq!(p.owned_by("curl"), [PathBuf::from("/usr/bin/curl")]);
        fs::remove_dir_all(b).unwrap();
    }
}

//! The jail's filesystem: a read-only root built on a tmpfs, then pivot_root.
//!
//! Runs in the jail's init (pid 1 of the new pid namespace, root of the new
//! user namespace, in a private mount namespace), except `prepare_etc`,
//! which a root launcher runs outside (see `PreparedEtc`). After
//! `build_root` returns Ok:
//! - `/` is a read-only tmpfs holding only what is listed here, and /etc a
//!   read-only mount of its own when it was made outside (a generation
//!   kept in the state dir, see `etc_cache`, or a tmpfs);
//! - system directories are read-only binds (host /usr, /bin, /lib*, /sbin
//!   and selected /etc files by default, or the entries of `--rootfs`);
//!   /root, /home, /var, /run and the host's /tmp are never bound;
//! - `/workspace` is the only writable host directory, `/tmp` a private
//!   tmpfs, `/dev` holds null, zero, full, random, urandom, tty and a private
//!   devpts, `/proc` belongs to the jail's pid namespace with /proc/sys
//!   read-only and kcore, sysrq-trigger and friends masked;
//! - the old root is detached: no path leads back to the host's tree.

use crate::error::{SetupFailure, Step};
use crate::idmap::{WorkspaceMount, AGENT_ID};
use crate::shims::{self, GateMounts};
use crate::sys::{self, cpath};
use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where the new root is assembled, inside the private mount namespace.
const BASE: &str = "/tmp";

/// Host top-level entries bound (or re-linked) into the default root.
const HOST_ROOT_ENTRIES: &[&str] = &["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// Host /etc entries the default root may see. Never shadow, gshadow,
/// sudoers, ssh keys or the host's passwd/group (generated instead).
pub(crate) const HOST_ETC_ENTRIES: &[&str] = &[
    "alternatives",
    "bash.bashrc",
    "ca-certificates",
    "ca-certificates.conf",
    "debian_version",
    "environment",
    "gai.conf",
    "host.conf",
    "inputrc",
    "issue",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "login.defs",
    "magic",
    "mime.types",
    "nsswitch.conf",
    "os-release",
    "profile",
    "protocols",
    "python3",
    "rpc",
    "services",
    "skel",
    "ssl",
    "terminfo",
    "timezone",
    "vim",
];

/// Entries of a `--rootfs` tree that the jail provides itself.
const ROOTFS_SKIP: &[&str] = &["dev", "proc", "sys", "tmp", "workspace"];

/// Files up to this size are copied into the root instead of bound.
pub(crate) const COPY_MAX: u64 = 1 << 20;

const DEV_NODES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Masked with /dev/null where present. The agent never holds a capability,
/// so the rest of Docker's masked list (acpi, scsi, irq, ...) gives it
/// nothing; each mount costs at set-up and at teardown.
const PROC_MASK_FILES: &[&str] = &["kcore", "sysrq-trigger", "keys", "timer_list", "sched_debug"];
const PROC_READONLY: &[&str] = &["sys"];

/// What the root is built from.
#[derive(Debug)]
pub enum RootSource {
    Host,
    Tree(PathBuf),
}

impl RootSource {
    /// The host directory the jail's root is built from.
    pub fn dir(&self) -> &Path {
        match self {
            RootSource::Host => Path::new("/"),
            RootSource::Tree(d) => d,
        }
    }

    /// Whether `rel` (relative to [`RootSource::dir`]) is in the jail's
    /// root: under an entry the root binds, copies or links, or /etc
    /// itself (a symlink through /etc/alternatives passes it).
    pub fn in_jail(&self, rel: &Path) -> bool {
        // Compared as bytes: a name need not be UTF-8.
        let parts: Option<Vec<&OsStr>> = rel
            .components()
            .map(|c| match c {
                std::path::Component::Normal(n) => Some(n),
                _ => None,
            })
            .collect();
        let Some(parts) = parts else { return false };
        let listed = |list: &[&str], name: Option<&&OsStr>| name.is_some_and(|n| list.iter().any(|e| *n == OsStr::new(e)));
        match self {
            RootSource::Host if parts.first() == Some(&OsStr::new("etc")) => parts.len() == 1 || listed(HOST_ETC_ENTRIES, parts.get(1)),
            RootSource::Host => listed(HOST_ROOT_ENTRIES, parts.first()),
            RootSource::Tree(_) => !parts.is_empty() && !listed(ROOTFS_SKIP, parts.first()),
        }
    }
}

/// A source opened (a small file: read) before the base tmpfs hides anything.
enum Entry {
    Dir(OsString, OwnedFd),
    /// Bound: a file too large to copy.
    File(OsString, OwnedFd),
    /// Copied: a small file's content and permission bits.
    Small(OsString, Vec<u8>, u32),
    Link(OsString, PathBuf),
}

type R<T> = Result<T, SetupFailure>;

/// The default root's /etc, made outside the jail: the generation of it
/// kept in the state dir (see `etc_cache`), or else a detached tmpfs
/// (mounted nowhere); either holds the jail's identity files, copies of
/// the small host files and links, and mount points for what init binds.
/// The launcher makes it as root once the helper has its config, on a
/// thread of its own while it waits for the start event's fsync, and sends
/// it on the /etc channel (fd 8). Init attaches it with one `move_mount`
/// instead of reading and writing each file on the start-up path, or, when
/// nothing comes, writes /etc itself.
#[derive(Debug)]
pub struct PreparedEtc {
    pub(crate) tree: OwnedFd,
    /// The host /etc entries init binds onto the mount points (directories,
    /// files too large to copy).
    pub(crate) binds: Vec<OsString>,
    /// The kept generation, locked shared so no build removes it while the
    /// run lasts (see [`PreparedEtc::into_held`]).
    pub(crate) held: Option<OwnedFd>,
}

impl PreparedEtc {
    /// Once sent: what must stay open until the run ends (the kept
    /// generation's lock), the tree itself closed.
    pub fn into_held(self) -> Option<OwnedFd> {
        self.held
    }
}

/// Makes [`PreparedEtc`]. Host root only (a new tmpfs needs CAP_SYS_ADMIN
/// in the host's user namespace). With `cache` (a dir in the state dir),
/// the generation kept there for the host's /etc as it is now, built if
/// need be; where none can be kept, or that fails, a fresh tmpfs. Host
/// files are read with the file-system identity of the jail's root
/// (`idmap::FsIdentity`): the jail sees no host file it could not have
/// read itself. A fresh tmpfs is written with that identity too, so the
/// jail's root owns it, as when init writes /etc itself.
pub fn prepare_etc(cache: Option<&Path>) -> R<PreparedEtc> {
    if let Some(Ok(Some(kept))) = cache.map(crate::etc_cache::prepared) {
        return Ok(kept);
    }
    let _as_jail_root =
        crate::idmap::FsIdentity::jail_root().map_err(fail(Step::SetIds, "the jail root's file-system ids (to read /etc)"))?;
    // Bounded as the base that holds /etc otherwise.
    let tree = sys::fsmount_tmpfs(&[(c"mode", c"0755"), (c"size", c"8m")], sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV)
        .map_err(fail(Step::MountTmpfs, "/etc (detached)"))?;
    // Made by name relative to the tree's root: it is mounted nowhere.
    let at = |name: &OsStr, make: &dyn Fn(libc::c_int, &CStr) -> libc::c_int| {
        let c = CString::new(name.as_bytes()).map_err(|_| SetupFailure::msg(Step::WriteFile, "/etc", "a name holds a NUL byte"))?;
        match make(tree.as_raw_fd(), &c) {
            r if r >= 0 => Ok(r),
            _ => Err(SetupFailure::new(Step::WriteFile, Path::new("/etc").join(name).display().to_string(), &io::Error::last_os_error())),
        }
    };
    // Modes are set outright: the launcher's umask must not narrow them
    // (under 077 the agent could not read /etc/passwd).
    let file = |name: &OsStr, body: &[u8], mode: u32| -> R<()> {
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC | libc::O_NOFOLLOW;
        // SAFETY: a valid descriptor and C string; the new descriptor is owned below.
        let fd = at(name, &|dir, c| unsafe { libc::openat(dir, c.as_ptr(), flags, mode) })?;
        // SAFETY: openat returned a fresh descriptor.
        let mut f = unsafe { fs::File::from_raw_fd(fd) };
        let to = Path::new("/etc").join(name);
        f.set_permissions(fs::Permissions::from_mode(mode)).map_err(fail(Step::WriteFile, &to))?;
        f.write_all(body).map_err(fail(Step::WriteFile, to))
    };
    for (name, body) in identity_files() {
        file(OsStr::new(name), body.as_bytes(), 0o644)?;
    }
    let mut binds = Vec::new();
    for e in open_entries(Path::new("/etc"), HOST_ETC_ENTRIES.iter().map(OsString::from))? {
        match e {
            Entry::Small(name, body, mode) => file(&name, &body, mode)?,
            Entry::Link(name, to) => {
                let to = CString::new(to.as_os_str().as_bytes())
                    .map_err(|_| SetupFailure::msg(Step::WriteFile, "/etc", "a link holds a NUL byte"))?;
                // SAFETY: valid C strings and descriptor.
                at(&name, &|dir, c| unsafe { libc::symlinkat(to.as_ptr(), dir, c.as_ptr()) })?;
            }
            Entry::Dir(name, _) => {
                // SAFETY: as above; fchmodat sets the mode the umask narrowed.
                at(&name, &|dir, c| unsafe {
                    match libc::mkdirat(dir, c.as_ptr(), 0o755) {
                        0 => libc::fchmodat(dir, c.as_ptr(), 0o755, 0),
                        r => r,
                    }
                })?;
                binds.push(name);
            }
            Entry::File(name, _) => {
                file(&name, b"", 0o644)?;
                binds.push(name);
            }
        }
    }
    Ok(PreparedEtc { tree, binds, held: None })
}

/// The first byte of a prepared /etc's message; the bind names follow,
/// each ended by a NUL.
const ETC_MSG: u8 = b'e';

/// Sends `etc` on `sock` (the launcher's end of the /etc channel).
pub fn send_prepared_etc(sock: RawFd, etc: &PreparedEtc) -> io::Result<()> {
    let mut msg = vec![ETC_MSG];
    for name in &etc.binds {
        msg.extend_from_slice(name.as_bytes());
        msg.push(0);
    }
    clawkeep_shim::fdpass::send_with_fds(sock, &msg, &[etc.tree.as_raw_fd()])
}

/// What init receives on the /etc channel: None when the launcher sent
/// nothing (it could not prepare it, or is gone), or sent something else
/// than a tree and names that are all on the list.
fn recv_prepared_etc(sock: RawFd) -> Option<PreparedEtc> {
    let mut buf = [0u8; 4096];
    let (n, mut fds) = clawkeep_shim::fdpass::recv_with_fds(sock, &mut buf).ok()?;
    let tree = fds.pop().filter(|_| fds.is_empty())?;
    let (&first, names) = buf[..n].split_first()?;
    if first != ETC_MSG || names.last().is_some_and(|&b| b != 0) {
        return None;
    }
    let binds: Vec<OsString> = names.split(|&b| b == 0).filter(|n| !n.is_empty()).map(|n| OsStr::from_bytes(n).to_os_string()).collect();
    binds.iter().all(|b| HOST_ETC_ENTRIES.iter().any(|e| b == e)).then_some(PreparedEtc { tree, binds, held: None })
}

fn fail(step: Step, target: impl AsRef<Path>) -> impl FnOnce(io::Error) -> SetupFailure {
    let t = target.as_ref().display().to_string();
    move |e| SetupFailure::new(step, t, &e)
}

fn c(p: impl AsRef<Path>) -> R<CString> {
    let p = p.as_ref();
    cpath(p).map_err(fail(Step::MountBind, p))
}

fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Builds the jail's root and pivots into it. `tmp_size` bounds /tmp.
/// Returns where the shim covers (or hides) a gated command's real binary.
pub fn build_root(
    source: &RootSource,
    workspace: WorkspaceMount,
    tmp_size: Option<u64>,
    gate: Option<&GateMounts>,
    gate_trees: Option<(OwnedFd, OwnedFd)>,
    coverage: Option<OwnedFd>,
    etc_chan: Option<OwnedFd>,
) -> R<Vec<shims::Mask>> {
    let target = |p: &str| PathBuf::from(BASE).join(p);
    sys::mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE, None).map_err(fail(Step::MountPrivate, "/"))?;

    let entries = open_sources(source)?;
    let gate_src = gate.map(|g| shims::open_sources(g, gate_trees)).transpose()?;
    // Opened before the base tmpfs covers /tmp, where a workspace may live.
    let ws_src = match &workspace {
        WorkspaceMount::Bind(p) => Some(crate::idmap::open_workspace(p)?.0),
        WorkspaceMount::Idmapped(_) | WorkspaceMount::Deferred(_) => None,
    };

    mount_tmpfs(Path::new(BASE), "mode=0755,size=8m", libc::MS_NOSUID | libc::MS_NODEV)?;
    // Mount points and generated files first: the base turns read-only below.
    for (dir, mode) in [("workspace", 0o755), ("tmp", 0o755), ("dev", 0o755), ("proc", 0o555)] {
        mkdir(&target(dir), mode)?;
    }
    for e in &entries {
        place(e, Path::new(BASE))?;
    }
    if matches!(source, RootSource::Host) {
        let at = target("etc");
        mkdir(&at, 0o755)?;
        // Prepared: only the binds are left (their mount points exist).
        let prepared = etc_chan.and_then(|ch| recv_prepared_etc(ch.as_raw_fd()));
        // One that cannot be attached is written here instead, as without.
        let at_c = c(&at)?;
        let names: Vec<OsString> = match prepared.filter(|p| sys::move_mount_to(&p.tree, &at_c).is_ok()) {
            Some(p) => p.binds,
            None => {
                write_identity_files(&at)?;
                HOST_ETC_ENTRIES.iter().map(OsString::from).collect()
            }
        };
        for e in &open_entries(Path::new("/etc"), names.into_iter())? {
            place(e, &at)?;
        }
    }
    drop(entries);
    let masks = match (gate, &gate_src) {
        (Some(g), Some(src)) => {
            // Planned by the helper meanwhile (see `shims::plan`).
            let fd = coverage.ok_or_else(|| SetupFailure::msg(Step::MountBind, "gated commands", "no coverage channel"))?;
            let cov: shims::Coverage = crate::protocol::read_frame(fd.as_raw_fd()).map_err(|e| {
                SetupFailure::msg(
                    Step::MountBind,
                    "gated commands",
                    format!("the helper's plan of what the shim covers did not arrive ({e})"),
                )
            })?;
            shims::install(Path::new(BASE), g, src, &cov)?
        }
        _ => Vec::new(),
    };
    drop(gate_src);
    // One recursive call makes the base and every system bind read-only,
    // nosuid and nodev (flags are only ever added, so locked ones stay).
    set_attrs(Path::new(BASE), sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV, true)?;

    // /workspace: the only writable host directory.
    let ws = target("workspace");
    let ws_c = c(&ws)?;
    let workspace = match workspace {
        // Waits here, as late as possible, for the helper's idmapped tree.
        WorkspaceMount::Deferred(sock) => match crate::pty::recv_fd(sock) {
            Ok(Some(tree)) => WorkspaceMount::Idmapped(tree),
            _ => return Err(SetupFailure::msg(Step::AttachWorkspace, "workspace", "the helper sent no workspace mount")),
        },
        other => other,
    };
    match workspace {
        WorkspaceMount::Deferred(_) => unreachable!("resolved above"),
        WorkspaceMount::Idmapped(tree) => sys::move_mount_to(&tree, &ws_c).map_err(fail(Step::AttachWorkspace, &ws))?,
        WorkspaceMount::Bind(_) => {
            let fd = ws_src.ok_or_else(|| SetupFailure::msg(Step::AttachWorkspace, "workspace", "not opened"))?;
            let src = CString::new(fd_path(&fd)).map_err(|_| SetupFailure::msg(Step::AttachWorkspace, "fd", "bad path"))?;
            sys::mount(Some(&src), &ws_c, None, libc::MS_BIND | libc::MS_REC, None).map_err(fail(Step::AttachWorkspace, &ws))?;
        }
    }
    set_attrs(&ws, sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV, true)?;

    let tmp = target("tmp");
    let size = tmp_size.map_or_else(|| "mode=1777".to_string(), |s| format!("mode=1777,size={s}"));
    mount_tmpfs(&tmp, &size, libc::MS_NOSUID | libc::MS_NODEV)?;

    build_dev(&target("dev"))?;
    build_proc(&target("proc"), &target("dev/null"))?;

    // pivot_root(".", ".") stacks the old root under the new one; detaching
    // it leaves no path back to the host's tree (see pivot_root(2), NOTES).
    std::env::set_current_dir(BASE).map_err(fail(Step::Chdir, BASE))?;
    sys::pivot_root(c".", c".").map_err(fail(Step::PivotRoot, BASE))?;
    sys::umount_detach(c".").map_err(fail(Step::UmountOldRoot, "."))?;
    std::env::set_current_dir("/").map_err(fail(Step::Chdir, "/"))?;
    Ok(masks)
}

fn open_sources(source: &RootSource) -> R<Vec<Entry>> {
    match source {
        RootSource::Host => open_entries(Path::new("/"), HOST_ROOT_ENTRIES.iter().map(OsString::from)),
        RootSource::Tree(dir) => {
            let names = fs::read_dir(dir)
                .map_err(fail(Step::OpenSource, dir))?
                .flatten()
                .map(|e| e.file_name())
                .filter(|n| !ROOTFS_SKIP.iter().any(|s| n == s))
                .collect::<Vec<_>>();
            open_entries(dir, names.into_iter())
        }
    }
}

/// How the root holds an entry it takes from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A symlink, re-made with its target.
    Link = b'L' as isize,
    /// A regular file up to [`COPY_MAX`], copied.
    Small = b'S' as isize,
    /// A directory, bound.
    Dir = b'D' as isize,
    /// A larger regular file, bound.
    Large = b'F' as isize,
}

/// How an entry with metadata `meta` is held; None for what the root
/// leaves out (devices, sockets, fifos).
pub(crate) fn kind_of(meta: &fs::Metadata) -> Option<Kind> {
    let ft = meta.file_type();
    match () {
        _ if ft.is_symlink() => Some(Kind::Link),
        _ if ft.is_file() && meta.len() <= COPY_MAX => Some(Kind::Small),
        _ if ft.is_dir() => Some(Kind::Dir),
        _ if ft.is_file() => Some(Kind::Large),
        _ => None,
    }
}

/// Opens every existing entry as an O_PATH fd (or reads its link target).
fn open_entries(dir: &Path, names: impl Iterator<Item = OsString>) -> R<Vec<Entry>> {
    let mut out = Vec::new();
    for name in names {
        let p = dir.join(&name);
        let Ok(meta) = fs::symlink_metadata(&p) else { continue };
        let Some(kind) = kind_of(&meta) else { continue };
        out.push(match kind {
            Kind::Link => Entry::Link(name, fs::read_link(&p).map_err(fail(Step::OpenSource, &p))?),
            Kind::Small => {
                let fd = sys::open_path(&p, libc::O_RDONLY | libc::O_NOFOLLOW).map_err(fail(Step::OpenSource, &p))?;
                let body = read_small(fs::File::from(fd), meta.len() as usize).map_err(fail(Step::OpenSource, &p))?;
                // Never setuid, setgid or sticky in the jail's copy.
                Entry::Small(name, body, meta.mode() & 0o777)
            }
            Kind::Dir | Kind::Large => {
                let fd = sys::open_path(&p, libc::O_PATH | libc::O_NOFOLLOW).map_err(fail(Step::OpenSource, &p))?;
                if kind == Kind::Dir {
                    Entry::Dir(name, fd)
                } else {
                    Entry::File(name, fd)
                }
            }
        });
    }
    Ok(out)
}

/// A small regular file's content, `len` bytes by its stat: one read of
/// `len + 1` bytes, where a short read is the end of the file (a regular
/// file reads short only there). `read_to_end` pays a stat, a seek and a
/// second read per file on top. A file that grew meanwhile is read on.
pub(crate) fn read_small(mut f: fs::File, len: usize) -> io::Result<Vec<u8>> {
    let mut body = vec![0u8; len + 1];
    let mut n = 0;
    loop {
        match f.read(&mut body[n..]) {
            Ok(r) => {
                n += r;
                if r == 0 || n < body.len() {
                    body.truncate(n);
                    return Ok(body);
                }
                body.resize(body.len() * 2, 0);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn place(e: &Entry, parent: &Path) -> R<()> {
    match e {
        Entry::Link(name, to) => symlink(to, parent.join(name)).map_err(fail(Step::MountBind, parent.join(name))),
        Entry::Dir(name, fd) => {
            let t = parent.join(name);
            // A prepared /etc has its mount points already.
            if !fs::symlink_metadata(&t).is_ok_and(|m| m.is_dir()) {
                mkdir(&t, 0o755)?;
            }
            bind(&fd_path(fd), &t)
        }
        // Small files are copied rather than bound: every mount costs at set-up
        // and again when the namespace is torn down, and the copy is as
        // read-only as a bind once the base turns read-only. One read and
        // one write each (std's copy tries copy_file_range and sendfile,
        // and fchmods: three times the system calls, ~40 us a file here).
        Entry::Small(name, body, mode) => {
            let t = parent.join(name);
            let mut out = fs::OpenOptions::new().write(true).create_new(true).mode(*mode).open(&t).map_err(fail(Step::WriteFile, &t))?;
            out.write_all(body).map_err(fail(Step::WriteFile, &t))
        }
        Entry::File(name, fd) => {
            let t = parent.join(name);
            // A prepared /etc has its mount points already (a kept one is read-only).
            if !fs::symlink_metadata(&t).is_ok_and(|m| m.is_file()) {
                touch(&t)?;
            }
            bind(&fd_path(fd), &t)
        }
    }
}

/// A recursive bind; made read-only with the whole base afterwards.
fn bind(src: &str, target: &Path) -> R<()> {
    let src_c = CString::new(src).map_err(|_| SetupFailure::msg(Step::MountBind, src, "bad path"))?;
    sys::mount(Some(&src_c), &c(target)?, None, libc::MS_BIND | libc::MS_REC, None).map_err(fail(Step::MountBind, target))
}

/// Adds mount attributes, recursively when asked; only ever adds
/// restrictions, so flags locked by a more privileged namespace stay.
fn set_attrs(target: &Path, attrs: u64, recursive: bool) -> R<()> {
    let flags = if recursive { sys::AT_RECURSIVE } else { 0 };
    sys::mount_setattr(libc::AT_FDCWD, &c(target)?, flags, attrs, None).map_err(fail(Step::RemountReadOnly, target))
}

fn mount_tmpfs(target: &Path, opts: &str, flags: libc::c_ulong) -> R<()> {
    let data = CString::new(opts).map_err(|_| SetupFailure::msg(Step::MountTmpfs, opts, "bad options"))?;
    sys::mount(Some(c"tmpfs"), &c(target)?, Some(c"tmpfs"), flags, Some(&data)).map_err(fail(Step::MountTmpfs, target))
}

fn mkdir(p: &Path, mode: u32) -> R<()> {
    fs::DirBuilder::new().mode(mode).create(p).map_err(fail(Step::MakeNode, p))
}

fn touch(p: &Path) -> R<()> {
    fs::OpenOptions::new().create(true).truncate(false).write(true).mode(0o644).open(p).map(drop).map_err(fail(Step::MakeNode, p))
}

/// The jail's own identity files: no host user names leak in.
fn write_identity_files(etc: &Path) -> R<()> {
    for (name, body) in identity_files() {
        let p = etc.join(name);
        let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o644).open(&p).map_err(fail(Step::WriteFile, &p))?;
        f.write_all(body.as_bytes()).map_err(fail(Step::WriteFile, &p))?;
    }
    Ok(())
}

pub(crate) fn identity_files() -> [(&'static str, String); 5] {
    [
        ("passwd", format!("root:x:0:0:root:/root:/usr/sbin/nologin\nagent:x:{AGENT_ID}:{AGENT_ID}:clawkeep agent:/workspace:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")),
        ("group", format!("root:x:0:\nagent:x:{AGENT_ID}:\nnogroup:x:65534:\n")),
        ("hosts", "127.0.0.1 localhost clawkeep\n::1 localhost ip6-localhost ip6-loopback\n".to_string()),
        ("hostname", "clawkeep\n".to_string()),
        ("resolv.conf", "# the jail's network is loopback-only\n".to_string()),
    ]
}

fn build_dev(dev: &Path) -> R<()> {
    mount_tmpfs(dev, "mode=0755,size=64k", libc::MS_NOSUID | libc::MS_NOEXEC)?;
    for node in DEV_NODES {
        let t = dev.join(node);
        touch(&t)?;
        let src = c(Path::new("/dev").join(node))?;
        sys::mount(Some(&src), &c(&t)?, None, libc::MS_BIND, None).map_err(fail(Step::MountBind, &t))?;
        set_attrs(&t, sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NOEXEC, false)?;
    }
    let pts = dev.join("pts");
    mkdir(&pts, 0o755)?;
    sys::mount(
        Some(c"devpts"),
        &c(&pts)?,
        Some(c"devpts"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some(c"newinstance,ptmxmode=0666,mode=0620"),
    )
    .map_err(fail(Step::MountDevpts, &pts))?;
    let links = [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ];
    for (name, to) in links {
        symlink(to, dev.join(name)).map_err(fail(Step::MakeNode, dev.join(name)))?;
    }
    set_attrs(dev, sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NOEXEC, false)
}

fn build_proc(proc: &Path, null: &Path) -> R<()> {
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    sys::mount(Some(c"proc"), &c(proc)?, Some(c"proc"), flags, None).map_err(fail(Step::MountProc, proc))?;
    let null_c = c(null)?;
    for f in PROC_MASK_FILES {
        let t = proc.join(f);
        if t.exists() {
            sys::mount(Some(&null_c), &c(&t)?, None, libc::MS_BIND, None).map_err(fail(Step::MaskPath, &t))?;
        }
    }
    for d in PROC_READONLY {
        let t = proc.join(d);
        if t.exists() {
            let tc = c(&t)?;
            sys::mount(Some(&tc), &tc, None, libc::MS_BIND | libc::MS_REC, None).map_err(fail(Step::MountBind, &t))?;
            set_attrs(&t, sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV | sys::MOUNT_ATTR_NOEXEC, true)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::read_small;
    use std::fs;

    #[test]
    fn a_small_file_is_read_whole_whatever_its_stat_said() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let body: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        fs::write(&p, &body).unwrap();
        // As stat said; stat behind a file that grew (read on, across the
        // doubled buffer); stat ahead of one that shrank; empty.
        for len in [5000, 0, 3, 2499, 2500, 9000] {
            assert_eq!(read_small(fs::File::open(&p).unwrap(), len).unwrap(), body, "len {len}");
        }
        fs::write(&p, b"").unwrap();
        assert_eq!(read_small(fs::File::open(&p).unwrap(), 0).unwrap(), Vec::<u8>::new());
    }
}

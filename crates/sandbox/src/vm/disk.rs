//! The VM's writable disks, built on the host with e2fsprogs.
//!
//! The workspace never reaches the guest as a shared directory: it is
//! copied into an ext4 image (`mkfs.ext4 -d`), attached as a disk, and
//! after the run read back with `debugfs rdump` (in user space: the host
//! kernel never mounts a filesystem the guest wrote) and mirrored into the
//! host directory without following any link the guest made.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

mod confine;
mod snapshot;
pub use confine::DISK_TOOL_ID;
use confine::{bound, bounded_rdump, confine, write_boundary, Confinement};
use snapshot::{snapshot_path, HostGuard, Snapshot};

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("{tool} was not found; install e2fsprogs")]
    ToolMissing { tool: &'static str },
    #[error("{tool} failed on {path}: {detail}")]
    ToolFailed { tool: &'static str, path: PathBuf, detail: String },
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: io::Error },
    #[error(
        "the workspace disk {path} unpacks to more than {limit} bytes (sparse files?); nothing was copied back, the disk is kept for inspection"
    )]
    TooLarge { path: PathBuf, limit: u64 },
}

/// e2fsprogs live in /sbin and /usr/sbin, which a user's PATH may lack.
fn tool(name: &'static str) -> Command {
    let dirs = std::env::var("PATH").unwrap_or_default();
    let found = dirs.split(':').chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"]).map(|d| Path::new(d).join(name)).find(|p| p.is_file());
    let mut cmd = Command::new(found.unwrap_or_else(|| PathBuf::from(name)));
    // They read guest-written disks: none of our environment (which may
    // hold the master key or a provider key) goes with them.
    cmd.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").env("LANG", "C");
    cmd
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> DiskError {
    let path = path.to_path_buf();
    move |source| DiskError::Io { op, path, source }
}

/// A fresh 0700 directory `<root>/<prefix>-<pid>-<n>`.
pub fn private_dir(root: &Path, prefix: &str) -> io::Result<PathBuf> {
    fs::create_dir_all(root)?;
    for n in 0..1000u32 {
        let p = root.join(format!("{prefix}-{}-{n}", std::process::id()));
        match fs::DirBuilder::new().mode(0o700).create(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(io::ErrorKind::AlreadyExists, "no free run directory name"))
}

use std::os::unix::fs::DirBuilderExt;

/// Removes run directories (`<prefix>-<pid>-<n>`) whose process is gone:
/// a clawkeep killed with -9 takes QEMU with it (PR_SET_PDEATHSIG) but
/// cannot remove its files; the next run does.
pub fn sweep_stale(root: &Path) {
    let Ok(rd) = fs::read_dir(root) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let mut parts = name.rsplitn(3, '-');
        let (Some(_n), Some(pid), Some(_prefix)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        if pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

fn run(tool: &'static str, path: &Path, cmd: &mut Command) -> Result<String, DiskError> {
    let out = cmd.output().map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => DiskError::ToolMissing { tool },
        _ => DiskError::ToolFailed { tool, path: path.into(), detail: e.to_string() },
    })?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        let detail = stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("no message").to_string();
        return Err(DiskError::ToolFailed { tool, path: path.into(), detail });
    }
    Ok(stderr)
}

fn mkfs(img: &Path, size: u64, from: Option<&Path>) -> Result<(), DiskError> {
    let f = fs::File::create(img).map_err(io_err("create", img))?;
    f.set_len(size).map_err(io_err("size", img))?;
    drop(f);
    let mut cmd = tool("mkfs.ext4");
    // -m 0: the agent sees the disk's real capacity, so a full disk is its
    // own ENOSPC.
    cmd.args(["-q", "-F", "-m", "0", "-b", "4096"]);
    if let Some(dir) = from {
        cmd.arg("-d").arg(dir);
    }
    cmd.arg(img);
    run("mkfs.ext4", img, &mut cmd).map(|_| ())
}

/// A sparse, empty ext4 image of `mib` MiB (the runtime disk at /var).
pub fn runtime_image(img: &Path, mib: u64) -> Result<(), DiskError> {
    mkfs(img, mib << 20, None)
}

/// Bytes the files under `dir` take (apparent sizes, plus a block per
/// entry for metadata).
pub fn used_bytes(dir: &Path) -> u64 {
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .map(|e| match e.path().symlink_metadata() {
            Ok(m) if m.is_dir() => 4096 + used_bytes(&e.path()),
            Ok(m) => 4096 + m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The workspace disk's size: max(256 MiB, twice what `dir` holds).
pub fn workspace_size(used: u64) -> u64 {
    let size = (256u64 << 20).max(used.saturating_mul(2));
    size.div_ceil(1 << 20) << 20
}

/// An ext4 image holding a copy of `dir` (the workspace disk at /workspace).
pub fn workspace_image(img: &Path, dir: &Path) -> Result<(), DiskError> {
    // What the host tree looked like when the guest got its copy: copy-back
    // then leaves alone whatever the host changed during the run.
    let snap = Snapshot::of(dir);
    mkfs(img, workspace_size(used_bytes(dir)), Some(dir))?;
    snap.save(&snapshot_path(img))
}

/// Reads the workspace disk back into `dir` after the run: files the
/// guest created or changed are written, files it removed are removed.
/// `scratch` is a private directory that is emptied afterwards.
pub fn copy_back(img: &Path, dir: &Path, scratch: &Path) -> Result<(), DiskError> {
    let out = scratch.join("workspace");
    fs::create_dir(&out).map_err(io_err("create", &out))?;
    // e2fsck and debugfs parse a filesystem the guest wrote: as root they
    // run as an unprivileged uid of their own that owns only this disk and
    // the scratch directory, and reach the disk through an inherited fd.
    let confined = Confinement::prepare(img, scratch, &out)?;
    let disk_arg = confined.as_ref().map_or_else(|| img.to_path_buf(), |c| c.disk_arg.clone());
    // Whoever runs them, they write only beneath scratch and to the disk.
    let boundary = write_boundary(img, scratch);
    // A guest killed before it unmounted leaves a journal to replay:
    // e2fsck does that and a full check (-f: a guest can mark a damaged
    // filesystem clean, and -p alone then checks nothing), repairing in
    // user space. Exit codes 1 and 2 mean "fixed"; 4 and above, "could not".
    let mut fsck = tool("e2fsck");
    fsck.arg("-fp").arg(&disk_arg);
    if confined.is_some() {
        confine(&mut fsck);
    }
    if let Some(b) = &boundary {
        bound(&mut fsck, b);
    }
    match fsck.output() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(DiskError::ToolMissing { tool: "e2fsck" }),
        Err(e) => return Err(DiskError::ToolFailed { tool: "e2fsck", path: img.into(), detail: e.to_string() }),
        Ok(o) if o.status.code().is_none_or(|c| c >= 4) => {
            let detail = String::from_utf8_lossy(&o.stdout).lines().rfind(|l| !l.trim().is_empty()).unwrap_or("damaged").to_string();
            return Err(DiskError::ToolFailed { tool: "e2fsck", path: img.into(), detail });
        }
        Ok(_) => {}
    }
    // Relative to its cwd: no path of ours is parsed by debugfs's command
    // line (a space would split it).
    let limit = fs::metadata(img).map_err(io_err("stat", img))?.len();
    let mut cmd = tool("debugfs");
    cmd.arg("-R").arg("rdump / workspace").arg(&disk_arg).current_dir(scratch);
    if confined.is_some() {
        confine(&mut cmd);
    }
    if let Some(b) = &boundary {
        bound(&mut cmd, b);
    }
    let stderr = match bounded_rdump(cmd, img, scratch, limit) {
        Ok(s) => s,
        Err(e) => {
            let _ = fs::remove_dir_all(&out);
            return Err(e);
        }
    };
    // debugfs exits 0 even when a dump fails: any line but its banner is
    // an error, and a partial dump must never delete host files.
    // Confined, debugfs cannot give the files their guest owners (copy-back
    // gives new files the workspace owner's anyway): that one is expected.
    let expected = |l: &str| confined.is_some() && l.contains("while changing ownership of");
    if let Some(line) = stderr.lines().find(|l| !l.trim().is_empty() && !l.starts_with("debugfs ") && !expected(l)) {
        let _ = fs::remove_dir_all(&out);
        return Err(DiskError::ToolFailed { tool: "debugfs", path: img.into(), detail: line.to_string() });
    }
    let owner = fs::metadata(dir).map(|m| (m.uid(), m.gid())).map_err(io_err("stat", dir))?;
    let keep_lost_found = dir.join("lost+found").symlink_metadata().is_ok();
    if !keep_lost_found {
        let _ = fs::remove_dir_all(out.join("lost+found"));
    }
    let snap_file = snapshot_path(img);
    let mut guard = HostGuard { root: dir, snap: Snapshot::load(&snap_file), kept: Vec::new() };
    let r = mirror(&out, dir, owner, !keep_lost_found, &mut guard);
    if !guard.kept.is_empty() {
        let shown: Vec<_> = guard.kept.iter().take(5).map(|p| p.display().to_string()).collect();
        let more = guard.kept.len().saturating_sub(shown.len());
        let more = if more > 0 { format!(" and {more} more") } else { String::new() };
        eprintln!(
            "clawkeep: warning: changed on the host during the run, kept as the host has them (the guest's version was not copied back): {}{more}",
            shown.join(", ")
        );
    }
    let _ = fs::remove_file(&snap_file);
    let _ = fs::remove_dir_all(&out);
    r
}

/// Whether two files hold the same bytes (read in chunks: workspace files
/// may be large).
/// Opens a file to read, refusing a symlink (one swapped in after the
/// directory was listed would otherwise be followed).
fn open_nofollow(p: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(p)
}

fn same_content(a: &Path, b: &Path) -> io::Result<bool> {
    use io::Read;
    let (mut fa, mut fb) = (open_nofollow(a)?, open_nofollow(b)?);
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(fb.read(&mut bb[..1])? == 0);
        }
        fb.read_exact(&mut bb[..n]).map_err(|_| io::Error::other("shorter"))?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

fn chown(p: &Path, (uid, gid): (u32, u32)) {
    let _ = std::os::unix::fs::lchown(p, Some(uid), Some(gid));
}

fn remove_any(p: &Path) -> Result<(), DiskError> {
    match p.symlink_metadata() {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p).map_err(io_err("remove", p)),
        Ok(_) => fs::remove_file(p).map_err(io_err("remove", p)),
        Err(_) => Ok(()),
    }
}

/// Makes `dst` look like `src` (regular files, directories, symlinks),
/// never following a symlink in `dst`.
fn mirror(src: &Path, dst: &Path, owner: (u32, u32), top_skip_lost_found: bool, guard: &mut HostGuard<'_>) -> Result<(), DiskError> {
    let entries: Vec<_> = fs::read_dir(src).map_err(io_err("read", src))?.flatten().collect();
    let names: std::collections::HashSet<_> = entries.iter().map(|e| e.file_name()).collect();
    for e in &entries {
        let (s, d) = (e.path(), dst.join(e.file_name()));
        let sm = s.symlink_metadata().map_err(io_err("stat", &s))?;
        let dm = d.symlink_metadata().ok();
        let mode = sm.permissions().mode() & 0o777;
        if sm.is_dir() {
            if dm.as_ref().is_some_and(|m| !m.is_dir()) {
                remove_any(&d)?;
            }
            if !d.exists() {
                fs::create_dir(&d).map_err(io_err("create", &d))?;
                chown(&d, owner);
            }
            let _ = fs::set_permissions(&d, fs::Permissions::from_mode(mode));
            mirror(&s, &d, owner, false, guard)?;
        } else if sm.file_type().is_symlink() {
            let target = fs::read_link(&s).map_err(io_err("readlink", &s))?;
            if dm.as_ref().is_some_and(|m| m.file_type().is_symlink()) && fs::read_link(&d).ok().as_ref() == Some(&target) {
                continue;
            }
            if !guard.may_touch(&d) {
                continue;
            }
            remove_any(&d)?;
            std::os::unix::fs::symlink(&target, &d).map_err(io_err("symlink", &d))?;
            chown(&d, owner);
        } else if sm.is_file() {
            let same = dm.as_ref().is_some_and(|m| m.is_file() && m.len() == sm.len()) && same_content(&s, &d).unwrap_or(false);
            if !same && guard.may_touch(&d) {
                let fresh = dm.as_ref().is_none_or(|m| !m.is_file());
                if fresh {
                    remove_any(&d)?;
                }
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .mode(mode)
                    .open(&d)
                    .map_err(io_err("write", &d))?;
                let mut from = open_nofollow(&s).map_err(io_err("read", &s))?;
                io::copy(&mut from, &mut f).map_err(io_err("write", &d))?;
                if fresh {
                    chown(&d, owner);
                }
            }
            let _ = fs::set_permissions(&d, fs::Permissions::from_mode(mode));
        }
    }
    for e in fs::read_dir(dst).map_err(io_err("read", dst))?.flatten() {
        let name = e.file_name();
        if top_skip_lost_found && name == "lost+found" {
            continue;
        }
        // Only what the disk can hold is mirrored: sockets, fifos and
        // devices on the host were never copied in, so are never removed.
        let plain = e.file_type().is_ok_and(|t| t.is_file() || t.is_dir() || t.is_symlink());
        if plain && !names.contains(&name) {
            guard.remove(&e.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

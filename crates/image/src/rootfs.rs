//! The root tree that becomes rootfs.img.
//!
//! Every tree gets what a read-only root needs to boot the guest: the mount
//! points (/proc, /sys, /dev, /tmp, /run, /workspace, /var) and
//! `/usr/bin/clawkeep-guest`. The default tree is busybox (static) with a
//! /bin symlink per applet, the host's dash as /bin/sh (with the libraries
//! it loads), /etc/passwd and /etc/group with root and agent (uid 1000).
//! `--from DIR` is copied (the source is never modified).
//!
//! Why dash: busybox's own shells run every applet they know by name
//! in-process (Debian's static build has FEATURE_SH_STANDALONE), before any
//! PATH lookup, so `wget` typed in busybox sh would never reach the gate's
//! mask on /bin/wget. dash looks names up in PATH and execs what it finds.
//! No busybox shell applet is linked; `busybox sh` by hand still works.

use crate::{ImageError, Result};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const GUEST_PATH: &str = "usr/bin/clawkeep-guest";
pub const AGENT_UID: u32 = 1000;

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nagent:x:1000:1000:agent:/workspace:/bin/sh\n";
const GROUP: &str = "root:x:0:\nagent:x:1000:\n";
/// Busybox applets that are shells: not linked in the default tree.
const BUSYBOX_SHELLS: &[&str] = &["sh", "ash", "hush", "bash"];

/// The host's dash, the default tree's /bin/sh.
pub fn find_dash() -> Option<PathBuf> {
    ["/bin/dash", "/usr/bin/dash"].into_iter().map(PathBuf::from).find(|p| p.is_file())
}

/// Builds the default tree in `root` (an empty directory).
pub fn default_tree(root: &Path, busybox: &Path, dash: &Path) -> Result<()> {
    for d in ["bin", "etc", "root", "usr/bin"] {
        mkdir(root, d, 0o755)?;
    }
    fs::set_permissions(root.join("root"), fs::Permissions::from_mode(0o700)).map_err(ImageError::io("chmod", root.join("root")))?;
    copy_file(busybox, &root.join("bin/busybox"), 0o755)?;
    copy_file(dash, &root.join("bin/dash"), 0o755)?;
    for lib in shared_libraries(dash)? {
        let rel = lib.strip_prefix("/").unwrap_or(&lib);
        let dst = root.join(rel);
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent).map_err(ImageError::io("create directory", parent))?;
        }
        if !dst.exists() {
            copy_file(&lib, &dst, 0o755)?;
        }
    }
    symlink("dash", root.join("bin/sh")).map_err(ImageError::io("create symlink", root.join("bin/sh")))?;
    for applet in applets(busybox)? {
        let link = root.join("bin").join(&applet);
        if applet != "busybox" && !BUSYBOX_SHELLS.contains(&applet.as_str()) && !link.exists() {
            symlink("busybox", &link).map_err(ImageError::io("create symlink", &link))?;
        }
    }
    write(root, "etc/passwd", PASSWD, 0o644)?;
    write(root, "etc/group", GROUP, 0o644)?;
    write(root, "etc/hostname", "clawkeep\n", 0o644)?;
    Ok(())
}

/// Adds the mount points and the guest binary to any tree.
pub fn add_essentials(root: &Path, guest: &Path) -> Result<()> {
    for d in ["proc", "sys", "dev", "run", "var", "workspace", "usr/bin", "etc"] {
        mkdir(root, d, 0o755)?;
    }
    mkdir(root, "tmp", 0o1777)?;
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).map_err(ImageError::io("chmod", root.join("tmp")))?;
    if is_root() {
        let ws = root.join("workspace");
        std::os::unix::fs::chown(&ws, Some(AGENT_UID), Some(AGENT_UID)).map_err(ImageError::io("chown", &ws))?;
    }
    let dst = root.join(GUEST_PATH);
    let _ = fs::remove_file(&dst);
    copy_file(guest, &dst, 0o755)
}

/// Copies the tree at `src` into `dst` (which exists): directories, regular
/// files, hard links (as hard links) and symlinks, with their modes (and
/// owners when run as root). Device nodes, sockets and fifos are skipped:
/// /dev is a devtmpfs at boot.
///
/// Hard links stay links: the gate recognises a gated binary's other names
/// by its inode (git's ~140 in git-core), and a copy per name would also
/// multiply the image.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    copy_tree_in(src, dst, is_root(), &mut HashMap::new())
}

fn copy_tree_in(src: &Path, dst: &Path, root: bool, seen: &mut HashMap<(u64, u64), PathBuf>) -> Result<()> {
    for entry in fs::read_dir(src).map_err(ImageError::io("list", src))? {
        let entry = entry.map_err(ImageError::io("list", src))?;
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        let meta = fs::symlink_metadata(&from).map_err(ImageError::io("inspect", &from))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            fs::create_dir(&to).map_err(ImageError::io("create directory", &to))?;
            copy_tree_in(&from, &to, root, seen)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&from).map_err(ImageError::io("read symlink", &from))?;
            symlink(&target, &to).map_err(ImageError::io("create symlink", &to))?;
        } else if ft.is_file() && meta.nlink() > 1 && seen.contains_key(&(meta.dev(), meta.ino())) {
            fs::hard_link(&seen[&(meta.dev(), meta.ino())], &to).map_err(ImageError::io("link", &to))?;
            continue;
        } else if ft.is_file() {
            fs::copy(&from, &to).map_err(ImageError::io("copy to", &to))?;
            if meta.nlink() > 1 {
                seen.insert((meta.dev(), meta.ino()), to.clone());
            }
        } else {
            continue;
        }
        if root {
            std::os::unix::fs::lchown(&to, Some(meta.uid()), Some(meta.gid())).map_err(ImageError::io("chown", &to))?;
        }
        if !ft.is_symlink() {
            fs::set_permissions(&to, fs::Permissions::from_mode(meta.mode() & 0o7777)).map_err(ImageError::io("chmod", &to))?;
        }
    }
    Ok(())
}

/// Bytes and inodes the tree at `root` needs on ext4 (4 KiB blocks); a
/// file with several hard links counts once.
pub fn usage(root: &Path) -> Result<(u64, u64)> {
    usage_in(root, &mut HashSet::new())
}

fn usage_in(root: &Path, linked: &mut HashSet<(u64, u64)>) -> Result<(u64, u64)> {
    let mut bytes = 0u64;
    let mut inodes = 1u64;
    for entry in fs::read_dir(root).map_err(ImageError::io("list", root))? {
        let entry = entry.map_err(ImageError::io("list", root))?;
        let meta = fs::symlink_metadata(entry.path()).map_err(ImageError::io("inspect", entry.path()))?;
        if meta.is_file() && meta.nlink() > 1 && !linked.insert((meta.dev(), meta.ino())) {
            continue;
        }
        inodes += 1;
        bytes += meta.len().div_ceil(4096) * 4096;
        if meta.is_dir() {
            let (b, i) = usage_in(&entry.path(), linked)?;
            bytes += b;
            inodes += i;
        }
    }
    Ok((bytes, inodes))
}

/// The busybox applet names (`busybox --list`).
fn applets(busybox: &Path) -> Result<Vec<String>> {
    let out = crate::tool::stdout("busybox", "busybox-static", busybox, std::process::Command::new(busybox).arg("--list"))?;
    Ok(String::from_utf8_lossy(&out)
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && !a.contains('/') && *a != "." && *a != "..")
        .map(str::to_string)
        .collect())
}

/// The shared objects `exe` loads, its ELF interpreter included, as
/// `ldd` (glibc's loader in trace mode) lists them: absolute host paths.
fn shared_libraries(exe: &Path) -> Result<Vec<PathBuf>> {
    let out = crate::tool::stdout("ldd", "libc-bin", exe, std::process::Command::new("ldd").arg(exe).env_clear())?;
    let libs = parse_ldd(&String::from_utf8_lossy(&out));
    if libs.is_empty() {
        return Err(ImageError::ToolFailed { tool: "ldd", path: exe.into(), detail: "listed no libraries for a dynamic shell".into() });
    }
    Ok(libs)
}

/// `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` and
/// `/lib64/ld-linux-x86-64.so.2 (0x...)` lines; the vDSO has no file.
fn parse_ldd(out: &str) -> Vec<PathBuf> {
    out.lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = l.split_once("=>").map_or(l, |(_, p)| p.trim());
            let path = path.split(" (").next()?.trim();
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

fn mkdir(root: &Path, rel: &str, mode: u32) -> Result<()> {
    let p = root.join(rel);
    match fs::symlink_metadata(&p) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(ImageError::ToolFailed {
            tool: "rootfs",
            path: p,
            detail: "exists and is not a directory; the image needs it as a mount point".into(),
        }),
        Err(_) => {
            fs::create_dir_all(&p).map_err(ImageError::io("create directory", &p))?;
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).map_err(ImageError::io("chmod", &p))
        }
    }
}

fn write(root: &Path, rel: &str, text: &str, mode: u32) -> Result<()> {
    let p = root.join(rel);
    fs::write(&p, text).map_err(ImageError::io("write", &p))?;
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).map_err(ImageError::io("chmod", &p))
}

fn copy_file(src: &Path, dst: &Path, mode: u32) -> Result<()> {
    fs::copy(src, dst).map_err(ImageError::io("copy to", dst))?;
    fs::set_permissions(dst, fs::Permissions::from_mode(mode)).map_err(ImageError::io("chmod", dst))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_tree_has_busybox_users_and_mount_points() {
        let Some(bb) = crate::build::find_busybox() else {
            println!("skipped: default_tree_has_busybox_users_and_mount_points: busybox not installed");
            return;
        };
        let t = tempfile::tempdir().unwrap();
        let Some(dash) = find_dash() else {
            println!("skipped: default_tree_has_busybox_users_and_mount_points: dash not installed");
            return;
        };
        default_tree(t.path(), &bb, &dash).unwrap();
        add_essentials(t.path(), &bb).unwrap();
        // sh is dash, with its loader and libc; no busybox shell is linked.
        assert_eq!(fs::read_link(t.path().join("bin/sh")).unwrap(), Path::new("dash"));
        assert!(t.path().join("lib64/ld-linux-x86-64.so.2").is_file() || t.path().join("lib/ld-linux-x86-64.so.2").is_file());
        assert!(fs::metadata(t.path().join("lib/x86_64-linux-gnu/libc.so.6")).unwrap().len() > 100_000);
        for shell in BUSYBOX_SHELLS {
            assert!(fs::symlink_metadata(t.path().join("bin").join(shell)).is_err() || *shell == "sh", "{shell}");
        }
        assert_eq!(fs::read_link(t.path().join("bin/wget")).unwrap(), Path::new("busybox"));
        assert!(fs::read_to_string(t.path().join("etc/passwd")).unwrap().contains("agent:x:1000:1000:"));
        for d in ["proc", "sys", "dev", "tmp", "workspace", "var"] {
            assert!(t.path().join(d).is_dir(), "{d}");
        }
        assert!(t.path().join(GUEST_PATH).is_file());
        let (bytes, inodes) = usage(t.path()).unwrap();
        assert!(bytes > 0 && inodes > 10);
    }

    #[test]
    fn ldd_lines_become_library_paths() {
        let out = "\tlinux-vdso.so.1 (0x00007ffc5a9f0000)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2b1c000000)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f2b1c3c0000)\n\tlibfoo.so => not found\n";
        assert_eq!(parse_ldd(out), [PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"), PathBuf::from("/lib64/ld-linux-x86-64.so.2")]);
    }

    #[test]
    fn copy_tree_keeps_symlinks_and_modes() {
        let t = tempfile::tempdir().unwrap();
        let (src, dst) = (t.path().join("s"), t.path().join("d"));
        fs::create_dir_all(src.join("a")).unwrap();
        fs::write(src.join("a/x"), "x").unwrap();
        fs::set_permissions(src.join("a/x"), fs::Permissions::from_mode(0o751)).unwrap();
        symlink("/etc/passwd", src.join("l")).unwrap();
        fs::create_dir(&dst).unwrap();
        copy_tree(&src, &dst).unwrap();
        assert_eq!(fs::read_to_string(dst.join("a/x")).unwrap(), "x");
        assert_eq!(fs::metadata(dst.join("a/x")).unwrap().permissions().mode() & 0o777, 0o751);
        assert_eq!(fs::read_link(dst.join("l")).unwrap(), Path::new("/etc/passwd"));
    }

    #[test]
    fn copy_tree_keeps_hard_links_and_usage_counts_them_once() {
        let t = tempfile::tempdir().unwrap();
        let (src, dst) = (t.path().join("s"), t.path().join("d"));
        fs::create_dir_all(src.join("usr/bin")).unwrap();
        fs::create_dir_all(src.join("usr/lib/git-core")).unwrap();
        fs::write(src.join("usr/bin/git"), vec![7u8; 10_000]).unwrap();
        fs::hard_link(src.join("usr/bin/git"), src.join("usr/lib/git-core/git-push")).unwrap();
        fs::hard_link(src.join("usr/bin/git"), src.join("usr/lib/git-core/git-status")).unwrap();
        fs::create_dir(&dst).unwrap();
        copy_tree(&src, &dst).unwrap();
        let m = fs::metadata(dst.join("usr/bin/git")).unwrap();
        assert_eq!(m.nlink(), 3);
        for l in ["usr/lib/git-core/git-push", "usr/lib/git-core/git-status"] {
            assert_eq!(fs::metadata(dst.join(l)).unwrap().ino(), m.ino(), "{l}");
        }
        // The links add nothing: the same as the tree without them.
        let with_links = usage(&dst).unwrap();
        for l in ["usr/lib/git-core/git-push", "usr/lib/git-core/git-status"] {
            fs::remove_file(dst.join(l)).unwrap();
        }
        assert_eq!(with_links, usage(&dst).unwrap());
    }
}

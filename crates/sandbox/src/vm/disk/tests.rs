//! Tests of the workspace disks (they need e2fsprogs; skipped without).
#![allow(clippy::unwrap_used)]

use super::snapshot::Snapshot;
use super::*;

#[test]
fn a_sparse_file_cannot_blow_up_on_the_host() {
    if tool("mkfs.ext4").get_program() == "mkfs.ext4" || tool("debugfs").get_program() == "debugfs" {
        println!("skipped: a_sparse_file_cannot_blow_up_on_the_host: e2fsprogs not installed");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (src, dest, scratch) = (t.path().join("src"), t.path().join("dest"), t.path().join("scratch"));
    for d in [&src, &dest, &scratch] {
        fs::create_dir(d).unwrap();
    }
    // 4 GiB of holes in a 64 MiB disk, as a guest's `truncate -s 4G` leaves it.
    fs::File::create(src.join("holes")).unwrap().set_len(4 << 30).unwrap();
    fs::write(dest.join("mine"), "host data").unwrap();
    let img = t.path().join("ws.img");
    mkfs(&img, 64 << 20, Some(&src)).unwrap();
    let err = copy_back(&img, &dest, &scratch).unwrap_err();
    assert!(matches!(err, DiskError::TooLarge { .. }), "{err}");
    assert!(!scratch.join("workspace").exists(), "the partial dump is removed");
    assert_eq!(fs::read_to_string(dest.join("mine")).unwrap(), "host data");
    assert!(!dest.join("holes").exists());
}

#[test]
fn copy_back_works_under_a_path_with_spaces() {
    if tool("mkfs.ext4").get_program() == "mkfs.ext4" || tool("debugfs").get_program() == "debugfs" {
        println!("skipped: copy_back_works_under_a_path_with_spaces: e2fsprogs not installed");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("a dir with spaces");
    let (src, dest, scratch) = (base.join("src"), base.join("dest"), base.join("scr atch"));
    for d in [&src, &dest, &scratch] {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(src.join("new.txt"), "from the guest").unwrap();
    let img = base.join("ws.img");
    workspace_image(&img, &src).unwrap();
    // Not the tree the image came from: no snapshot applies.
    fs::remove_file(snapshot_path(&img)).unwrap();
    copy_back(&img, &dest, &scratch).unwrap();
    assert_eq!(fs::read_to_string(dest.join("new.txt")).unwrap(), "from the guest");
}

#[test]
fn what_the_host_changed_during_the_run_is_kept() {
    if tool("mkfs.ext4").get_program() == "mkfs.ext4" || tool("debugfs").get_program() == "debugfs" {
        println!("skipped: what_the_host_changed_during_the_run_is_kept: e2fsprogs not installed");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (host, guest, scratch) = (t.path().join("host"), t.path().join("guest"), t.path().join("scratch"));
    for d in [&host, &guest, &scratch] {
        fs::create_dir(d).unwrap();
    }
    fs::write(host.join("a.txt"), "orig").unwrap();
    fs::write(host.join("b.txt"), "b").unwrap();
    let snap = Snapshot::of(&host);
    // What the guest left on its disk: a.txt changed, b.txt removed, c.txt new.
    fs::write(guest.join("a.txt"), "guest").unwrap();
    fs::write(guest.join("c.txt"), "new from guest").unwrap();
    let img = t.path().join("ws.img");
    workspace_image(&img, &guest).unwrap();
    snap.save(&snapshot_path(&img)).unwrap();
    // Meanwhile on the host: b.txt edited, d.txt created.
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(host.join("b.txt"), "host edit").unwrap();
    fs::write(host.join("d.txt"), "host new").unwrap();
    copy_back(&img, &host, &scratch).unwrap();
    assert_eq!(fs::read_to_string(host.join("a.txt")).unwrap(), "guest");
    assert_eq!(fs::read_to_string(host.join("c.txt")).unwrap(), "new from guest");
    assert_eq!(fs::read_to_string(host.join("b.txt")).unwrap(), "host edit", "the host's edit wins over the guest's removal");
    assert_eq!(fs::read_to_string(host.join("d.txt")).unwrap(), "host new", "a file the host made is not removed");
    assert!(!snapshot_path(&img).exists());
}

#[test]
fn sweep_removes_only_dirs_of_dead_processes() {
    let t = tempfile::tempdir().unwrap();
    let mine = private_dir(t.path(), "vm").unwrap();
    let dead = t.path().join(format!("vm-{}-0", u32::MAX - 1));
    let other = t.path().join("unrelated");
    fs::create_dir(&dead).unwrap();
    fs::create_dir(&other).unwrap();
    sweep_stale(t.path());
    assert!(mine.exists() && other.exists());
    assert!(!dead.exists());
}

#[test]
fn workspace_size_is_at_least_256_mib_and_twice_the_data() {
    assert_eq!(workspace_size(0), 256 << 20);
    assert_eq!(workspace_size(200 << 20), 400 << 20);
    assert_eq!(workspace_size((200 << 20) + 1) % (1 << 20), 0);
}

#[test]
fn mirror_writes_changes_removes_deleted_and_never_follows_links() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst, outside) = (t.path().join("s"), t.path().join("d"), t.path().join("outside"));
    for d in [&src, &dst, &outside] {
        fs::create_dir(d).unwrap();
    }
    fs::write(src.join("new.txt"), "new").unwrap();
    fs::create_dir(src.join("sub")).unwrap();
    fs::write(src.join("sub/f"), "f").unwrap();
    fs::write(dst.join("gone.txt"), "x").unwrap();
    // The host has a symlink where the guest now has a directory.
    std::os::unix::fs::symlink(&outside, dst.join("sub")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", src.join("l")).unwrap();
    let mut guard = HostGuard { root: &dst, snap: None, kept: Vec::new() };
    mirror(&src, &dst, (0, 0), true, &mut guard).unwrap();
    assert_eq!(fs::read_to_string(dst.join("new.txt")).unwrap(), "new");
    assert!(!dst.join("gone.txt").exists());
    assert!(dst.join("sub").symlink_metadata().unwrap().is_dir());
    assert_eq!(fs::read_to_string(dst.join("sub/f")).unwrap(), "f");
    assert!(fs::read_dir(&outside).unwrap().next().is_none(), "wrote through a host symlink");
    assert_eq!(fs::read_link(dst.join("l")).unwrap(), PathBuf::from("/etc/passwd"));
}

#[test]
fn the_disk_tools_run_unprivileged() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: the_disk_tools_run_unprivileged: needs root (CI runs as root)");
        return;
    }
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", "id -u; id -G; grep NoNewPrivs /proc/self/status"]);
    confine(&mut cmd);
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], DISK_TOOL_ID.to_string(), "{text}");
    assert_eq!(lines[1], DISK_TOOL_ID.to_string(), "no supplementary groups: {text}");
    assert!(lines[2].ends_with('1'), "{text}");
}

#[test]
fn the_disk_tools_get_none_of_our_environment() {
    let out = tool("env").output().unwrap();
    let mut names: Vec<String> =
        String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.split_once('=').map(|(k, _)| k.to_string())).collect();
    names.sort();
    assert_eq!(names, ["LANG", "PATH"]);
}

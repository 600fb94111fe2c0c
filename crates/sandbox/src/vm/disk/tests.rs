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

/// A disk whose directory entry is named `../../escape` (as a guest with
/// raw access to its disk can write it), marked clean: copy-back writes
/// nothing outside its scratch directory.
#[test]
fn a_crafted_entry_name_cannot_climb_out_of_the_dump() {
    if tool("mkfs.ext4").get_program() == "mkfs.ext4" || tool("debugfs").get_program() == "debugfs" {
        println!("skipped: a_crafted_entry_name_cannot_climb_out_of_the_dump: e2fsprogs not installed");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (src, dest, scratch) = (t.path().join("src"), t.path().join("dest"), t.path().join("scratch"));
    for d in [&src, &dest, &scratch] {
        fs::create_dir(d).unwrap();
    }
    // Writable by anyone, as /tmp is: the tools' own uid (when root runs
    // them) does not stop a write here, only their boundary does.
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::write(src.join("AAAAAAAAAAAA"), "from the guest").unwrap();
    let img = t.path().join("ws.img");
    fs::File::create(&img).unwrap().set_len(32 << 20).unwrap();
    // No directory checksums, so the patched name is all a check can find.
    let out = tool("mkfs.ext4").args(["-q", "-F", "-O", "^metadata_csum", "-d"]).arg(&src).arg(&img).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut bytes = fs::read(&img).unwrap();
    let name = b"AAAAAAAAAAAA";
    let at: Vec<usize> = bytes.windows(name.len()).enumerate().filter(|(_, w)| w == name).map(|(i, _)| i).collect();
    assert!(!at.is_empty());
    for i in at {
        bytes[i..i + name.len()].copy_from_slice(b"../../escape");
    }
    fs::write(&img, bytes).unwrap();
    let _ = copy_back(&img, &dest, &scratch);
    assert!(!t.path().join("escape").exists(), "the guest's entry was written outside the dump");
    assert!(!t.path().join("dest/escape").exists());
}

/// The disk tools' write boundary: inside their scratch directory they
/// write, anywhere else they cannot (a tempdir stands in for the host).
#[test]
fn the_disk_tools_write_only_beneath_scratch() {
    if crate::landlock::kernel_abi() == 0 {
        println!("skipped: the_disk_tools_write_only_beneath_scratch: no Landlock in this kernel");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (scratch, img) = (t.path().join("scratch"), t.path().join("ws.img"));
    fs::create_dir(&scratch).unwrap();
    fs::write(&img, "").unwrap();
    let boundary = write_boundary(&img, &scratch).expect("a ruleset");
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", "echo in > scratch/ok; echo disk >> ws.img; echo out > outside; echo done"]).current_dir(t.path());
    bound(&mut cmd, &boundary);
    let out = cmd.output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "done\n");
    assert_eq!(fs::read_to_string(scratch.join("ok")).unwrap(), "in\n");
    assert_eq!(fs::read_to_string(&img).unwrap(), "disk\n");
    assert!(!t.path().join("outside").exists(), "wrote outside its boundary");
}

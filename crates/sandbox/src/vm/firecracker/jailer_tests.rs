use super::*;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn unjailed_chroot_uses_host_paths_and_is_removed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("vm-1");
    let mut c = Chroot::create(&dir, None).expect("create");
    assert!(c.run_dir().is_dir());
    let kernel = tmp.path().join("vmlinux");
    fs::write(&kernel, b"elf").expect("write");
    assert_eq!(c.add_read_only(&kernel, "vmlinux").expect("ro"), kernel);
    assert_eq!(c.add_writable(&kernel, "w").expect("rw"), kernel);
    assert_eq!(c.install_binary(Path::new("/usr/bin/fc")).expect("bin"), PathBuf::from("/usr/bin/fc"));
    assert_eq!(c.vmm_path(&c.run_dir().join("s")), dir.join("root/run/s"));
    c.remove().expect("remove");
    assert!(!dir.exists());
    c.remove().expect("idempotent");
    assert!(kernel.exists());
}

#[test]
fn dedicated_ids_are_outside_the_jail_range() {
    let ids = VmmIds::dedicated(3);
    assert_eq!(ids, VmmIds { uid: FIRECRACKER_UID_BASE + 3, gid: FIRECRACKER_UID_BASE + 3 });
    assert!(ids.uid > JAIL_UID_BASE + 65_536);
}

#[test]
fn jailed_chroot_links_copies_lends_and_gives_back() {
    if !is_root() {
        eprintln!("skipped: needs root (chown, mknod)");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let ids = VmmIds::dedicated(9);
    let mut c = Chroot::create(&tmp.path().join("vm"), Some(ids)).expect("create");
    assert_eq!(fs::metadata(c.run_dir()).expect("run").uid(), ids.uid);

    let public = tmp.path().join("vmlinux");
    fs::write(&public, b"kernel").expect("write");
    fs::set_permissions(&public, fs::Permissions::from_mode(0o644)).expect("chmod");
    assert_eq!(c.add_read_only(&public, "vmlinux").expect("ro"), PathBuf::from("/vmlinux"));
    let linked = fs::metadata(c.root().join("vmlinux")).expect("meta");
    assert_eq!(linked.ino(), fs::metadata(&public).expect("meta").ino(), "world-readable input is hard-linked");
    assert_eq!(linked.uid(), 0, "a shared input keeps its owner");

    let private = tmp.path().join("rootfs");
    fs::write(&private, b"fs").expect("write");
    fs::set_permissions(&private, fs::Permissions::from_mode(0o600)).expect("chmod");
    c.add_read_only(&private, "rootfs").expect("ro copy");
    let copy = fs::metadata(c.root().join("rootfs")).expect("meta");
    assert_ne!(copy.ino(), fs::metadata(&private).expect("meta").ino(), "private input is copied");
    assert_eq!((copy.uid(), copy.mode() & 0o777), (ids.uid, 0o400));

    let open = tmp.path().join("initrd");
    fs::write(&open, b"cpio").expect("write");
    fs::set_permissions(&open, fs::Permissions::from_mode(0o666)).expect("chmod");
    c.add_read_only(&open, "initrd").expect("ro copy");
    let copy = fs::metadata(c.root().join("initrd")).expect("meta");
    assert_ne!(copy.ino(), fs::metadata(&open).expect("meta").ino(), "a world-writable input is never shared");
    assert_eq!(copy.mode() & 0o777, 0o400);

    let disk = tmp.path().join("workspace.img");
    fs::write(&disk, b"data").expect("write");
    fs::set_permissions(&disk, fs::Permissions::from_mode(0o640)).expect("chmod");
    assert_eq!(c.add_writable(&disk, "workspace").expect("rw"), PathBuf::from("/workspace"));
    let lent = fs::metadata(&disk).expect("meta");
    assert_eq!((lent.uid(), lent.mode() & 0o777), (ids.uid, 0o600));

    c.make_devices(true).expect("devices");
    for (dev, rdev) in [("dev/kvm", libc::makedev(10, 232)), ("dev/urandom", libc::makedev(1, 9)), ("dev/net/tun", libc::makedev(10, 200))]
    {
        let m = fs::metadata(c.root().join(dev)).expect("dev");
        assert!(m.file_type().is_char_device(), "{dev}");
        assert_eq!((m.rdev(), m.uid()), (rdev, ids.uid), "{dev}");
    }

    c.remove().expect("remove");
    let back = fs::metadata(&disk).expect("meta");
    assert_eq!((back.uid(), back.mode() & 0o777), (0, 0o640), "writable drive given back");
    assert!(!tmp.path().join("vm").exists());
}

#[test]
fn pre_exec_sets_no_new_privs_and_the_death_signal() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut c = Chroot::create(&tmp.path().join("vm"), None).expect("create");
    let pre = PreExec::new(&c, &[]).expect("pre");
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", "grep -E '^NoNewPrivs' /proc/self/status"]);
    // SAFETY: apply only makes system calls on data prepared before the fork.
    unsafe { cmd.pre_exec(move || pre.apply()) };
    let out = cmd.output().expect("run");
    assert_eq!(String::from_utf8_lossy(&out.stdout).split_whitespace().collect::<Vec<_>>(), ["NoNewPrivs:", "1"]);
    c.remove().expect("remove");
}

#[test]
fn pre_exec_chroots_and_drops_to_the_vmm_ids() {
    let busybox = Path::new("/bin/busybox");
    if !is_root() || !busybox.exists() {
        eprintln!("skipped: needs root and a static /bin/busybox");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let ids = VmmIds::dedicated(11);
    let mut c = Chroot::create(&tmp.path().join("vm"), Some(ids)).expect("create");
    let exe = c.install_binary(busybox).expect("install");
    let pre = PreExec::new(&c, &[]).expect("pre");
    let mut cmd = Command::new(&exe);
    cmd.arg0("sh").args(["-c", "id -u; id -g; id -G; ls /"]);
    // SAFETY: apply only makes system calls on data prepared before the fork.
    unsafe { cmd.pre_exec(move || pre.apply()) };
    let out = cmd.output().expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    let id = ids.uid.to_string();
    assert_eq!(&lines[..3], [id.as_str(), id.as_str(), id.as_str()], "stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(&lines[3..], ["firecracker", "run"], "the chroot holds only what was put there");
    c.remove().expect("remove");
}

use super::*;
use std::os::unix::fs::PermissionsExt;

fn config(dir: &Path) -> FirecrackerConfig {
    let mut c = FirecrackerConfig::new("vm-test", dir.join("vmlinux"), dir.join("rootfs.ext4"), dir.join("state"));
    c.runtime_disk = Some(dir.join("runtime.img"));
    c.workspace_disk = Some(dir.join("workspace.img"));
    c
}

fn paths() -> VmmPaths {
    VmmPaths {
        kernel: "/vmlinux".into(),
        initrd: None,
        rootfs: "/rootfs".into(),
        runtime: Some("/runtime".into()),
        workspace: Some("/workspace".into()),
        vsock_uds: "/run/vsock.sock".into(),
    }
}

#[test]
fn boot_plan_has_three_drives_in_order_and_the_vsock() {
    let c = config(Path::new("/img"));
    let plan = boot_plan(&c, &paths()).expect("plan");
    let drives: Vec<(&str, &str, bool, bool)> =
        plan.drives.iter().map(|d| (d.drive_id.as_str(), d.path_on_host.as_str(), d.is_root_device, d.is_read_only)).collect();
    assert_eq!(drives, [("vda", "/rootfs", true, true), ("vdb", "/runtime", false, false), ("vdc", "/workspace", false, false)]);
    assert_eq!(plan.boot_source.kernel_image_path, "/vmlinux");
    assert_eq!(plan.boot_source.boot_args, DEFAULT_BOOT_ARGS);
    assert_eq!(plan.machine, MachineConfig { vcpu_count: 1, mem_size_mib: 256, smt: Some(false) });
    assert_eq!(plan.vsock, Some(Vsock { guest_cid: 3, uds_path: "/run/vsock.sock".into() }));
    assert!(plan.network.is_empty());
}

#[test]
fn with_an_initrd_the_rootfs_is_not_the_root_device() {
    let mut c = config(Path::new("/img"));
    c.initrd = Some("/img/initrd".into());
    c.tap = Some(Tap { host_dev_name: "ck-tap0".into(), guest_mac: None });
    let plan = boot_plan(&c, &VmmPaths { initrd: Some("/initrd".into()), ..paths() }).expect("plan");
    assert_eq!(plan.boot_source.initrd_path.as_deref(), Some("/initrd"));
    assert!(!plan.drives[0].is_root_device && plan.drives[0].is_read_only);
    assert_eq!(plan.network[0].host_dev_name, "ck-tap0");
}

#[test]
fn config_validation_names_the_bad_field() {
    let base = config(Path::new("/img"));
    for (mutate, word) in [
        (Box::new(|c: &mut FirecrackerConfig| c.id = "../x".into()) as Box<dyn Fn(&mut FirecrackerConfig)>, "VM id"),
        (Box::new(|c: &mut FirecrackerConfig| c.vcpus = 0), "vcpus"),
        (Box::new(|c: &mut FirecrackerConfig| c.mem_mib = 0), "mem_mib"),
        (Box::new(|c: &mut FirecrackerConfig| c.guest_cid = 2), "guest_cid"),
    ] {
        let mut c = base.clone();
        mutate(&mut c);
        let err = c.validate().expect_err(word);
        assert!(err.to_string().contains(word), "{err}");
    }
    base.validate().expect("default config is valid");
}

#[test]
fn spawn_with_a_missing_binary_is_a_clear_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for binary in [PathBuf::from("/nonexistent/firecracker"), PathBuf::from("clawkeep-no-such-firecracker")] {
        let mut c = config(tmp.path());
        c.binary = binary.clone();
        let err = FirecrackerVm::spawn(&c).expect_err("missing binary");
        assert!(matches!(err, FirecrackerError::BinaryNotFound { binary: ref b } if *b == binary), "{err:?}");
        assert!(err.to_string().contains("put it on PATH"), "{err}");
    }
    assert!(!tmp.path().join("state").exists(), "nothing created before the binary is found");
}

#[test]
fn resolve_binary_searches_path_and_wants_an_executable() {
    assert!(resolve_binary(Path::new("sh")).expect("sh").is_absolute());
    let tmp = tempfile::tempdir().expect("tempdir");
    let f = tmp.path().join("firecracker");
    fs::write(&f, "").expect("write");
    assert!(resolve_binary(&f).is_err(), "not executable");
    fs::set_permissions(&f, fs::Permissions::from_mode(0o755)).expect("chmod");
    assert_eq!(resolve_binary(&f).expect("exe"), f);
}

/// A stand-in binary: a shell script, run unjailed (a script cannot run in
/// an empty chroot). It needs /dev/kvm only because spawn checks it first.
fn fake_binary(dir: &Path, script: &str) -> Option<PathBuf> {
    if check_kvm().is_err() {
        eprintln!("skipped: /dev/kvm not usable, spawn stops before the binary runs");
        return None;
    }
    let f = dir.join("fake-firecracker");
    fs::write(&f, format!("#!/bin/sh\n{script}\n")).expect("write");
    fs::set_permissions(&f, fs::Permissions::from_mode(0o755)).expect("chmod");
    Some(f)
}

fn unjailed(dir: &Path, binary: PathBuf) -> FirecrackerConfig {
    for f in ["vmlinux", "rootfs.ext4", "runtime.img", "workspace.img"] {
        fs::write(dir.join(f), b"x").expect("write");
    }
    let mut c = config(dir);
    c.binary = binary;
    c.jail = None;
    c.start_timeout = Duration::from_millis(300);
    c
}

#[test]
fn a_vmm_that_exits_early_reports_its_log_and_leaves_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some(bin) = fake_binary(tmp.path(), "echo \"bad args: $*\" >&2; exit 3") else { return };
    let c = unjailed(tmp.path(), bin);
    let err = FirecrackerVm::spawn(&c).expect_err("exits");
    match &err {
        FirecrackerError::Exited { status, log_tail, .. } => {
            assert_eq!(status.code(), Some(3));
            assert!(log_tail.contains("bad args: --api-sock"), "{log_tail}");
            assert!(log_tail.contains("run/firecracker.socket --id vm-test"), "{log_tail}");
        }
        other => panic!("wrong error {other:?}"),
    }
    assert!(!tmp.path().join("state/vm-test").exists(), "VM directory removed");
}

#[test]
fn a_vmm_whose_api_never_answers_times_out_and_is_killed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pidfile = tmp.path().join("pid");
    let Some(bin) = fake_binary(tmp.path(), &format!("echo $$ > {}; exec /bin/sleep 30", pidfile.display())) else { return };
    let c = unjailed(tmp.path(), bin);
    let err = FirecrackerVm::spawn(&c).expect_err("timeout");
    assert!(matches!(err, FirecrackerError::ApiSocketTimeout { .. }), "{err:?}");
    let pid: i32 = fs::read_to_string(&pidfile).expect("pid").trim().parse().expect("pid");
    // SAFETY: signal 0 only checks for existence.
    assert_ne!(unsafe { libc::kill(pid, 0) }, 0, "the VMM was killed");
    assert!(!tmp.path().join("state/vm-test").exists());
}

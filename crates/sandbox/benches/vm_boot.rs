//! VM start-up and exec latency of the QEMU microvm driver, beside
//! baselines measured in the same run: the same kernel booting to a
//! missing init (the kernel's own boot, no guest agent, no dm-verity),
//! and `/bin/true` exec'd directly on the host.
//!
//! Needs a built image: `$CLAWKEEP_BENCH_IMAGE` (an image directory) or
//! `<state>/images/base` (`clawkeep image build --name base`); prints
//! `skipped: ...` otherwise. TCG unless `CLAWKEEP_VM_ACCEL=kvm`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use clawkeep_guest::proto::{ExecRequest, Message};
use clawkeep_sandbox::vm::{Accel, Vm, VmConfig, Vmm};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BOOTS: usize = 3;
const EXECS: usize = 20;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn image_dir() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CLAWKEEP_BENCH_IMAGE") {
        return Some(PathBuf::from(p));
    }
    let state = std::env::var_os("CLAWKEEP_STATE_DIR").map(PathBuf::from).unwrap_or_else(|| "/var/lib/clawkeep".into());
    Some(state.join("images").join("base")).filter(|p| p.is_dir())
}

fn main() {
    let Some(dir) = image_dir().filter(|d| d.join("manifest.json").is_file()) else {
        println!("skipped: vm_boot: no image (set CLAWKEEP_BENCH_IMAGE or run `clawkeep image build --name base`)");
        return;
    };
    if clawkeep_sandbox::vm::qemu::find_binary().is_none() {
        println!("skipped: vm_boot: qemu-system-x86_64 not installed");
        return;
    }
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let file = |k: &str| m[k]["file"].as_str().map(|f| dir.join(f));
    let accel = if std::env::var("CLAWKEEP_VM_ACCEL").as_deref() == Ok("kvm") { Accel::Kvm } else { Accel::Tcg };
    let run_root = std::env::temp_dir().join(format!("clawkeep-bench-{}", std::process::id()));
    let cfg = VmConfig {
        kernel: file("vmlinux").unwrap_or_else(|| file("kernel").unwrap()),
        initramfs: file("initramfs").unwrap(),
        rootfs: file("rootfs").unwrap(),
        cmdline: m["cmdline"].as_str().unwrap().to_string(),
        memory_mib: 512,
        cpus: 1,
        accel,
        runtime_disk_mib: 64,
        workspace_disk: None,
        run_root: run_root.clone(),
        ready_timeout: Duration::from_secs(120),
        relays: HashMap::new(),
        cancel: None,
        vmm: Vmm::Qemu,
    };

    // Baseline: the kernel alone, to a missing init (panic, reboot=t, exit).
    let kernel_only = median(
        (0..BOOTS)
            .map(|_| {
                let qc = clawkeep_sandbox::vm::qemu::QemuConfig {
                    binary: clawkeep_sandbox::vm::qemu::find_binary().unwrap(),
                    kernel: cfg.kernel.clone(),
                    initramfs: cfg.initramfs.clone(),
                    rootfs: cfg.rootfs.clone(),
                    cmdline: "console=ttyS0 panic=-1 init=/nonexistent rdinit=/nonexistent".into(),
                    memory_mib: 512,
                    cpus: 1,
                    runtime_disk: None,
                    workspace_disk: None,
                    socket: run_root.join("baseline.sock"),
                    console_log: run_root.join("baseline.log"),
                    accel,
                };
                std::fs::create_dir_all(&run_root).unwrap();
                let t = Instant::now();
                let (mut c, mut console) = clawkeep_sandbox::vm::qemu::spawn(&qc, &run_root.join("baseline.err")).unwrap();
                c.wait().unwrap();
                let took = t.elapsed();
                console.finish();
                took
            })
            .collect(),
    );

    let mut boots = Vec::new();
    let mut vm = None;
    for _ in 0..BOOTS {
        if let Some(v) = vm.take() {
            Vm::shutdown(v, Duration::from_secs(10)).unwrap();
        }
        let v = Vm::start(&cfg).expect("boot");
        boots.push(v.boot_time);
        vm = Some(v);
    }
    let vm = vm.unwrap();
    let execs: Vec<Duration> = (0..EXECS)
        .map(|_| {
            let t = Instant::now();
            let s = vm
                .channel
                .exec(ExecRequest {
                    argv: vec!["true".into()],
                    env: vec![],
                    cwd: Some("/".into()),
                    uid: 1000,
                    gid: 1000,
                    stdin_credit: true,
                    tty: None,
                })
                .unwrap();
            while !matches!(s.recv().unwrap(), Message::Exit(_)) {}
            t.elapsed()
        })
        .collect();
    let t = Instant::now();
    vm.shutdown(Duration::from_secs(10)).unwrap();
    let shutdown = t.elapsed();
    let host_true = median(
        (0..EXECS)
            .map(|_| {
                let t = Instant::now();
                Command::new("true").stdout(Stdio::null()).status().unwrap();
                t.elapsed()
            })
            .collect(),
    );
    let _ = std::fs::remove_dir_all(&run_root);

    let ms = |d: Duration| format!("{:8.1} ms", d.as_secs_f64() * 1000.0);
    println!("vm_boot ({}, image {}), medians:", accel.as_qemu(), dir.display());
    println!("  boot to Ready (clawkeep-guest, dm-verity root)  {}", ms(median(boots)));
    println!("  baseline: same kernel to a missing init        {}", ms(kernel_only));
    println!("  exec `true` in the guest (Exec -> Exit)         {}", ms(median(execs)));
    println!("  baseline: exec `true` on the host               {}", ms(host_true));
    println!("  clean shutdown (Shutdown -> QEMU exit)          {}", ms(shutdown));
    match jail_run() {
        Some(j) => println!("  the jail: clawkeep run -- /bin/true, whole run  {}", ms(j)),
        None => println!("  the jail: skipped (build clawkeep first: cargo build --release --workspace --bins)"),
    }
}

/// The jail backend's whole run (set-up, exec, teardown) beside the VM's
/// figures: the `clawkeep` binary built next to this bench.
fn jail_run() -> Option<Duration> {
    let exe = std::env::current_exe().ok()?.parent()?.parent()?.join("clawkeep");
    if !exe.is_file() {
        return None;
    }
    let state = tempfile_dir("jail-state")?;
    let ws = tempfile_dir("jail-ws")?;
    let mut runs = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let ok = Command::new(&exe)
            .env("CLAWKEEP_STATE_DIR", &state)
            .args(["run", "--no-proxy", "--workspace"])
            .arg(&ws)
            .args(["--", "/bin/true"])
            .stdout(Stdio::null())
            .status()
            .ok()?
            .success();
        if !ok {
            return None;
        }
        runs.push(t.elapsed());
    }
    let _ = std::fs::remove_dir_all(&state);
    let _ = std::fs::remove_dir_all(&ws);
    Some(median(runs))
}

fn tempfile_dir(tag: &str) -> Option<PathBuf> {
    let d = std::env::temp_dir().join(format!("clawkeep-vm-bench-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).ok()?;
    Some(d)
}

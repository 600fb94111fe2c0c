//! `clawkeep run --backend vm` end to end under QEMU (TCG here; KVM where a
//! boot test proves it works): stdio and exit code, the workspace disk
//! round trip, dm-verity catching a changed block at read time, a guest
//! that never becomes ready, images that cannot boot, and a user's
//! terminal (size, resize, Ctrl-C) reaching the command. Needs
//! qemu-system-x86_64, e2fsprogs, veritysetup, busybox and the kernel
//! .ci/fetch-kernel extracts; skips with the reason otherwise.
//!
//! Every boot costs seconds under TCG, so one test boots, in sequence,
//! from one image built once; the failure cases that need no boot are
//! separate tests.

#![allow(clippy::unwrap_used)]

mod common;

use common::{processes_with, Env};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// True when a VM can be built and booted here; otherwise prints why not.
fn vm_available(test: &str) -> bool {
    let tools = [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("mkfs.ext4", "e2fsprogs"),
        ("debugfs", "e2fsprogs"),
        ("veritysetup", "cryptsetup-bin"),
        ("busybox", "busybox-static"),
    ];
    if !common::image_tools_available(test, &tools) {
        return false;
    }
    let guest = common::bin().parent().unwrap().join("clawkeep-guest");
    assert!(guest.is_file(), "{} is missing: build it with `cargo build -p clawkeep-guest` (cargo test --workspace does)", guest.display());
    true
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn build_image(env: &Env, name: &str) {
    let t = Instant::now();
    let out = env.cmd().env_remove("CLAWKEEP_IMAGE_PUBKEY").args(["image", "build", "--name", name]).output().unwrap();
    assert!(out.status.success(), "image build failed: {}", text(&out.stderr));
    println!("image build: {:?}", t.elapsed());
}

fn image_dir(env: &Env, name: &str) -> PathBuf {
    env.state.path().join("images").join(name)
}

/// A copy of image `from` as `to`: parts hard-linked (never written
/// through), so a test can replace one part or the manifest.
fn copy_image(env: &Env, from: &str, to: &str) -> PathBuf {
    let (src, dst) = (image_dir(env, from), image_dir(env, to));
    fs::create_dir(&dst).unwrap();
    for e in fs::read_dir(&src).unwrap().flatten() {
        fs::hard_link(e.path(), dst.join(e.file_name())).unwrap();
    }
    dst
}

fn edit_manifest(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
    f(&mut m);
    fs::remove_file(&p).unwrap();
    fs::write(&p, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
}

fn vm_run(env: &Env, image: &str, extra_env: &[(&str, &str)], argv: &[&str]) -> (Output, Duration) {
    let mut c = env.cmd();
    c.env_remove("CLAWKEEP_IMAGE_PUBKEY").envs(extra_env.iter().copied());
    c.args(["run", "--backend", "vm", "--image", image, "--workspace"]).arg(env.workspace.path()).arg("--").args(argv);
    let t = Instant::now();
    let out = c.output().unwrap();
    (out, t.elapsed())
}

/// Nothing of a run survives it: no QEMU for this state dir, no run
/// directory, socket or disk.
fn assert_nothing_left(env: &Env) {
    let marker = env.state.path().to_string_lossy().into_owned();
    assert!(common::wait_for(|| processes_with(&marker).is_empty(), 5), "leftover processes: {:?}", processes_with(&marker));
    let run = env.state.path().join("vm").join("run");
    let left: Vec<_> = fs::read_dir(&run).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "leftover run files: {left:?}");
}

#[test]
fn vm_runs_commands_keeps_the_workspace_and_catches_tampering() {
    if !vm_available("vm_runs_commands_keeps_the_workspace_and_catches_tampering") {
        return;
    }
    let env = Env::new();
    build_image(&env, "t");
    // `doctor` boot-tests KVM with this image: with the image's files in
    // reach (their paths are its open descriptors), whatever KVM says.
    let _ = fs::remove_file(env.state.path().join("vm/kvm.json"));
    let out = env.cmd().args(["doctor", "--json"]).output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let detail = report["vm"]["kvm_detail"].as_str().unwrap_or_default().to_string();
    assert!(detail.starts_with("boot test") || detail == "no /dev/kvm", "{report}");
    assert!(!detail.contains("is missing"), "the boot test lost its image: {detail}");
    fs::write(env.workspace.path().join("in.txt"), "from the host\n").unwrap();
    fs::write(env.workspace.path().join("gone.txt"), "deleted in the guest\n").unwrap();

    // stdio, exit code, workspace both ways.
    let (out, took) = vm_run(&env, "t", &[], &["sh", "-c", "echo hi; cat in.txt; echo made > made.txt; rm gone.txt; exit 3"]);
    println!("first run (incl. KVM boot test when uncached): {took:?}; stderr: {}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(3), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hi\nfrom the host\n");
    assert_eq!(fs::read_to_string(env.workspace.path().join("made.txt")).unwrap(), "made\n");
    assert!(!env.workspace.path().join("gone.txt").exists());
    let audit = env.audit();
    let start = audit.iter().find(|e| e["kind"] == "run.start").unwrap();
    assert_eq!(start["backend"], "vm");
    assert_eq!(start["image"], "t");
    assert_eq!(start["root_hash"].as_str().unwrap().len(), 64);
    assert!(start["accel"] == "tcg" || start["accel"] == "kvm");
    let exit = audit.iter().find(|e| e["kind"] == "run.exit").unwrap();
    assert_eq!(exit["exit_code"], 3);
    println!("boot to ready: {} ms", exit["boot_ms"]);
    assert!(env.state.path().join("vm/kvm.json").is_file(), "the KVM verdict is cached");
    assert_nothing_left(&env);

    // A full workspace disk is the command's own ENOSPC; the inference
    // proxy is reachable on the guest's loopback (relayed over the
    // channel) with the agent's token; a command killed by a signal
    // reports 128+N.
    // (fallocate: writing 256 MiB of zeros under TCG takes half a minute)
    let script = "echo $((6*7)); fallocate -l 400000000 big || echo full; rm -f big; \
        wget -q -O- --header \"Authorization: Bearer $OPENAI_API_KEY\" $OPENAI_BASE_URL/models; echo; kill -TERM $$";
    // wget is an `ask` in the built-in policy (and dash, the image's sh,
    // does reach the gate by name): this run's policy allows it.
    let allow = env.state.path().join("allow-wget.yaml");
    fs::write(&allow, "default_action: allow\nrules: []\n").unwrap();
    let mut c = env.cmd();
    c.env_remove("CLAWKEEP_IMAGE_PUBKEY").args(["run", "--backend", "vm", "--image", "t", "--policy"]).arg(&allow);
    c.arg("--workspace").arg(env.workspace.path()).args(["--", "sh", "-c", script]);
    let t = Instant::now();
    let out = c.output().unwrap();
    let took = t.elapsed();
    println!("second run: {took:?}");
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(128 + 15), "stderr: {}", text(&out.stderr));
    assert!(stdout.starts_with("42\nfull\n"), "stdout: {stdout}");
    assert!(stdout.contains("\"object\":\"list\""), "the proxy did not answer through the relay: {stdout}");
    assert!(text(&out.stderr).contains("No space left on device"), "stderr: {}", text(&out.stderr));
    assert!(!env.workspace.path().join("big").exists());

    // Gated commands inside the VM: the guest masks them with its shim;
    // the host's gate decides (deny, allow, ask answered by the CLI).
    // Bare names typed in the image's sh (dash, which looks them up in
    // PATH) and full paths both reach the gate.
    gated_commands_reach_the_host_gate(&env);
    private_copies_and_hidden_links_in_a_dir_image(&env);
    the_kill_switch_freezes_and_thaws_the_vm(&env);
    a_terminal_reaches_the_command_in_the_vm(&env);

    // A command the guest cannot find: 127 and its name, like the jail.
    let (out, _) = vm_run(&env, "t", &[], &["no-such-command"]);
    assert_eq!(out.status.code(), Some(127), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no-such-command"), "stderr: {}", text(&out.stderr));

    // clawkeep killed with -9 while booting: QEMU dies with it (lifeline),
    // and the next run sweeps the files it could not remove.
    let marker = env.state.path().to_string_lossy().into_owned();
    let mut c = std::process::Command::new(common::bin());
    c.env("CLAWKEEP_STATE_DIR", env.state.path()).args(["run", "--backend", "vm", "--image", "t", "--", "sleep", "100"]);
    let mut child = c.stderr(std::process::Stdio::null()).spawn().unwrap();
    assert!(common::wait_for(|| !processes_with(&marker).is_empty(), 20), "QEMU never started");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(common::wait_for(|| processes_with(&marker).is_empty(), 5), "QEMU outlived clawkeep: {:?}", processes_with(&marker));

    // One data block of /etc/passwd changed after the build, the manifest's
    // sha256 updated to match: only dm-verity can notice, at read time.
    let bad = copy_image(&env, "t", "tampered");
    let rootfs = bad.join("rootfs.img");
    fs::remove_file(&rootfs).unwrap();
    fs::copy(image_dir(&env, "t").join("rootfs.img"), &rootfs).unwrap();
    let bmap = std::process::Command::new("debugfs").args(["-R", "bmap /etc/passwd 0"]).arg(&rootfs).output().unwrap();
    let block: u64 = text(&bmap.stdout).trim().parse().unwrap_or_else(|_| panic!("debugfs bmap: {}", text(&bmap.stderr)));
    let mut data = fs::read(&rootfs).unwrap();
    data[(block * 4096) as usize] ^= 0x20;
    fs::write(&rootfs, &data).unwrap();
    let sum = std::process::Command::new("sha256sum").arg(&rootfs).output().unwrap();
    let sha = text(&sum.stdout).split_whitespace().next().unwrap().to_string();
    edit_manifest(&bad, |m| m["rootfs"]["sha256"] = sha.into());
    let (out, _) = vm_run(&env, "tampered", &[], &["cat", "/etc/passwd"]);
    let err = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "a tampered block was read: {}", text(&out.stdout));
    assert!(err.contains("Input/output error") || err.contains("I/O error"), "stderr: {err}");
    assert!(!text(&out.stdout).contains("agent:x:"), "tampered content leaked");
    assert_nothing_left(&env);

    // A consistent manifest with the wrong root hash: the guest's verified
    // root cannot be mounted; it says so on the console and powers off, and
    // the host reports that at once (not at its ready timeout).
    let wrong = copy_image(&env, "t", "wronghash");
    edit_manifest(&wrong, |m| {
        let good = m["rootfs"]["root_hash"].as_str().unwrap().to_string();
        let bad: String = good.chars().rev().collect();
        m["rootfs"]["root_hash"] = bad.clone().into();
        m["cmdline"] = m["cmdline"].as_str().unwrap().replace(&good, &bad).into();
    });
    let (out, took) = vm_run(&env, "wronghash", &[], &["true"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(err.contains("exited before it was ready") && err.contains("clawkeep-guest: fatal: root"), "stderr: {err}");
    assert!(took < Duration::from_secs(40), "took {took:?}");
    assert_nothing_left(&env);

    // A guest that never says Ready: bounded wait, clean kill, clear error.
    let hang = copy_image(&env, "t", "hang");
    edit_manifest(&hang, |m| {
        let c = format!("{} clawkeep.hang=1", m["cmdline"].as_str().unwrap());
        m["cmdline"] = c.into();
    });
    let (out, took) = vm_run(&env, "hang", &[("CLAWKEEP_VM_READY_TIMEOUT", "6")], &["true"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(err.contains("not ready within 6s") && err.contains("console"), "stderr: {err}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert_nothing_left(&env);
}

const POLICY: &str = r#"
default_action: deny
allowed_paths: ["/workspace", "/workspace/**"]
rules:
  - command: wget
    action: deny
    reason: no downloads from the VM
  - command: ls
    action: allow
  - command: cat
    action: allow
  - command: env
    action: allow
  - command: uname
    action: ask
    reason: uname needs a human
"#;

fn gated_commands_reach_the_host_gate(env: &Env) {
    let policy = env.state.path().join("vm-policy.yaml");
    fs::write(&policy, POLICY).unwrap();
    let script = "ls /workspace >/dev/null && echo ls-ok; cat in.txt; wget http://x; echo bare=$?; /bin/wget http://x; echo full=$?; \
        env /bin/wget http://x; echo nested=$?; uname -s; echo uname=$?";
    // The operator API on TCP too, as for a jail run.
    let addr = format!("127.0.0.1:{}", std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port());
    let token = "vm-api-token-0123456789";
    let mut c = std::process::Command::new(common::bin());
    c.env("CLAWKEEP_STATE_DIR", env.state.path()).env_remove("CLAWKEEP_IMAGE_PUBKEY").env("CLAWKEEP_API_TOKEN", token);
    c.args(["run", "--backend", "vm", "--image", "t", "--agent", "vm-a", "--api-tcp", &addr, "--policy"]).arg(&policy);
    c.arg("--workspace").arg(env.workspace.path()).args(["--", "sh", "-c", script]);
    let child = c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let mut id = None;
    let queued = common::wait_for(
        || {
            let out = env.cmd().args(["approvals", "--json"]).output().unwrap();
            let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            id = list.as_array().and_then(|a| a.first()).and_then(|a| a["id"].as_i64());
            id.is_some()
        },
        90,
    );
    if !queued {
        let out = child.wait_with_output().unwrap();
        panic!("uname never reached the queue; stdout: {}; stderr: {}", text(&out.stdout), text(&out.stderr));
    }
    let id = id.unwrap().to_string();
    let status = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&addr).expect("the VM run's TCP API is not listening");
        s.write_all(
            format!("GET /api/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\r\n").as_bytes(),
        )
        .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    assert!(status.starts_with("HTTP/1.1 200") && status.contains("vm-a"), "{status}");
    let out = env.cmd().args(["approve", &id]).output().unwrap();
    assert!(out.status.success(), "approve: {}", text(&out.stderr));
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    println!("gated run: stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    // An approved command's own children reach the gate too (`env` runs
    // the real busybox; the wget it starts is the mask).
    assert_eq!(stdout, "ls-ok\nfrom the host\nbare=126\nfull=126\nnested=126\nLinux\nuname=0\n", "stderr: {stderr}");
    assert_eq!(stderr.matches("clawkeep: wget: denied: no downloads from the VM").count(), 3, "stderr: {stderr}");
    assert!(stderr.contains("clawkeep: wget: denied: no downloads from the VM"), "stderr: {stderr}");
    assert!(stderr.contains(&format!("waiting for an operator to approve request #{id}")), "stderr: {stderr}");
    let audit = env.audit();
    let decisions: Vec<_> = audit.iter().filter(|e| e["kind"] == "gate.decision").collect();
    for (cmd, outcome) in [("ls", "allowed"), ("cat", "allowed"), ("env", "allowed"), ("wget", "denied"), ("uname", "approved")] {
        assert!(
            decisions.iter().any(|e| e["command"] == cmd && e["outcome"] == outcome && e["agent"] == "vm-a"),
            "no {outcome} decision for {cmd}: {decisions:?}"
        );
    }
    let hist = env.cmd().args(["history", "--agent", "vm-a", "--json"]).output().unwrap();
    let hist: serde_json::Value = serde_json::from_slice(&hist.stdout).unwrap();
    let cmds: Vec<&str> = hist["items"].as_array().unwrap().iter().filter_map(|h| h["command"].as_str()).collect();
    for cmd in ["ls", "cat", "wget", "uname"] {
        assert!(cmds.contains(&cmd), "history lacks {cmd}: {hist}");
    }
    assert!(!env.state.path().join("agents/vm-a").exists(), "the agent's sockets outlived the run");
    assert_nothing_left(env);
}

/// An image built from a directory in which a gated tool (a script here)
/// has a private copy (`/usr/lib/gtool-core/gtool`, as Debian's git-core)
/// and a hard link in a libexec dir: the agent reaches neither, while the
/// approved tool's own job runs its private copy for real and still meets
/// the gate for another gated command. (This image's sh is busybox's ash,
/// which runs an applet named without a path in-process, never exec'ing
/// it: the script names wget by its path.)
fn private_copies_and_hidden_links_in_a_dir_image(env: &Env) {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for d in ["bin", "etc", "usr/bin", "usr/lib/gtool-core", "usr/libexec/gtool-core"] {
        fs::create_dir_all(r.join(d)).unwrap();
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"].into_iter().find(|p| Path::new(p).is_file()).unwrap();
    fs::copy(busybox, r.join("bin/busybox")).unwrap();
    let list = std::process::Command::new(busybox).arg("--list").output().unwrap();
    for applet in text(&list.stdout).lines().filter(|a| !a.is_empty() && *a != "busybox") {
        std::os::unix::fs::symlink("busybox", r.join("bin").join(applet)).unwrap();
    }
    fs::write(r.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\nagent:x:1000:1000:agent:/workspace:/bin/sh\n").unwrap();
    fs::write(r.join("etc/group"), "root:x:0:\nagent:x:1000:\n").unwrap();
    let tool = "#!/bin/sh\nif [ \"$1\" = inner ]; then echo inner-real; exit 0; fi\nif [ \"$1\" = slow ]; then sleep 4; exit 0; fi\n\
        /usr/lib/gtool-core/gtool inner\n/bin/wget -q http://127.0.0.1:9/ ; echo wget=$?\n";
    for p in ["usr/bin/gtool", "usr/lib/gtool-core/gtool"] {
        fs::write(r.join(p), tool).unwrap();
        fs::set_permissions(r.join(p), fs::Permissions::from_mode(0o755)).unwrap();
    }
    fs::hard_link(r.join("usr/bin/gtool"), r.join("usr/libexec/gtool-core/gtool-sub")).unwrap();
    let out = env.cmd().env_remove("CLAWKEEP_IMAGE_PUBKEY").args(["image", "build", "--name", "g", "--from"]).arg(r).output().unwrap();
    assert!(out.status.success(), "image build --from failed: {}", text(&out.stderr));
    let policy = env.state.path().join("gtool-policy.yaml");
    fs::write(
        &policy,
        "default_action: deny\nrules:\n  - command: gtool\n    args: [outer, slow]\n    action: allow\n  - command: wget\n    action: deny\n    reason: no downloads\n",
    )
    .unwrap();
    // Last, a running job (its own command unmasked in its namespace) is
    // out of the agent's reach through /proc: their Landlock domains are
    // not nested.
    let script = "/usr/lib/gtool-core/gtool inner; echo direct=$?; /usr/libexec/gtool-core/gtool-sub inner 2>/dev/null; echo sub=$?; \
        gtool outer; echo outer=$?; \
        gtool slow & i=0; while [ $i -lt 300 ]; do \
          for p in /proc/[0-9]*; do [ \"$(cat $p/comm 2>/dev/null)\" = gtool ] && [ \"$(grep ^Uid $p/status | cut -f2)\" = 1000 ] \
            && [ \"$(readlink $p/ns/mnt)\" != \"$(readlink /proc/self/ns/mnt)\" ] && job=$p; done; \
          [ -n \"$job\" ] && break; i=$((i+1)); done; \
        echo found=${job:+yes}; $job/root/usr/lib/gtool-core/gtool inner; echo root=$?; wait";
    let mut c = env.cmd();
    c.env_remove("CLAWKEEP_IMAGE_PUBKEY").args(["run", "--backend", "vm", "--image", "g", "--agent", "vm-g", "--policy"]).arg(&policy);
    c.arg("--workspace").arg(env.workspace.path()).args(["--", "sh", "-c", script]);
    let out = c.output().unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(stdout, "direct=126\nsub=127\ninner-real\nwget=126\nouter=0\nfound=yes\nroot=126\n", "stderr: {stderr}");
    assert!(stderr.contains("Permission denied"), "stderr: {stderr}");
    assert!(stderr.contains("clawkeep: wget: denied: no downloads"), "stderr: {stderr}");
    assert_nothing_left(env);
}

/// `clawkeep kill --freeze/--thaw/kill` on a VM agent: the guest's output
/// stops while frozen, resumes when thawed, and kill ends the run (137)
/// even from frozen.
fn the_kill_switch_freezes_and_thaws_the_vm(env: &Env) {
    use std::io::{BufRead, BufReader};
    let policy = env.state.path().join("vm-policy.yaml");
    let mut c = std::process::Command::new(common::bin());
    c.env("CLAWKEEP_STATE_DIR", env.state.path()).env_remove("CLAWKEEP_IMAGE_PUBKEY");
    c.args(["run", "--backend", "vm", "--image", "t", "--agent", "vm-f", "--policy"]).arg(&policy);
    c.arg("--workspace").arg(env.workspace.path()).args(["--", "sh", "-c", "i=0; while :; do i=$((i+1)); echo $i; sleep 0.02; done"]);
    let mut child = c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let last = Arc::new(AtomicU64::new(0));
    let reader = {
        let (last, out) = (last.clone(), child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(n) = line.trim().parse() {
                    last.store(n, Ordering::SeqCst);
                }
            }
        })
    };
    let read = || last.load(Ordering::SeqCst);
    assert!(common::wait_for(|| read() > 5, 90), "the loop never printed");
    env.cmd().args(["kill", "vm-f", "--freeze"]).assert().success();
    std::thread::sleep(Duration::from_millis(500));
    let frozen_at = read();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(read(), frozen_at, "the VM kept running while frozen");
    env.cmd().args(["kill", "vm-f", "--thaw"]).assert().success();
    assert!(common::wait_for(|| read() > frozen_at, 30), "the VM did not resume");
    env.cmd().args(["kill", "vm-f", "--freeze"]).assert().success();
    env.cmd().args(["kill", "vm-f"]).assert().success();
    let status = child.wait().unwrap();
    let _ = reader.join();
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
    assert_eq!(status.code(), Some(137), "stderr: {err}");
    assert_nothing_left(env);
}

/// `clawkeep run --backend vm --image t -- sh -c SCRIPT` under util-linux
/// `script`, so its stdin is a terminal of 30x100; script's stdin and
/// stdout (the terminal's both ways) are piped to the test. After the
/// run, the shell says whether the terminal is back in cooked mode.
fn vm_in_terminal(env: &Env, script: &str) -> std::process::Child {
    let inner = format!(
        "stty rows 30 cols 100; {} run --backend vm --image t --workspace {} -- sh -c '{script}'; rc=$?; \
         stty -a | grep -q -- -icanon && echo still-raw || echo cooked-again; exit $rc",
        common::bin().display(),
        env.workspace.path().display()
    );
    let mut c = std::process::Command::new("script");
    c.env("CLAWKEEP_STATE_DIR", env.state.path()).env_remove("CLAWKEEP_IMAGE_PUBKEY").args(["-qefc", &inner, "/dev/null"]);
    c.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap()
}

/// Lines from `out` until one contains `marker`; all of them.
fn read_until(out: &mut impl std::io::BufRead, marker: &str) -> String {
    let mut seen = String::new();
    while !seen.contains(marker) {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "no {marker:?} before EOF: {seen}");
        seen.push_str(&line);
    }
    seen
}

/// The terminal this env's clawkeep run has as its stdin.
fn the_runs_terminal(env: &Env) -> fs::File {
    // A vm run is `clawkeep-full`'s: the launcher execs it.
    let bin = fs::canonicalize(common::bin().with_file_name("clawkeep-full")).unwrap();
    let pid = processes_with(&env.workspace.path().to_string_lossy())
        .into_iter()
        .find(|p| fs::canonicalize(format!("/proc/{p}/exe")).is_ok_and(|e| e == bin))
        .expect("no clawkeep run in a terminal");
    fs::OpenOptions::new().read(true).write(true).open(format!("/proc/{pid}/fd/0")).unwrap()
}

/// Whether `tty` is in raw mode: no line editing, no signal keys.
fn is_raw(tty: &fs::File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: termios is plain data; tcgetattr fills it from an open tty.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    assert_eq!(unsafe { libc::tcgetattr(tty.as_raw_fd(), &mut t) }, 0);
    t.c_lflag & (libc::ICANON | libc::ISIG) == 0
}

/// Resizes `tty` as a terminal emulator would (its foreground process
/// group gets SIGWINCH).
fn resize(tty: &fs::File, rows: u16, cols: u16) {
    use std::os::fd::AsRawFd;
    let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads one valid winsize; tty is open.
    assert_eq!(unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCSWINSZ, &ws) }, 0);
}

/// From a terminal, the command in the VM gets one of its own (a pty in
/// the guest) of the user's size, which follows the user's (SIGWINCH);
/// Ctrl-C typed there interrupts the command (130), as in the jail; the
/// user's terminal leaves raw mode when the run ends.
fn a_terminal_reaches_the_command_in_the_vm(env: &Env) {
    use std::io::{BufReader, Read, Write};
    if !Path::new("/usr/bin/script").exists() {
        println!("skipped: a_terminal_reaches_the_command_in_the_vm: util-linux `script` not installed");
        return;
    }
    // Size, then a resize while the command runs (the loop is bounded:
    // without the resize the run still ends, and the asserts say why).
    let script = "tty; test -t 0 && test -t 1 && echo both-tty; stty size; trap \"echo got-winch\" WINCH; echo ready; \
        i=0; while [ \"$(stty size)\" != \"40 120\" ] && [ $i -lt 300 ]; do i=$((i+1)); sleep 0.1; done; stty size";
    let mut child = vm_in_terminal(env, script);
    let stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let seen = read_until(&mut out, "ready");
    let tty = the_runs_terminal(env);
    // Raw: Ctrl-C and friends are bytes for the guest's terminal, never
    // signals for clawkeep.
    assert!(is_raw(&tty), "the user's terminal is not raw while the command runs");
    resize(&tty, 40, 120);
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    drop(stdin);
    let status = child.wait().unwrap();
    println!("vm tty run: {seen}{rest}");
    assert!(seen.contains("/dev/pts/") && seen.contains("both-tty"), "{seen}{rest}");
    assert!(seen.contains("30 100"), "the user's size did not reach the command: {seen}");
    assert!(rest.contains("got-winch") && rest.contains("40 120"), "the resize did not reach the command: {seen}{rest}");
    assert!(rest.contains("cooked-again"), "the terminal was left raw: {rest}");
    assert_eq!(status.code(), Some(0), "{seen}{rest}");
    assert_nothing_left(env);

    // Ctrl-C is a byte on the user's (raw) terminal, typed into the
    // guest's terminal, whose line discipline sends SIGINT.
    let mut child = vm_in_terminal(env, "echo ready; exec sleep 120");
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let seen = read_until(&mut out, "ready");
    let t = Instant::now();
    stdin.write_all(b"\x03").unwrap();
    stdin.flush().unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    drop(stdin);
    let status = child.wait().unwrap();
    println!("vm tty ctrl-c: ended {:?} after the key: {seen}{rest}", t.elapsed());
    assert_eq!(status.code(), Some(130), "{seen}{rest}");
    assert!(t.elapsed() < Duration::from_secs(60), "Ctrl-C did not end the command promptly: {:?}", t.elapsed());
    assert!(rest.contains("cooked-again"), "the terminal was left raw: {rest}");
    assert_nothing_left(env);
}

#[test]
fn images_that_cannot_boot_fail_before_booting() {
    if !vm_available("images_that_cannot_boot_fail_before_booting") {
        return;
    }
    let env = Env::new();
    // No such image.
    let (out, _) = vm_run(&env, "nope", &[], &["true"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("image build"), "{}", text(&out.stderr));
    // Jail-only options are refused.
    let out = env.cmd().args(["run", "--backend", "vm", "--image", "t", "--rootfs", "/", "--", "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--rootfs does not apply"), "{}", text(&out.stderr));
    // --policy applies (gated commands reach into the VM); a broken one
    // fails before anything boots.
    let bad = env.state.path().join("nope-policy.yaml");
    let out = env.cmd().args(["run", "--backend", "vm", "--image", "t", "--policy"]).arg(&bad).args(["--", "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("nope-policy.yaml"), "{}", text(&out.stderr));
    // --backend vm without --image.
    let out = env.cmd().args(["run", "--backend", "vm", "--", "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--image"), "{}", text(&out.stderr));

    build_image(&env, "t");
    let gone = copy_image(&env, "t", "nokernel");
    fs::remove_file(gone.join("vmlinuz")).unwrap();
    let (out, took) = vm_run(&env, "nokernel", &[], &["true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("kernel"), "{}", text(&out.stderr));
    assert!(took < Duration::from_secs(10), "an image that cannot boot must fail before booting: {took:?}");

    // With a trusted key, an unsigned image and a manifest changed after
    // signing are refused before anything boots.
    let out = env.cmd().env_remove("CLAWKEEP_IMAGE_PUBKEY").args(["image", "sign", "t"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let unsigned = copy_image(&env, "t", "unsigned");
    fs::remove_file(unsigned.join("manifest.sig")).unwrap();
    let forged = copy_image(&env, "t", "forged");
    edit_manifest(&forged, |m| {
        let c = format!("{} init=/bin/sh", m["cmdline"].as_str().unwrap());
        m["cmdline"] = c.into();
    });
    let pubkey = env.state.path().join("image-key/signing.pub");
    let out = env.cmd().env_remove("CLAWKEEP_IMAGE_PUBKEY").args(["image", "trust"]).arg(&pubkey).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    for (image, why) in [("unsigned", "not signed"), ("forged", "signature")] {
        let (out, took) = vm_run(&env, image, &[], &["true"]);
        assert_eq!(out.status.code(), Some(1), "{image}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains(why), "{image}: {}", text(&out.stderr));
        assert!(took < Duration::from_secs(10), "{image}: refused only after {took:?}");
    }
    fs::remove_file(env.state.path().join("images/trusted.pub")).unwrap();

    let corrupt = copy_image(&env, "t", "corrupt");
    let initrd = corrupt.join("initramfs.cpio");
    fs::remove_file(&initrd).unwrap();
    fs::write(&initrd, b"not a cpio archive").unwrap();
    let (out, _) = vm_run(&env, "corrupt", &[], &["true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("initramfs"), "{}", text(&out.stderr));
    assert_nothing_left(&env);
}

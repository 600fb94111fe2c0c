//! Shared helpers for the end-to-end tests: they drive the real binary.
#![allow(dead_code)]

use assert_cmd::Command;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_clawkeep"))
}

/// True when the jail can be exercised here (root, as in CI). Otherwise
/// prints why the calling test is skipped.
pub fn jail_available(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: {test}: needs root (CI runs as root)");
        return false;
    }
    true
}

/// A fresh state dir and workspace for one test.
pub struct Env {
    pub state: TempDir,
    pub workspace: TempDir,
}

impl Env {
    pub fn new() -> Self {
        Env { state: tempfile::tempdir().unwrap(), workspace: tempfile::tempdir().unwrap() }
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(bin());
        c.env("CLAWKEEP_STATE_DIR", self.state.path()).env_remove("ANTHROPIC_API_KEY");
        c
    }

    /// `clawkeep run --workspace WS <extra> -- <argv>`
    pub fn run(&self, extra: &[&str], argv: &[&str]) -> Command {
        let mut c = self.cmd();
        c.arg("run").arg("--workspace").arg(self.workspace.path()).args(extra).arg("--").args(argv);
        c
    }

    pub fn std_run(&self, extra: &[&str], argv: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(bin());
        c.env("CLAWKEEP_STATE_DIR", self.state.path())
            .arg("run")
            .arg("--workspace")
            .arg(self.workspace.path())
            .args(extra)
            .arg("--")
            .args(argv);
        c
    }

    /// `clawkeep run [extra] --workspace WS -- sh -c SCRIPT` under `script`,
    /// so it has a real terminal; stdin and stdout are piped to the test.
    pub fn in_terminal(&self, extra: &str, script: &str) -> std::process::Child {
        let inner = format!(
            "CLAWKEEP_STATE_DIR={} {} run {extra} --workspace {} -- sh -c '{script}'",
            self.state.path().display(),
            bin().display(),
            self.workspace.path().display()
        );
        std::process::Command::new("script")
            .args(["-qefc", &inner, "/dev/null"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    pub fn audit(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.state.path().join("audit.jsonl")).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// Copies the escape probe into the workspace; returns its in-jail path.
    pub fn install_probe(&self) -> &'static str {
        let src = probe_binary();
        std::fs::copy(&src, self.workspace.path().join("clawkeep-jail-probe")).unwrap();
        "/workspace/clawkeep-jail-probe"
    }
}

/// The escape probe, built by `cargo test --workspace` beside clawkeep.
pub fn probe_binary() -> PathBuf {
    let dir = bin().parent().unwrap().to_path_buf();
    let p = dir.join("clawkeep-jail-probe");
    assert!(p.exists(), "{} is missing: build it with `cargo build -p clawkeep-jail-probe` (cargo test --workspace does)", p.display());
    p
}

/// Every process whose command line contains `marker`.
pub fn processes_with(marker: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmd).contains(marker) && pid != std::process::id() as i32 {
                out.push(pid);
            }
        }
    }
    out
}

/// cgroup directories a launcher with this pid created and left behind.
pub fn cgroups_of(launcher_pid: u32) -> Vec<PathBuf> {
    let prefix = format!("clawkeep-{launcher_pid}-");
    let mut out = Vec::new();
    walk(Path::new("/sys/fs/cgroup"), 0, &mut |p| {
        if p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&prefix)) {
            out.push(p.to_path_buf());
        }
    });
    out
}

fn walk(dir: &Path, depth: usize, f: &mut dyn FnMut(&Path)) {
    if depth > 4 {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            f(&e.path());
            walk(&e.path(), depth + 1, f);
        }
    }
}

/// Host mounts that mention `needle` (the jail's mounts must never appear).
pub fn host_mounts_with(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().filter(|l| l.contains(needle)).map(str::to_owned).collect()
}

pub fn wait_for(mut cond: impl FnMut() -> bool, secs: u64) -> bool {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    cond()
}

/// Whether an unprivileged user can reach and execute `p`.
pub fn reachable_by_others(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.ancestors().skip(1).all(|d| std::fs::metadata(d).map(|m| m.permissions().mode() & 0o001 != 0).unwrap_or(false))
        && std::fs::metadata(p).map(|m| m.permissions().mode() & 0o001 != 0).unwrap_or(false)
}

/// Where .ci/fetch-kernel extracts Debian's kernel (or $CLAWKEEP_KERNEL_DIR).
pub fn kernel_dir() -> PathBuf {
    std::env::var_os("CLAWKEEP_KERNEL_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| "/var/cache/clawkeep/kernel".into())
}

/// True when every (tool, Debian package) is installed and the kernel is
/// extracted; otherwise prints why `test` is skipped.
pub fn image_tools_available(test: &str, tools: &[(&str, &str)]) -> bool {
    for (t, pkg) in tools {
        if !["/usr/sbin", "/sbin", "/usr/bin", "/bin"].iter().any(|d| Path::new(d).join(t).is_file()) {
            println!("skipped: {test}: {t} not installed (apt-get install {pkg})");
            return false;
        }
    }
    let boot = kernel_dir().join("boot");
    let has_kernel =
        std::fs::read_dir(&boot).map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().starts_with("vmlinuz-"))).unwrap_or(false);
    if !has_kernel {
        println!("skipped: {test}: no Debian kernel in {} (run .ci/fetch-kernel)", boot.display());
        return false;
    }
    true
}

/// Copies `bin` and the shared libraries `ldd` names into `root`.
pub fn copy_with_libs(bin: &str, root: &std::path::Path) {
    let mut files = vec![bin.to_string()];
    let ldd = std::process::Command::new("ldd").arg(bin).output().unwrap();
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        if let Some(path) = line.split_whitespace().find(|w| w.starts_with('/')) {
            files.push(path.to_string());
        }
    }
    for f in files {
        let dst = root.join(f.trim_start_matches('/'));
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(&f, &dst).unwrap();
    }
}

//! The QEMU `microvm` command line and process.
//!
//! Devices: virtio-blk-device for the read-only root (vda), the runtime
//! disk (vdb) and the workspace disk (vdc), in that order (the guest names
//! them by discovery order); one virtio-serial port `org.clawkeep.0` on a
//! Unix socket; the console (ttyS0) into a log file of bounded size (see
//! `console`). No network device, no shared host filesystem, no firmware
//! option ROMs, no user config.
//!
//! QEMU is a plain exec (no async runtime here); it is started with
//! PR_SET_PDEATHSIG so it dies with the thread that started it.

use super::console::{self, ConsoleLog};
use super::Accel;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub const BINARY: &str = "qemu-system-x86_64";

/// Everything one QEMU process is started with.
#[derive(Debug, Clone)]
pub struct QemuConfig {
    pub binary: PathBuf,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub rootfs: PathBuf,
    /// The image's command line; [`kernel_cmdline`] adds the VMM's words.
    pub cmdline: String,
    pub memory_mib: u64,
    pub cpus: u32,
    pub runtime_disk: Option<PathBuf>,
    pub workspace_disk: Option<PathBuf>,
    pub socket: PathBuf,
    pub console_log: PathBuf,
    pub accel: Accel,
}

/// The image's command line plus what this VMM needs: `reboot=t` (a
/// triple fault ends QEMU under -no-reboot, with or without ACPI) and,
/// under TCG, a fixed early TSC frequency — without it Debian's kernel
/// finds no TSC reference on microvm and hangs calibrating.
pub fn kernel_cmdline(base: &str, accel: Accel) -> String {
    let mut s = base.trim().to_string();
    s.push_str(" reboot=t");
    if accel == Accel::Tcg {
        s.push_str(" tsc_early_khz=2000000");
    }
    s
}

fn drive(args: &mut Vec<OsString>, id: &str, file: &Path, readonly: bool) {
    let mut d = OsString::from(format!("id={id},format=raw,if=none,file="));
    // QEMU option values escape ',' by doubling it.
    d.push(file.as_os_str().to_string_lossy().replace(',', ",,"));
    if readonly {
        d.push(",readonly=on");
    }
    args.extend(["-drive".into(), d, "-device".into(), format!("virtio-blk-device,drive={id}").into()]);
}

/// The argument vector (without the binary).
pub fn args(c: &QemuConfig) -> Vec<OsString> {
    let esc = |p: &Path| p.as_os_str().to_string_lossy().replace(',', ",,");
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |v: &[&str]| a.extend(v.iter().map(OsString::from));
    push(&["-M", "microvm,x-option-roms=off,isa-serial=on,rtc=on"]);
    push(&["-accel", c.accel.as_qemu()]);
    if c.accel == Accel::Kvm {
        push(&["-cpu", "host"]);
    }
    push(&["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"]);
    // QEMU's own seccomp filter: a device-emulation bug exploited from the
    // guest cannot spawn processes, change ids or use obsolete syscalls.
    push(&["-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"]);
    a.extend(["-m".into(), c.memory_mib.to_string().into(), "-smp".into(), c.cpus.max(1).to_string().into()]);
    a.extend(["-kernel".into(), c.kernel.clone().into_os_string(), "-initrd".into(), c.initramfs.clone().into_os_string()]);
    a.extend(["-append".into(), kernel_cmdline(&c.cmdline, c.accel).into()]);
    drive(&mut a, "root", &c.rootfs, true);
    if let Some(d) = &c.runtime_disk {
        drive(&mut a, "runtime", d, false);
    }
    if let Some(d) = &c.workspace_disk {
        drive(&mut a, "workspace", d, false);
    }
    a.extend(["-device".into(), "virtio-serial-device".into()]);
    a.extend(["-chardev".into(), format!("socket,id=ch0,path={},server=on,wait=off", esc(&c.socket)).into()]);
    a.extend(["-device".into(), format!("virtserialport,chardev=ch0,name={}", clawkeep_guest::proto::PORT_NAME).into()]);
    // The console goes to QEMU's stdout, a pipe `spawn` copies into
    // `console_log` (bounded: see `console`). The file backend opens the
    // pipe again through /proc (its O_TRUNC does nothing to a pipe).
    a.extend(["-serial".into(), "file:/proc/self/fd/1".into()]);
    a
}

/// Starts QEMU; its own stderr goes to `stderr_log`, the guest's console
/// to `c.console_log` (call `ConsoleLog::finish` once QEMU is reaped,
/// before reading the log's end).
pub fn spawn(c: &QemuConfig, stderr_log: &Path) -> std::io::Result<(Child, ConsoleLog)> {
    let err = std::fs::File::create(stderr_log)?;
    let (console_w, log) = ConsoleLog::start(&c.console_log, console::MAX_BYTES)?;
    let mut cmd = Command::new(&c.binary);
    // QEMU gets none of our environment: it may hold the master key or a
    // host provider key, and a VMM escape would read its environ first.
    cmd.env_clear().args(args(c)).stdin(Stdio::null()).stdout(console_w).stderr(err);
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: sigprocmask and prctl are async-signal-safe; the closure
    // allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            // The caller may block signals it forwards; QEMU starts clean.
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent died before the lifeline was set: nobody would
            // ever kill this VM.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    // The write end is dropped with `cmd`: QEMU holds the only one, so
    // the copy ends when QEMU does.
    cmd.spawn().map(|child| (child, log))
}

/// `qemu-system-x86_64` on PATH (or `CLAWKEEP_QEMU`), if any.
pub fn find_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CLAWKEEP_QEMU").map(PathBuf::from) {
        return p.is_file().then_some(p);
    }
    find_on_path(BINARY)
}

pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn cfg(accel: Accel) -> QemuConfig {
        QemuConfig {
            binary: "qemu".into(),
            kernel: "/i/vmlinuz".into(),
            initramfs: "/i/initramfs.cpio".into(),
            rootfs: "/i/rootfs.img".into(),
            cmdline: "console=ttyS0 panic=-1 rdinit=/init clawkeep.roothash=ab".into(),
            memory_mib: 512,
            cpus: 2,
            runtime_disk: Some("/r/run,1.img".into()),
            workspace_disk: Some("/r/ws.img".into()),
            socket: "/r/ch.sock".into(),
            console_log: "/r/console.log".into(),
            accel,
        }
    }

    fn joined(c: &QemuConfig) -> String {
        args(c).iter().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn microvm_with_three_disks_in_order_and_one_port() {
        let s = joined(&cfg(Accel::Tcg));
        assert!(
            s.starts_with(
                "-M microvm,x-option-roms=off,isa-serial=on,rtc=on -accel tcg -nodefaults -no-user-config -nographic -no-reboot \
             -sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny -m 512 -smp 2"
            ),
            "{s}"
        );
        let root = s.find("file=/i/rootfs.img,readonly=on -device virtio-blk-device,drive=root").unwrap();
        let run = s.find("file=/r/run,,1.img -device virtio-blk-device,drive=runtime").unwrap();
        let ws = s.find("file=/r/ws.img -device virtio-blk-device,drive=workspace").unwrap();
        assert!(root < run && run < ws);
        assert!(
            s.contains("-chardev socket,id=ch0,path=/r/ch.sock,server=on,wait=off -device virtserialport,chardev=ch0,name=org.clawkeep.0")
        );
        assert!(s.ends_with("-serial file:/proc/self/fd/1"));
        assert!(!s.contains("-netdev") && !s.contains("virtfs") && !s.contains("-cpu host"));
    }

    #[test]
    fn cmdline_gets_the_vmm_words() {
        let a = args(&cfg(Accel::Tcg));
        let i = a.iter().position(|x| x == "-append").unwrap();
        assert_eq!(a[i + 1], "console=ttyS0 panic=-1 rdinit=/init clawkeep.roothash=ab reboot=t tsc_early_khz=2000000");
        assert_eq!(kernel_cmdline("x ", Accel::Kvm), "x reboot=t");
        assert!(joined(&cfg(Accel::Kvm)).contains("-accel kvm -cpu host"));
    }

    #[test]
    fn optional_disks_are_left_out() {
        let c = QemuConfig { runtime_disk: None, workspace_disk: None, ..cfg(Accel::Tcg) };
        let s = joined(&c);
        assert!(!s.contains("drive=runtime") && !s.contains("drive=workspace"));
    }
}

//! What one Firecracker VM is made of, and the API requests that follow
//! from it.

use super::api::{path_string, BootPlan, BootSource, Drive, MachineConfig, NetworkInterface, Vsock};
use super::error::{FirecrackerError, Result};
use super::jailer::VmmIds;
use clawkeep_core::Limits;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Serial console on ttyS0, reboot by exiting (Firecracker has no reboot:
/// `reboot=k` makes the guest's reboot end the VMM), no PCI probing.
pub const DEFAULT_BOOT_ARGS: &str = "console=ttyS0 reboot=k panic=1 pci=off";

/// A tap device for the guest's one network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tap {
    pub host_dev_name: String,
    pub guest_mac: Option<String>,
}

#[derive(Debug, Clone)]
pub struct FirecrackerConfig {
    /// `[A-Za-z0-9-]{1,64}`; names the VM directory and the cgroup.
    pub id: String,
    /// The firecracker binary; a bare name is looked up on PATH.
    pub binary: PathBuf,
    /// The VM directory is `<state_dir>/<id>`; keep it on the disks' filesystem.
    pub state_dir: PathBuf,
    /// Uncompressed ELF kernel (`vmlinux`).
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub boot_args: String,
    /// `vda`, read-only. The root device when there is no initrd; with an
    /// initrd, the initrd's init mounts (and verifies) it.
    pub rootfs: PathBuf,
    /// `vdb`, writable.
    pub runtime_disk: Option<PathBuf>,
    /// `vdc`, writable.
    pub workspace_disk: Option<PathBuf>,
    pub vcpus: u8,
    pub mem_mib: u32,
    pub tap: Option<Tap>,
    /// At least 3.
    pub guest_cid: u32,
    /// Host ports for guest-initiated vsock connections, bound before the
    /// guest starts (see `take_vsock_listener`).
    pub vsock_listen_ports: Vec<u32>,
    /// The VMM's uid/gid; `None` runs it unjailed as the caller (development only).
    pub jail: Option<VmmIds>,
    /// Limits of the VMM's cgroup (guest memory plus the VMM's overhead).
    pub limits: Limits,
    pub api_timeout: Duration,
    /// How long the API socket may take to appear.
    pub start_timeout: Duration,
    /// How long the guest may take to power off after Ctrl-Alt-Del.
    pub stop_timeout: Duration,
}

impl FirecrackerConfig {
    /// A jailed 1-vCPU, 256 MiB VM with the default boot arguments.
    pub fn new(id: impl Into<String>, kernel: impl Into<PathBuf>, rootfs: impl Into<PathBuf>, state_dir: impl Into<PathBuf>) -> Self {
        Self {
            id: id.into(),
            binary: PathBuf::from("firecracker"),
            state_dir: state_dir.into(),
            kernel: kernel.into(),
            initrd: None,
            boot_args: DEFAULT_BOOT_ARGS.into(),
            rootfs: rootfs.into(),
            runtime_disk: None,
            workspace_disk: None,
            vcpus: 1,
            mem_mib: 256,
            tap: None,
            guest_cid: 3,
            vsock_listen_ports: Vec::new(),
            jail: Some(VmmIds::dedicated(0)),
            limits: Limits::default(),
            api_timeout: Duration::from_secs(5),
            start_timeout: Duration::from_secs(5),
            stop_timeout: Duration::from_secs(10),
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |why: String| Err(FirecrackerError::Config { why });
        if self.id.is_empty() || self.id.len() > 64 || !self.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return bad(format!("VM id {:?} must be 1-64 letters, digits or '-'", self.id));
        }
        if !(1..=32).contains(&self.vcpus) {
            return bad(format!("vcpus {} is outside 1..=32", self.vcpus));
        }
        if self.mem_mib == 0 {
            return bad("mem_mib must be at least 1".into());
        }
        if self.guest_cid < 3 {
            return bad(format!("guest_cid {} is reserved; use 3 or more (vsock(7))", self.guest_cid));
        }
        Ok(())
    }
}

/// Paths as the VMM sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmmPaths {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub rootfs: PathBuf,
    pub runtime: Option<PathBuf>,
    pub workspace: Option<PathBuf>,
    pub vsock_uds: PathBuf,
}

/// The API requests that configure `config`, before `InstanceStart`.
pub fn boot_plan(config: &FirecrackerConfig, p: &VmmPaths) -> Result<BootPlan> {
    let drive = |id: &str, path: &Path, root: bool, ro: bool| -> Result<Drive> {
        Ok(Drive { drive_id: id.into(), path_on_host: path_string(path)?, is_root_device: root, is_read_only: ro })
    };
    let mut drives = vec![drive("vda", &p.rootfs, config.initrd.is_none(), true)?];
    if let Some(r) = &p.runtime {
        drives.push(drive("vdb", r, false, false)?);
    }
    if let Some(w) = &p.workspace {
        drives.push(drive("vdc", w, false, false)?);
    }
    Ok(BootPlan {
        logger: None,
        boot_source: BootSource {
            kernel_image_path: path_string(&p.kernel)?,
            initrd_path: p.initrd.as_deref().map(path_string).transpose()?,
            boot_args: config.boot_args.clone(),
        },
        drives,
        machine: MachineConfig { vcpu_count: config.vcpus, mem_size_mib: config.mem_mib, smt: Some(false) },
        network: config
            .tap
            .iter()
            .map(|t| NetworkInterface { iface_id: "eth0".into(), host_dev_name: t.host_dev_name.clone(), guest_mac: t.guest_mac.clone() })
            .collect(),
        vsock: Some(Vsock { guest_cid: config.guest_cid, uds_path: path_string(&p.vsock_uds)? }),
    })
}

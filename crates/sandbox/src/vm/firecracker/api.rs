//! Firecracker's API: typed request bodies, field for field as in
//! `src/firecracker/swagger/firecracker.yaml`, and a client that sends them.
//!
//! Firecracker answers 204 No Content on success and 4xx/5xx with an
//! `Error` object `{"fault_message": "..."}`; a failure becomes
//! `FirecrackerError::Api` naming the method and path that failed.
//!
//! Paths inside bodies (`kernel_image_path`, `path_on_host`, `uds_path`) are
//! paths as the Firecracker process sees them: inside its chroot when jailed.

use super::error::{FirecrackerError, Result};
use super::http;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `PUT /boot-source` (definition `BootSource`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootSource {
    pub kernel_image_path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<String>,
    pub boot_args: String,
}

/// `PUT /drives/{drive_id}` (definition `Drive`, virtio-block form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drive {
    pub drive_id: String,
    pub path_on_host: String,
    pub is_root_device: bool,
    pub is_read_only: bool,
}

/// `PUT /machine-config` (definition `MachineConfiguration`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineConfig {
    /// 1..=32; with SMT, 1 or even.
    pub vcpu_count: u8,
    pub mem_size_mib: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smt: Option<bool>,
}

/// `PUT /network-interfaces/{iface_id}` (definition `NetworkInterface`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInterface {
    pub iface_id: String,
    /// The tap device on the host, e.g. `ck-tap0`.
    pub host_dev_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_mac: Option<String>,
}

/// `PUT /vsock` (definition `Vsock`). `vsock_id` is deprecated since
/// Firecracker v1.0 and is not sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vsock {
    /// At least 3 (0-2 are reserved, see vsock(7)).
    pub guest_cid: u32,
    pub uds_path: String,
}

/// `PUT /actions` (definition `InstanceActionInfo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionType {
    InstanceStart,
    SendCtrlAltDel,
    FlushMetrics,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    pub action_type: ActionType,
}

/// `PUT /logger` (definition `Logger`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logger {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<LogLevel>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub show_level: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub show_log_origin: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogLevel {
    Error,
    Warning,
    Info,
    Debug,
    Trace,
    Off,
}

/// `GET /` answer (definition `InstanceInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    pub app_name: String,
    pub id: String,
    /// "Not started", "Running" or "Paused".
    pub state: String,
    pub vmm_version: String,
}

/// Firecracker's `Error` definition.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct Fault {
    fault_message: String,
}

/// Everything sent before `InstanceStart`, in the order it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootPlan {
    pub logger: Option<Logger>,
    pub boot_source: BootSource,
    pub drives: Vec<Drive>,
    pub machine: MachineConfig,
    pub network: Vec<NetworkInterface>,
    pub vsock: Option<Vsock>,
}

/// A client for one Firecracker API socket.
#[derive(Debug, Clone)]
pub struct ApiClient {
    socket: PathBuf,
    timeout: Duration,
}

impl ApiClient {
    pub fn new(socket: impl Into<PathBuf>, timeout: Duration) -> Self {
        Self { socket: socket.into(), timeout }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `GET /`: also the readiness probe of the API socket.
    pub fn instance_info(&self) -> Result<InstanceInfo> {
        let resp = self.send("GET", "/", None)?;
        serde_json::from_slice(&resp.body).map_err(|e| FirecrackerError::BadResponse {
            method: "GET",
            path: "/".into(),
            why: format!("instance info is not InstanceInfo JSON: {e}"),
        })
    }

    pub fn put_logger(&self, l: &Logger) -> Result<()> {
        self.put("/logger", l)
    }

    pub fn put_boot_source(&self, b: &BootSource) -> Result<()> {
        self.put("/boot-source", b)
    }

    pub fn put_drive(&self, d: &Drive) -> Result<()> {
        self.put(&format!("/drives/{}", d.drive_id), d)
    }

    pub fn put_machine_config(&self, m: &MachineConfig) -> Result<()> {
        self.put("/machine-config", m)
    }

    pub fn put_network_interface(&self, n: &NetworkInterface) -> Result<()> {
        self.put(&format!("/network-interfaces/{}", n.iface_id), n)
    }

    pub fn put_vsock(&self, v: &Vsock) -> Result<()> {
        self.put("/vsock", v)
    }

    pub fn action(&self, action_type: ActionType) -> Result<()> {
        self.put("/actions", &Action { action_type })
    }

    /// Sends the whole plan in order: logger, boot source, drives, machine,
    /// network interfaces, vsock. Stops at the first refusal.
    pub fn configure(&self, plan: &BootPlan) -> Result<()> {
        if let Some(l) = &plan.logger {
            self.put_logger(l)?;
        }
        self.put_boot_source(&plan.boot_source)?;
        for d in &plan.drives {
            self.put_drive(d)?;
        }
        self.put_machine_config(&plan.machine)?;
        for n in &plan.network {
            self.put_network_interface(n)?;
        }
        if let Some(v) = &plan.vsock {
            self.put_vsock(v)?;
        }
        Ok(())
    }

    fn put(&self, path: &str, body: &impl Serialize) -> Result<()> {
        let json = serde_json::to_vec(body).map_err(|e| FirecrackerError::BadResponse {
            method: "PUT",
            path: path.into(),
            why: format!("cannot encode the request body: {e}"),
        })?;
        self.send("PUT", path, Some(&json)).map(drop)
    }

    fn send(&self, method: &'static str, path: &str, body: Option<&[u8]>) -> Result<http::Response> {
        let resp = http::request(&self.socket, method, path, body, self.timeout).map_err(|source| FirecrackerError::Transport {
            method,
            path: path.into(),
            source,
        })?;
        if resp.is_success() {
            return Ok(resp);
        }
        let fault = serde_json::from_slice::<Fault>(&resp.body)
            .map(|f| f.fault_message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&resp.body).trim().to_string());
        let fault = if fault.is_empty() { resp.reason.clone() } else { fault };
        Err(FirecrackerError::Api { method, path: path.into(), status: resp.status, fault })
    }
}

/// A path as a JSON string; Firecracker's API takes UTF-8 paths only.
pub fn path_string(p: &Path) -> Result<String> {
    p.to_str().map(str::to_owned).ok_or_else(|| FirecrackerError::Config { why: format!("path {} is not UTF-8", p.display()) })
}

#[cfg(test)]
#[path = "api_tests.rs"]
mod tests;

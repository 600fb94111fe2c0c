//! What an operator asks a backend to run.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Resource limits for one agent. `None` means "not limited".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    pub pids: Option<u64>,
    /// CPU bandwidth in CPUs (0.5 = half a core).
    pub cpus: Option<f64>,
}

/// Everything a backend needs to run one command for one agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    /// Short id, unique per run; names the cgroup and the audit records.
    pub run_id: String,
    /// argv[0] is the command, resolved against the agent's PATH.
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Host directory mounted read-write at /workspace.
    pub workspace: PathBuf,
    /// A prepared root tree; `None` binds the host's system directories.
    pub rootfs: Option<PathBuf>,
    pub limits: Limits,
    pub timeout: Option<Duration>,
}

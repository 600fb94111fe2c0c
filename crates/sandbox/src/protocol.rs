//! What crosses the process boundaries of a jail run.
//!
//! launcher ──fd 3: HelperConfig frame, PROCEED, then held open as a lifeline──▶ helper
//! launcher ◀──fd 4: one JailReport JSON line at the end────────────── helper
//! helper   ◀──status pipe: ChildMsg JSON lines─────────────── init / agent
//! helper   ──coverage pipe: one shims::Coverage frame (gated runs)──▶ init

use crate::cgroup::CgroupSet;
use crate::error::SetupFailure;
use crate::sys;
use clawkeep_core::RunSpec;
use serde::{Deserialize, Serialize};
use std::io;
use std::os::fd::RawFd;
use std::path::PathBuf;

/// The argv[1] that turns the clawkeep binary into the sandbox helper.
pub const HELPER_ARG: &str = "__sandbox-helper";
pub const CONFIG_FD: RawFd = 3;
pub const REPORT_FD: RawFd = 4;
/// The executor channel (only when the run is gated).
pub const EXEC_FD: RawFd = 5;
/// Terminal prompts for queued approvals (only with a TTY and a gate).
pub const PROMPT_FD: RawFd = 6;
/// Where the jail's init sends the inference proxy's listening socket
/// (only when `HelperConfig::proxy_port` is set).
pub const PROXY_FD: RawFd = 7;
/// Where the launcher sends the jail's /etc, made outside the jail (only
/// when `HelperConfig::prepared_etc` is set).
pub const ETC_FD: RawFd = 8;

/// A question the helper asks at the user's terminal, or its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PromptMsg {
    Ask {
        id: i64,
        text: String,
    },
    Cancel {
        id: i64,
    },
    /// 'y' once, 's' session, 'n' deny.
    Answer {
        id: i64,
        key: char,
    },
}
/// Sent by the launcher on the lifeline once the start event is durable:
/// only then may the agent's command exec.
pub const PROCEED: &[u8] = b"x";
/// Sent by the launcher on the lifeline to kill the whole jail now.
pub const KILL: &[u8] = b"k";
/// Sent by the launcher right before it closes the lifeline when it calls
/// the run off itself (its start event could not be written or made
/// durable): the jail is torn down as when the launcher dies, but no
/// `run.abort` is recorded, since the launcher is alive and reports why.
pub const CALL_OFF: &[u8] = b"c";
const MAX_FRAME: usize = 16 << 20;

/// Everything the helper needs; sent once, as a length-prefixed JSON frame.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HelperConfig {
    pub spec: RunSpec,
    pub cgroups: CgroupSet,
    /// Apply landlock (false only when the kernel has none).
    pub landlock: bool,
    /// stdin is a terminal of this size: the agent gets a pty of its own,
    /// relayed by the helper (see `pty`).
    pub tty: Option<crate::pty::TtySize>,
    /// Where the helper records an abort when the launcher dies.
    pub audit_path: Option<PathBuf>,
    /// Grace between SIGTERM and SIGKILL on timeout.
    pub kill_grace_ms: u64,
    /// Gated commands: shims, the gate socket and the executor (fd 5).
    pub gate: Option<crate::shims::GateMounts>,
    /// Init listens on 127.0.0.1:port inside the jail's network namespace
    /// and hands the socket out on fd 7: the host serves the inference
    /// proxy on it, so a loopback-only jail reaches the proxy and nothing
    /// else.
    #[serde(default)]
    pub proxy_port: Option<u16>,
    /// The launcher sends the default root's /etc on fd 8 (see
    /// `mounts::PreparedEtc`); init writes it itself when nothing comes.
    #[serde(default)]
    pub prepared_etc: bool,
    /// Where the helper keeps the shims' coverage plan between runs (see
    /// `shims::KeptPlan`); none: planned afresh each run.
    #[serde(default)]
    pub plan_cache: Option<PathBuf>,
}

/// How the agent's run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Outcome {
    Exited { code: i32 },
    Signaled { signal: i32 },
    TimedOut,
    SetupFailed { failure: SetupFailure },
    ExecFailed { path: String, errno: i32, message: String },
}

impl Outcome {
    /// The exit code `clawkeep run` reports: the command's own, 128+signal,
    /// 124 on timeout, 126/127 when the command cannot be executed, 1 when
    /// the jail could not be set up.
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Exited { code } => *code,
            Outcome::Signaled { signal } => 128 + signal,
            Outcome::TimedOut => 124,
            Outcome::ExecFailed { errno, .. } if *errno == libc::ENOENT => 127,
            Outcome::ExecFailed { .. } => 126,
            Outcome::SetupFailed { .. } => 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JailReport {
    pub outcome: Outcome,
    pub peak_memory_bytes: Option<u64>,
    pub peak_pids: Option<u64>,
    pub oom_killed: bool,
    /// Landlock status as the agent applied it ("fully_enforced", ...).
    pub landlock: Option<String>,
}

/// Messages from the jail's init and the agent (before exec) to the helper.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "msg")]
pub enum ChildMsg {
    Setup { failure: SetupFailure },
    Landlock { status: String },
    ExecFailed { path: String, errno: i32, message: String },
    Exit { code: Option<i32>, signal: Option<i32> },
}

impl ChildMsg {
    /// One atomic write (< PIPE_BUF for any message we send).
    pub fn send(&self, fd: RawFd) {
        if let Ok(mut line) = serde_json::to_vec(self) {
            line.push(b'\n');
            let _ = sys::write_all(fd, &line);
        }
    }
}

pub fn write_frame(fd: RawFd, value: &impl Serialize) -> io::Result<()> {
    let body = serde_json::to_vec(value).map_err(io::Error::other)?;
    let mut buf = (body.len() as u32).to_le_bytes().to_vec();
    buf.extend_from_slice(&body);
    sys::write_all(fd, &buf)
}

pub fn read_frame<T: for<'de> Deserialize<'de>>(fd: RawFd) -> io::Result<T> {
    let mut len = [0u8; 4];
    sys::read_exact(fd, &mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "frame too large"));
    }
    let mut body = vec![0u8; len];
    sys::read_exact(fd, &mut body)?;
    serde_json::from_slice(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert_eq!(Outcome::Exited { code: 3 }.exit_code(), 3);
        assert_eq!(Outcome::Signaled { signal: 9 }.exit_code(), 137);
        assert_eq!(Outcome::TimedOut.exit_code(), 124);
        let nf = Outcome::ExecFailed { path: "x".into(), errno: libc::ENOENT, message: String::new() };
        assert_eq!(nf.exit_code(), 127);
    }

    #[test]
    fn frame_roundtrip() {
        let (r, w) = sys::pipe().unwrap();
        use std::os::fd::AsRawFd;
        write_frame(w.as_raw_fd(), &vec!["a".to_string(), "b".into()]).unwrap();
        let back: Vec<String> = read_frame(r.as_raw_fd()).unwrap();
        assert_eq!(back, ["a", "b"]);
    }
}

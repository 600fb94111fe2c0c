//! The gate's wire protocol, shared by the shim (inside the jail) and the
//! supervisor (outside it).
//!
//! A connection carries length-prefixed JSON frames: a 4-byte big-endian
//! length, then that many bytes of JSON. Frames over [`MAX_FRAME`] are
//! refused before any allocation. The first frame from the shim is an
//! [`Request`] and carries the shim's stdin, stdout and stderr as
//! SCM_RIGHTS descriptors, so an approved command reads and writes the
//! agent's own stdio; the supervisor answers with [`Reply`] frames.

pub mod client;
pub mod fdpass;
pub mod frame;
pub mod root;

use serde::{Deserialize, Serialize};

pub use frame::{decode, encode, FrameError, MAX_FRAME};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Where the gate socket and the shims live inside a jail.
pub const JAIL_GATE_DIR: &str = "/run/clawkeep";
pub const JAIL_GATE_SOCKET: &str = "/run/clawkeep/gate.sock";
pub const JAIL_SHIM_DIR: &str = "/run/clawkeep/shims";
/// `path<TAB>command` lines: masked real binaries and the command they are.
pub const JAIL_MANIFEST: &str = "/run/clawkeep/manifest";

/// What the shim asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Exec {
        version: u32,
        command: String,
        args: Vec<String>,
        cwd: String,
        env: Vec<(String, String)>,
        tty: bool,
    },
    /// Forward a signal the shim received to the running command.
    Signal {
        signal: i32,
    },
}

/// What the supervisor answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    /// The request waits for a human (approval queue item `id`).
    Pending { id: i64, reason: String },
    /// The command runs.
    Started,
    /// The command ended: `code` is what the shim exits with.
    Exit { code: i32 },
    /// Refused by policy or by an operator: print `reason`, exit 126.
    Denied { reason: String },
    /// The request itself was bad or the gate failed.
    Error { message: String },
}

/// Exit code of a denied command.
pub const EXIT_DENIED: i32 = 126;
/// Exit code when the gate could not be reached or failed.
pub const EXIT_GATE_ERROR: i32 = 125;

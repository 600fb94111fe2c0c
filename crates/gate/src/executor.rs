//! Where approved commands run. The jail provides the real implementation
//! (its in-jail executor); the gate only sees this trait.

use std::os::fd::OwnedFd;

/// An approved command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub command: String,
    pub args: Vec<String>,
    pub cwd: String,
    /// Already scrubbed by the policy.
    pub env: Vec<(String, String)>,
    pub timeout_ms: Option<u64>,
    /// Relay and count output (false when the shim sits on a terminal).
    pub relay: bool,
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub exit_code: i32,
    pub timed_out: bool,
    pub bytes_out: Option<u64>,
}

pub trait RunningJob: Send {
    /// The command is set up but waits before exec until this is called:
    /// the gate calls it once its decision record is on disk.
    fn release(&self);
    /// Something that forwards signals to the command while another
    /// thread waits for it.
    fn signaller(&self) -> Box<dyn Fn(i32) + Send + Sync>;
    /// Blocks until the command ends.
    fn wait(self: Box<Self>) -> Result<Outcome, String>;
}

pub trait Executor: Send + Sync {
    /// Starts `job` with the shim's stdin, stdout and stderr.
    fn submit(&self, job: &Job, stdio: [OwnedFd; 3]) -> Result<Box<dyn RunningJob>, String>;
}

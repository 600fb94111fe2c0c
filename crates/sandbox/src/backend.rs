//! The isolation-backend interface: create / start / exec / stop / destroy
//! / status for one agent. Synchronous on purpose: a backend runs
//! processes and waits on them; callers that are async run it on a thread.
//!
//! Implemented by [`VmBackend`] (one microVM per agent). The jail predates
//! this trait and is driven through `launcher` directly for now.

use crate::pty::TtySize;
use crate::vm::channel::{ChannelError, ExecStream, StreamSender};
use crate::vm::{disk, Vm, VmConfig, VmError};
use clawkeep_guest::proto::{self, ExecRequest, Message};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

/// What a backend is asked to hold for one agent.
#[derive(Debug, Clone, Default)]
pub struct AgentSpec {
    pub name: String,
    /// Host directory the agent sees at /workspace; changes come back
    /// after `stop`.
    pub workspace: Option<PathBuf>,
}

/// A command to run for the agent.
#[derive(Debug, Clone)]
pub struct ExecSpec {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    pub uid: u32,
    pub gid: u32,
    /// Run on a terminal of this size (the user's is one); None = pipes.
    pub tty: Option<TtySize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    Stopped,
    Destroyed,
}

/// What a running command produces, in order; `Exit` is last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Started {
        pid: i32,
    },
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The backend could not run the command as asked (shown to the user).
    Error(String),
    Exit {
        code: Option<i32>,
        signal: Option<i32>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{op} is not possible while the agent is {status:?}")]
    State { op: &'static str, status: Status },
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Channel(#[from] ChannelError),
}

/// A command started by [`Backend::exec`].
pub trait Process: Send {
    /// The next event; blocks.
    fn next(&mut self) -> Result<Event, BackendError>;
    /// A handle to feed stdin and send signals from another thread.
    fn control(&self) -> Box<dyn ProcessControl>;
    /// Whether the command runs on a terminal: [`ExecSpec::tty`] asked
    /// and the backend could (a guest built before terminals cannot).
    /// Then its stdin is typed into the terminal, its output arrives as
    /// stdout, and [`ProcessControl::resize`] follows the user's.
    fn tty(&self) -> bool;
}

pub trait ProcessControl: Send + Sync {
    /// Writes to the command's stdin; an empty slice closes it.
    fn stdin(&self, data: &[u8]) -> Result<(), BackendError>;
    fn signal(&self, signo: i32) -> Result<(), BackendError>;
    /// Resizes the command's terminal; nothing happens without one.
    fn resize(&self, size: TtySize) -> Result<(), BackendError>;
}

pub trait Backend {
    fn create(&mut self, spec: &AgentSpec) -> Result<(), BackendError>;
    fn start(&mut self) -> Result<(), BackendError>;
    fn exec(&mut self, cmd: &ExecSpec) -> Result<Box<dyn Process>, BackendError>;
    /// Stops the agent cleanly (bounded), bringing the workspace back.
    fn stop(&mut self) -> Result<(), BackendError>;
    /// Removes everything the agent left on the host.
    fn destroy(&mut self) -> Result<(), BackendError>;
    fn status(&self) -> Status;
}

/// The vm backend: QEMU microvm booted from a verified image.
#[derive(Debug)]
pub struct VmBackend {
    cfg: VmConfig,
    status: Status,
    vm: Option<Vm>,
    /// (workspace disk, host directory, scratch directory)
    workspace: Option<(PathBuf, PathBuf, PathBuf)>,
    /// Whether a guest ever ran (only then can the workspace have changed).
    booted: bool,
    pub shutdown_grace: Duration,
}

impl VmBackend {
    pub fn new(cfg: VmConfig) -> VmBackend {
        VmBackend { cfg, status: Status::Destroyed, vm: None, workspace: None, booted: false, shutdown_grace: Duration::from_secs(10) }
    }

    /// The running VM (boot time, guest kernel, console log).
    pub fn vm(&self) -> Option<&Vm> {
        self.vm.as_ref()
    }
}

impl Backend for VmBackend {
    fn create(&mut self, spec: &AgentSpec) -> Result<(), BackendError> {
        if let Some(dir) = &spec.workspace {
            let scratch =
                disk::private_dir(&self.cfg.run_root, "ws").map_err(|e| VmError::RunDir { path: self.cfg.run_root.clone(), source: e })?;
            let img = scratch.join("workspace.img");
            if let Err(e) = disk::workspace_image(&img, dir) {
                let _ = std::fs::remove_dir_all(&scratch);
                return Err(VmError::Disk(e).into());
            }
            self.cfg.workspace_disk = Some(img.clone());
            self.workspace = Some((img, dir.clone(), scratch));
        }
        self.status = Status::Created;
        Ok(())
    }

    fn start(&mut self) -> Result<(), BackendError> {
        if self.status != Status::Created {
            return Err(BackendError::State { op: "start", status: self.status });
        }
        self.vm = Some(Vm::start(&self.cfg)?);
        self.booted = true;
        self.status = Status::Running;
        Ok(())
    }

    fn exec(&mut self, cmd: &ExecSpec) -> Result<Box<dyn Process>, BackendError> {
        let Some(vm) = &self.vm else { return Err(BackendError::State { op: "exec", status: self.status }) };
        let req = ExecRequest {
            argv: cmd.argv.clone(),
            env: cmd.env.clone(),
            cwd: cmd.cwd.clone(),
            uid: cmd.uid,
            gid: cmd.gid,
            stdin_credit: true,
            tty: cmd.tty.map(wire_size),
        };
        Ok(Box::new(VmProcess(vm.channel.exec(req)?)))
    }

    fn stop(&mut self) -> Result<(), BackendError> {
        if let Some(vm) = self.vm.take() {
            vm.shutdown(self.shutdown_grace)?;
        }
        self.status = Status::Stopped;
        if let (Some((img, dir, scratch)), true) = (&self.workspace, self.booted) {
            disk::copy_back(img, dir, scratch).map_err(VmError::Disk)?;
        }
        Ok(())
    }

    fn destroy(&mut self) -> Result<(), BackendError> {
        if let Some(vm) = self.vm.take() {
            vm.kill();
        }
        if let Some((_, _, scratch)) = self.workspace.take() {
            let _ = std::fs::remove_dir_all(scratch);
        }
        self.status = Status::Destroyed;
        Ok(())
    }

    fn status(&self) -> Status {
        self.status
    }
}

impl Drop for VmBackend {
    fn drop(&mut self) {
        let _ = self.destroy();
    }
}

fn wire_size(s: TtySize) -> proto::TtySize {
    proto::TtySize { rows: s.rows, cols: s.cols }
}

struct VmProcess(ExecStream);

impl Process for VmProcess {
    fn next(&mut self) -> Result<Event, BackendError> {
        loop {
            return Ok(match self.0.recv()? {
                Message::Started { pid } => Event::Started { pid },
                Message::Stdout(d) => Event::Stdout(d),
                Message::Stderr(d) => Event::Stderr(d),
                Message::Error { message } => Event::Error(message),
                Message::Exit(s) => Event::Exit { code: s.code, signal: s.signal },
                _ => continue,
            });
        }
    }

    fn control(&self) -> Box<dyn ProcessControl> {
        Box::new(VmControl(self.0.sender()))
    }

    fn tty(&self) -> bool {
        self.0.tty()
    }
}

struct VmControl(StreamSender);

impl ProcessControl for VmControl {
    fn stdin(&self, data: &[u8]) -> Result<(), BackendError> {
        Ok(self.0.stdin(data)?)
    }
    fn signal(&self, signo: i32) -> Result<(), BackendError> {
        Ok(self.0.signal(signo)?)
    }
    fn resize(&self, size: TtySize) -> Result<(), BackendError> {
        Ok(self.0.resize(wire_size(size))?)
    }
}

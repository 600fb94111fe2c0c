//! One error type for the sandbox; every kernel step has its own variant in
//! `Step`, so a failure names the step that failed and the path it failed on.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::io;
use std::path::PathBuf;
use thiserror::Error;

/// A step of jail set-up. The names are stable: they appear in errors and
/// in the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    OpenSource,
    IdmapUserns,
    IdmapMount,
    CloneNamespaces,
    JoinCgroup,
    WriteIdMap,
    SetIds,
    UnshareCgroup,
    MountPrivate,
    MountTmpfs,
    MountBind,
    RemountReadOnly,
    AttachWorkspace,
    MountDevpts,
    MountProc,
    MaskPath,
    WriteFile,
    MakeNode,
    Hostname,
    Loopback,
    PivotRoot,
    UmountOldRoot,
    Chdir,
    Terminal,
    DropCapabilities,
    NoNewPrivs,
    Landlock,
    Seccomp,
    Exec,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        f.write_str(&s.replace('_', " "))
    }
}

/// A set-up failure inside the jail, carried back to the launcher as data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Error)]
#[error("jail set-up failed at '{step}' on {target}: {message}")]
pub struct SetupFailure {
    pub step: Step,
    pub target: String,
    pub errno: i32,
    pub message: String,
}

impl SetupFailure {
    pub fn new(step: Step, target: impl Into<String>, err: &io::Error) -> Self {
        Self { step, target: target.into(), errno: err.raw_os_error().unwrap_or(0), message: err.to_string() }
    }

    pub fn msg(step: Step, target: impl Into<String>, message: impl Into<String>) -> Self {
        Self { step, target: target.into(), errno: 0, message: message.into() }
    }
}

#[derive(Debug, Error)]
pub enum SandboxError {
    #[error("workspace {path} {why}")]
    Workspace { path: PathBuf, why: String },
    #[error("rootfs {path} {why}")]
    Rootfs { path: PathBuf, why: String },
    #[error("cannot start the sandbox helper {exe}: {source}")]
    SpawnHelper { exe: PathBuf, source: io::Error },
    #[error("talking to the sandbox helper failed: {0}; run 'clawkeep doctor' to check this host")]
    HelperIo(#[source] io::Error),
    #[error("the sandbox helper died without a report ({status}); nothing is left running")]
    HelperDied { status: String },
    #[error(transparent)]
    Setup(#[from] SetupFailure),
}

//! Running the host tools an image build uses (busybox, ldd, veritysetup):
//! one place that turns "not installed" and "failed" into errors naming
//! the tool, what it worked on and its last line of complaint.

use crate::{ImageError, Result};
use std::path::Path;
use std::process::Command;

/// Runs `cmd`, the tool `tool` working on `path`, and returns its stdout.
/// A tool that is not installed is `ToolMissing` (from Debian's `package`);
/// one that fails is `ToolFailed` with the last line it wrote to stderr.
pub(crate) fn stdout(tool: &'static str, package: &'static str, path: &Path, cmd: &mut Command) -> Result<Vec<u8>> {
    let out = cmd.output().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ImageError::ToolMissing { tool, package },
        _ => ImageError::ToolFailed { tool, path: path.into(), detail: format!("cannot run it: {e}") },
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no message");
        return Err(ImageError::ToolFailed { tool, path: path.into(), detail: format!("exited with {}: {last}", out.status) });
    }
    Ok(out.stdout)
}

//! `clawkeep audit verify`.

use crate::Failure;
use std::path::PathBuf;

/// The state directory: the flag or CLAWKEEP_STATE_DIR, else the default.
pub fn state_root(state_dir: Option<PathBuf>) -> Result<PathBuf, Failure> {
    match state_dir {
        Some(d) => Ok(d),
        None => clawkeep_core::paths::default_state_dir(|k| std::env::var(k).ok()).map_err(|e| Failure::usage(e.to_string())),
    }
}

pub fn audit_path(state_dir: Option<PathBuf>) -> Result<PathBuf, Failure> {
    Ok(state_root(state_dir)?.join("audit.jsonl"))
}

pub fn verify(state_dir: Option<PathBuf>, file: Option<PathBuf>, anchors: &[clawkeep_audit::Anchor], json: bool) -> Result<u8, Failure> {
    let path = match file {
        Some(f) => f,
        None => audit_path(state_dir)?,
    };
    if !path.exists() {
        return Err(Failure::usage(format!("no audit log at {}; pass --file PATH or --state-dir DIR", path.display())));
    }
    let report = clawkeep_audit::verify_anchored(&path, anchors).map_err(|e| Failure::runtime(e.to_string()))?;
    if json {
        let v = serde_json::json!({
            "file": path, "lines": report.lines, "ok": report.is_ok(), "first_broken": report.first_broken,
            "head": report.head, "anchors_checked": anchors.len(),
        });
        println!("{v}");
    } else if let Some(b) = &report.first_broken {
        println!("BROKEN {}: line {}: {} ({} lines in the file)", path.display(), b.line, b.reason, report.lines);
    } else {
        let anchored = match anchors.len() {
            0 => String::new(),
            n => format!(", {n} anchor{} held", if n == 1 { "" } else { "s" }),
        };
        println!("ok {}: {} lines, hash chain intact{anchored}", path.display(), report.lines);
        if let Some(h) = &report.head {
            println!("head {h}   (keep it elsewhere: `audit verify --anchor` with it later finds this log cut short or rewritten)");
        }
    }
    Ok(if report.is_ok() { 0 } else { 1 })
}

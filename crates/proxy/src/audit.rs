//! Each inference call's audit record: one `llm.call` event per settled or
//! refused request. The events go through a [`GroupWriter`], so no request
//! handler blocks on the disk and concurrent calls share each fsync; each
//! response (a stream: its end) waits for its own event (see [`Recorded`]).

use crate::ledger::UsageRow;
use crate::meter::Recorded;
use crate::state::UsageObserver;
use clawkeep_audit::GroupWriter;
use serde_json::json;
use std::sync::Arc;

/// Largest prompt kept in one audit event; a longer one is cut (as text).
pub const AUDIT_PROMPT_MAX: usize = 64 * 1024;

/// The observer that audits every request of `run_id`'s proxy: counts and
/// timings, and the prompt only when the config's `audit_prompts` opted in.
/// Replies never reach the audit.
pub fn audit_observer(writer: Arc<GroupWriter>, run_id: String) -> UsageObserver {
    UsageObserver(Arc::new(move |row: &UsageRow, prompt: Option<&[u8]>| {
        let mut fields = json!({
            "run_id": run_id,
            "agent": row.agent,
            "model": row.model,
            "provider": row.provider,
            "status": row.status,
            "input_tokens": row.input_tokens,
            "output_tokens": row.output_tokens,
            "cost_usd": row.cost_usd,
            "latency_ms": row.latency_ms,
        });
        if let Some(body) = prompt {
            let (value, truncated) = prompt_field(body);
            fields["prompt"] = value;
            if truncated {
                fields["prompt_truncated"] = json!(true);
            }
        }
        let (on_disk, recorded) = tokio::sync::oneshot::channel();
        writer.submit(
            "llm.call",
            fields,
            Box::new(move |appended| {
                if let Err(e) = appended {
                    tracing::error!(error = %e, "an inference call could not be audited");
                }
                let _ = on_disk.send(());
            }),
        );
        Recorded::when(recorded)
    }))
}

/// An opted-in prompt as an audit field: the request's JSON as it was, or
/// its first [`AUDIT_PROMPT_MAX`] bytes as text when longer (`true`).
fn prompt_field(body: &[u8]) -> (serde_json::Value, bool) {
    if body.len() <= AUDIT_PROMPT_MAX {
        if let Ok(v) = serde_json::from_slice(body) {
            return (v, false);
        }
    }
    let cut = &body[..body.len().min(AUDIT_PROMPT_MAX)];
    (json!(String::from_utf8_lossy(cut)), body.len() > AUDIT_PROMPT_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_are_kept_as_json_and_cut_when_long() {
        let (v, cut) = prompt_field(br#"{"model":"m","messages":[]}"#);
        assert_eq!((v["model"].as_str(), cut), (Some("m"), false));
        let (v, cut) = prompt_field(b"not json");
        assert_eq!((v.as_str(), cut), (Some("not json"), false));
        let long = format!(r#"{{"model":"m","x":"{}"}}"#, "a".repeat(AUDIT_PROMPT_MAX));
        let (v, cut) = prompt_field(long.as_bytes());
        assert!(cut);
        assert_eq!(v.as_str().map(str::len), Some(AUDIT_PROMPT_MAX));
    }
}

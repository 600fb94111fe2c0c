//! What the gate announces: the API's SSE stream and the terminal prompt
//! subscribe to these.

use clawkeep_store::Approval;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum GateEvent {
    /// A request waits for an operator.
    Queued { approval: Approval },
    /// An operator (or a disconnect) settled it.
    Resolved { approval: Approval },
    /// A command the policy allowed or an operator approved ran.
    Finished { agent: String, command: String, exit_code: i32 },
    /// The kill switch was used.
    Killed { agent: String },
}

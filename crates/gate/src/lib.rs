//! The gate: the supervisor between an agent's shims and the commands they
//! ask for.
//!
//! A request arrives on the agent's own Unix socket (the socket says which
//! agent it is; SO_PEERCRED says which uid and pid inside). The policy
//! decides allow, deny or ask; "ask" waits in the SQLite approval queue
//! until an operator answers (API, CLI or terminal prompt). Allowed
//! commands run through an [`Executor`] *inside the agent's jail*, never
//! on the host. Every decision and its outcome is audited.
//!
//! The gate is a library with no assumption about its host process: today
//! `clawkeep run` hosts it, later the daemon.

pub mod api;
pub mod conn;
pub mod events;
pub mod executor;
pub mod shown;
pub mod supervisor;

pub use events::GateEvent;
pub use executor::{Executor, Job, Outcome, RunningJob};
pub use supervisor::{Gate, GateConfig, Resolve, ResolveError, Switch};

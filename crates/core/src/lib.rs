//! Domain types shared by every clawkeep crate.
//!
//! This crate is the bottom of the dependency graph: it knows nothing about
//! sandboxes, audit sinks or the CLI. It holds the vocabulary they share:
//! sizes, durations, the agent's environment rules, state paths and the run
//! specification that the binary hands to a backend.

pub mod duration;
pub mod env;
pub mod lock;
pub mod paths;
pub mod size;
pub mod spec;
pub mod time;

pub use duration::parse_duration;
pub use env::{is_secret_name, AgentEnv, EnvError, EnvRequest};
pub use lock::lock_beside;
pub use paths::{state_dir, StateDirError};
pub use size::parse_size;
pub use spec::{Limits, RunSpec};

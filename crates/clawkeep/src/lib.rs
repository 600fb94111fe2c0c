//! clawkeep: parses arguments, loads state paths, calls the libraries.
//!
//! Two binaries share this crate. `clawkeep` (`main.rs`, [`launcher_main`])
//! is exec'd for every command and for `run` is the first step of every
//! jail's start: it holds only what a jail run needs before its agent
//! starts (the jail, the audit log, the token, the gate's sockets), so its
//! start and end stay small. Every other command, the vm backend and the
//! run's gate, API and inference proxy (`services`, started when something
//! first connects) are `clawkeep-full` (`full.rs`, [`full_main`]), which
//! holds the async runtime, HTTP, TLS and SQLite. A static PIE relocates
//! all of its pointers at every exec: ~0.4 ms for the full binary here.
//!
//! Exit codes: 0 ok, 1 runtime failure, 2 usage or bad input, the agent's
//! own code for `run` (128+signal when killed), 124 timeout, 126/127 when
//! the command cannot be executed.

mod agents_dir;
mod api_client;
mod audit_cmd;
mod cli;
mod doctor;
mod entry;
mod failure;
mod gate_cmd;
mod gate_run;
mod image_cmd;
mod logging;
mod proxy_run;
mod run;
mod secret_cmd;
mod services;
mod usage_cmd;
mod vm_doctor;
mod vm_run;
mod vm_signals;

pub use entry::{full_main, launcher_main};
pub use failure::Failure;

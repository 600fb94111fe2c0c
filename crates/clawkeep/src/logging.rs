//! Diagnostics from the libraries (the proxy's upstream failures, a usage
//! row that could not be written) on stderr, never stdout: stdout carries
//! `--json` output and, under `clawkeep run`, the agent's own output.
//!
//! Warnings and errors by default; `CLAWKEEP_LOG` takes a tracing filter
//! (`info`, `clawkeep_proxy=debug`). Lines are JSON when stderr is not a
//! terminal (a service's journal, a log collector), plain text otherwise.
//! No secret is ever a field: the proxy logs errors with URLs stripped and
//! never a header.

use std::io::IsTerminal;
use tracing_subscriber::filter::{EnvFilter, LevelFilter};

pub const LOG_ENV: &str = "CLAWKEEP_LOG";

/// For `clawkeep run`: a `CLAWKEEP_LOG` filter is checked (and installed)
/// now, so a bad one is still a usage error; the default one waits for
/// [`init_default`] where the run first needs it (its gate thread), off the
/// jail's start-up.
pub fn init_if_asked() -> Result<(), crate::Failure> {
    match std::env::var_os(LOG_ENV) {
        Some(v) if !v.is_empty() => init(),
        _ => Ok(()),
    }
}

/// The default subscriber, unless one is installed already.
pub fn init_default() {
    let _ = init();
}

/// Installs the process-wide subscriber; a bad `CLAWKEEP_LOG` is a usage
/// error naming it.
pub fn init() -> Result<(), crate::Failure> {
    let filter = match std::env::var(LOG_ENV) {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::builder()
            .with_default_directive(LevelFilter::WARN.into())
            .parse(&spec)
            .map_err(|e| crate::Failure::usage(format!("invalid {LOG_ENV} '{spec}': {e}; use a level like warn or info")))?,
        _ => EnvFilter::default().add_directive(LevelFilter::WARN.into()),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(false);
    // Another subscriber already installed (tests) is not an error.
    let _ = if std::io::stderr().is_terminal() { builder.compact().try_init() } else { builder.json().try_init() };
    Ok(())
}

//! The command line. Parsing only: no behaviour lives here.

use clap::{Args, Parser, Subcommand};
use clawkeep_core::EnvRequest;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(name = "clawkeep", version, about = "A secure host for autonomous AI agents", propagate_version = true)]
pub struct Cli {
    /// Where audit logs and state live [default: /var/lib/clawkeep as root,
    /// else $XDG_STATE_HOME/clawkeep]
    #[arg(long, global = true, env = "CLAWKEEP_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command inside a hardened jail; behaves like the command itself
    Run(RunArgs),
    /// Show which isolation guarantees hold on this host
    Doctor {
        /// Print the checks as JSON
        #[arg(long)]
        json: bool,
    },
    /// Inspect the tamper-evident audit log
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the whole hash chain and name the first broken line
    Verify {
        /// The audit file [default: <state-dir>/audit.jsonl]
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Host directory mounted read-write at /workspace (also HOME and cwd)
    /// [default: the current directory]
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,

    /// A prepared root tree to use instead of the host's system directories
    #[arg(long, value_name = "DIR")]
    pub rootfs: Option<PathBuf>,

    /// Memory limit, e.g. 512M or 2G (the agent is OOM-killed above it)
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub memory: Option<u64>,

    /// Maximum number of processes and threads
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub pids: u64,

    /// CPU bandwidth in CPUs, e.g. 0.5 or 2
    #[arg(long, value_name = "N", value_parser = parse_cpus)]
    pub cpus: Option<f64>,

    /// Set NAME=VALUE, or pass the host's NAME, into the agent's environment
    #[arg(long = "env", short = 'e', value_name = "K=V")]
    pub env: Vec<EnvRequest>,

    /// Let a secret-looking variable (*_API_KEY, *_TOKEN, *_SECRET) given with --env in
    #[arg(long = "allow-secret-env", value_name = "NAME")]
    pub allow_secret_env: Vec<String>,

    /// Kill the command after this long (exit code 124), e.g. 30s or 5m
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// The command and its arguments, after `--`
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

fn parse_size(s: &str) -> Result<u64, String> {
    clawkeep_core::parse_size(s).map_err(|e| e.to_string())
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    clawkeep_core::parse_duration(s).map_err(|e| e.to_string())
}

fn parse_cpus(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.01..=4096.0).contains(&v) => Ok(v),
        _ => Err(format!("invalid CPU count '{s}'; use a number like 0.5 or 2")),
    }
}

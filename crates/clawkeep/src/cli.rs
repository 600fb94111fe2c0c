//! The command line. Parsing only: no behaviour lives here.

use clap::{Args, Parser, Subcommand};
use clawkeep_core::EnvRequest;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(name = "clawkeep", version, about = "A secure host for autonomous AI agents", propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,

    #[command(subcommand)]
    pub command: Command,
}

/// What every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// Where audit logs and state live [default: /var/lib/clawkeep as root,
    /// else $XDG_STATE_HOME/clawkeep]
    #[arg(long, global = true, env = "CLAWKEEP_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

/// `clawkeep run ...` alone, as the launcher parses it when `run` comes
/// first: the same `run` as [`Cli`]'s (its help, errors and exit codes),
/// without building every other command's parser at each run's start.
#[derive(Debug, Parser)]
#[command(name = "clawkeep", version, about = "A secure host for autonomous AI agents", propagate_version = true)]
pub struct RunCli {
    #[command(flatten)]
    pub global: Global,

    #[command(subcommand)]
    pub command: RunOnly,
}

#[derive(Debug, Subcommand)]
pub enum RunOnly {
    /// Run a command inside a hardened jail; behaves like the command itself
    Run(RunArgs),
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
    /// Provider keys in the sealed store (values never on the command line)
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Validate and explain command policies
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Agent images for the microVM backend: build, sign, verify, list
    #[command(subcommand)]
    Image(ImageCommand),
    /// List gated requests waiting for an operator
    Approvals {
        /// Print them as JSON
        #[arg(long)]
        json: bool,
    },
    /// Approve waiting requests (several IDs approve them as a batch)
    Approve {
        #[arg(required = true, value_name = "ID")]
        ids: Vec<i64>,
        /// once: this request; session: identical requests for the rest of the run;
        /// always: adds an explicit allow rule to the policy file (shown first)
        #[arg(long, default_value = "once", value_name = "SCOPE")]
        scope: String,
        /// Save an 'always' rule without asking
        #[arg(long)]
        yes: bool,
    },
    /// Deny a waiting request
    Deny {
        #[arg(value_name = "ID")]
        id: i64,
        /// Told to the agent
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Past gate decisions, newest first
    History {
        /// Only this agent's decisions
        #[arg(long)]
        agent: Option<String>,
        /// Only decisions on this command, e.g. git
        #[arg(long)]
        command: Option<String>,
        /// allowed, denied, approved, rejected or abandoned
        #[arg(long)]
        outcome: Option<String>,
        /// RFC 3339 time or prefix, e.g. 2026-11-22
        #[arg(long)]
        since: Option<String>,
        /// Show at most this many
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Skip this many of the newest first (to page back)
        #[arg(long, default_value_t = 0)]
        offset: u32,
        /// Print them as JSON
        #[arg(long)]
        json: bool,
    },
    /// Inference requests made through the proxy: tokens, cost, latency
    Usage {
        /// Only this agent's requests
        #[arg(long)]
        agent: Option<String>,
        /// A duration back from now (e.g. 1h, 7d) or an RFC 3339 time or
        /// prefix (e.g. 2026-11-22)
        #[arg(long)]
        since: Option<String>,
        /// Print the requests as JSON
        #[arg(long)]
        json: bool,
    },
    /// The kill switch: stop an agent's whole sandbox now (or freeze/thaw it)
    Kill {
        #[arg(value_name = "AGENT")]
        agent: String,
        /// Freeze every process instead of killing them
        #[arg(long, conflicts_with = "thaw")]
        freeze: bool,
        /// Thaw a frozen sandbox
        #[arg(long)]
        thaw: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Seal a secret; the value is read from stdin, or from --from-env VAR
    Set {
        #[arg(value_name = "NAME")]
        name: String,
        /// Read the value from this environment variable instead of stdin
        #[arg(long, value_name = "VAR")]
        from_env: Option<String>,
    },
    /// List secret names (never values)
    List {
        /// Print the names as JSON
        #[arg(long)]
        json: bool,
    },
    /// Remove a secret
    Rm {
        #[arg(value_name = "NAME")]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy file (errors name file:line)
    Check {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Show which rule decides a command, and why
    Explain {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The working directory to assume
        #[arg(long, default_value = "/workspace", value_name = "DIR")]
        cwd: String,
        #[arg(last = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Print the built-in policy used when `run` gets no --policy
    ShowDefault,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the whole hash chain and name the first broken line; prints the
    /// head (LINE:SHA256) to keep elsewhere and pass back with --anchor
    Verify {
        /// The audit file [default: <state-dir>/audit.jsonl]
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
        /// A head printed by an earlier check: that line must still be there,
        /// unchanged (catches a log cut short or rewritten); repeatable
        #[arg(long, value_name = "LINE:SHA256")]
        anchor: Vec<clawkeep_audit::Anchor>,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build an image: kernel, initramfs, dm-verity rootfs, manifest
    Build {
        /// The image's name (letters, digits, '.', '-', '_')
        #[arg(long, value_name = "NAME")]
        name: String,
        /// Root tree to copy [default: busybox with users root and agent]
        #[arg(long, value_name = "DIR", conflicts_with = "from_oci")]
        from: Option<PathBuf>,
        /// A `docker save` or OCI-layout tarball to use as the root tree
        #[arg(long, value_name = "TAR")]
        from_oci: Option<PathBuf>,
        /// A bzImage [default: the Debian kernel in /var/cache/clawkeep/kernel
        /// or $CLAWKEEP_KERNEL_DIR, fetched with apt-get if missing]
        #[arg(long, value_name = "PATH")]
        kernel: Option<PathBuf>,
        /// The kernel's lib/modules/<version> [default: beside the kernel]
        #[arg(long, value_name = "DIR")]
        modules: Option<PathBuf>,
        /// The guest agent binary [default: clawkeep-guest beside clawkeep]
        #[arg(long, value_name = "PATH")]
        guest: Option<PathBuf>,
        /// Size of the root filesystem, e.g. 512M [default: its contents plus slack]
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        size: Option<u64>,
    },
    /// Sign an image's manifest (creates <state-dir>/image-key/signing.key on first use)
    Sign {
        #[arg(value_name = "NAME")]
        name: String,
        /// The signing key [default: <state-dir>/image-key/signing.key]
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
    },
    /// Check every part against the manifest, and the signature when a key is trusted
    Verify {
        #[arg(value_name = "NAME")]
        name: String,
        /// Require a signature by this public key [default: $CLAWKEEP_IMAGE_PUBKEY
        /// or <state-dir>/images/trusted.pub when present]
        #[arg(long, value_name = "FILE")]
        pubkey: Option<PathBuf>,
    },
    /// List images
    List {
        /// Print them as JSON
        #[arg(long)]
        json: bool,
    },
    /// Remove an image
    Rm {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Require images to be signed by this public key (installs it as trusted.pub)
    Trust {
        #[arg(value_name = "PUBKEY")]
        pubkey: PathBuf,
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

    /// Maximum number of processes and threads, the jail's own included
    /// (its init and the gate's executor); at least 4
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = parse_pids)]
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

    /// Command policy for gated commands [default: the built-in policy,
    /// see 'clawkeep policy show-default']
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,

    /// The agent's name (its sockets and records) [default: run-<id>]
    #[arg(long, value_name = "NAME", value_parser = parse_agent)]
    pub agent: Option<String>,

    /// Also serve the operator API on this loopback address (needs
    /// CLAWKEEP_API_TOKEN, sent as a bearer token)
    #[arg(long, value_name = "ADDR")]
    pub api_tcp: Option<std::net::SocketAddr>,

    /// Inference proxy configuration (YAML or JSON: providers, routes,
    /// limits, budgets, prices) [default: $CLAWKEEP_PROXY_CONFIG, else
    /// <state-dir>/proxy.yaml if present, else OpenAI and Anthropic with
    /// keys sealed as 'openai' and 'anthropic']
    #[arg(long, value_name = "FILE", conflicts_with = "no_proxy")]
    pub proxy_config: Option<PathBuf>,

    /// Serve no inference proxy: the agent gets no token and no *_BASE_URL
    #[arg(long)]
    pub no_proxy: bool,

    /// Isolation backend: jail (namespaces, default) or vm (a microVM booted
    /// from --image; the workspace travels as a disk, copied back after)
    #[arg(long, value_name = "BACKEND", default_value = "jail", value_parser = ["jail", "vm"])]
    pub backend: String,

    /// The image a vm run boots (see 'clawkeep image list')
    #[arg(long, value_name = "NAME")]
    pub image: Option<String>,

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

fn parse_agent(s: &str) -> Result<String, String> {
    let ok = !s.is_empty() && s.len() <= 48 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("invalid agent name '{s}'; use up to 48 letters, digits, - and _"))
    }
}

/// The fewest tasks a jail can start a command with: init, the gate's
/// executor, the command, and one child of it.
const MIN_PIDS: u64 = 4;

fn parse_pids(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if n >= MIN_PIDS => Ok(n),
        Ok(n) => {
            Err(format!("{n} is too few; the jail's init and the gate's executor count too, so use at least {MIN_PIDS} (default 1024)"))
        }
        Err(_) => Err(format!("invalid process count '{s}'; use a whole number like 64")),
    }
}

fn parse_cpus(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.01..=4096.0).contains(&v) => Ok(v),
        _ => Err(format!("invalid CPU count '{s}'; use a number like 0.5 or 2")),
    }
}

#[cfg(test)]
mod tests {
    use super::{Cli, RunCli};
    use clap::CommandFactory;

    /// The launcher's run-only parser is the full command line's `run`:
    /// the same arguments, help and usage.
    #[test]
    fn the_run_only_parser_is_the_full_ones_run() {
        let (mut full, mut alone) = (Cli::command(), RunCli::command());
        full.build();
        alone.build();
        let (a, b) = (full.find_subcommand_mut("run").expect("run"), alone.find_subcommand_mut("run").expect("run"));
        assert_eq!(a.render_long_help().to_string(), b.render_long_help().to_string());
        assert_eq!(a.render_usage().to_string(), b.render_usage().to_string());
        let ids = |c: &clap::Command| c.get_arguments().map(|x| format!("{x:?}")).collect::<Vec<_>>();
        assert_eq!(ids(a), ids(b));
        assert_eq!(full.get_version(), alone.get_version());
        assert_eq!(
            full.get_arguments().map(|x| x.get_id().clone()).collect::<Vec<_>>(),
            alone.get_arguments().map(|x| x.get_id().clone()).collect::<Vec<_>>()
        );
    }
}

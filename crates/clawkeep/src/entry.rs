//! The two binaries' entry points (see the crate's docs): the first
//! argument's dispatch, the command line, and the exit code.

use crate::{audit_cmd, doctor, gate_cmd, image_cmd, secret_cmd, usage_cmd, vm_doctor};
use crate::{cli, logging, run, services, vm_run, Failure};
use clap::Parser;
use std::process::ExitCode;

/// This binary is a static PIE (see build.rs). Its glibc resolves host
/// names (the proxy's providers) with the `files` and `dns` modules built
/// into it, but would dlopen any other module nsswitch.conf names, and such
/// a module works only with the exact glibc this binary was linked with. So
/// host lookups are pinned to the two built-in modules, and the other
/// databases a future call might reach to `files` (nothing here looks up
/// users, groups or services today). glibc's setter is not thread-safe:
/// this runs before any thread exists. docs/proxy.md says what it means for
/// a provider's host name.
#[cfg(static_glibc)]
fn pin_name_lookups() {
    extern "C" {
        fn __nss_configure_lookup(db: *const std::ffi::c_char, services: *const std::ffi::c_char) -> std::ffi::c_int;
    }
    // SAFETY: both arguments are NUL-terminated literals; glibc copies what
    // it keeps. No other thread exists yet (see above).
    unsafe {
        __nss_configure_lookup(c"hosts".as_ptr(), c"files dns".as_ptr());
        for db in [c"passwd", c"group", c"services"] {
            __nss_configure_lookup(db.as_ptr(), c"files".as_ptr());
        }
    }
}

/// `clawkeep`: a jail run itself; everything else is `clawkeep-full`'s,
/// exec'd with the same arguments.
pub fn launcher_main() -> ExitCode {
    if let Some(code) = sandbox_process() {
        return code;
    }
    // `clawkeep run`: the sandbox helper starts before the command line is
    // parsed, so its exec overlaps the parsing (see `run::HelperStart`).
    // Only when `run` comes first; otherwise the run starts it itself.
    let run_first = std::env::args_os().nth(1).is_some_and(|a| a == "run");
    let early = run_first.then(|| run::HelperStart::begin().ok()).flatten();
    #[cfg(static_glibc)]
    pin_name_lookups();
    // `run` first: only its parser is built (the same `run` as the full
    // command line's); anything else is parsed in full.
    let parsed = match run_first {
        true => cli::RunCli::try_parse().map(|c| {
            let cli::RunOnly::Run(args) = c.command;
            (c.global, Some(args))
        }),
        false => cli::Cli::try_parse().map(|c| match c.command {
            cli::Command::Run(args) => (c.global, Some(args)),
            _ => (c.global, None),
        }),
    };
    let (global, args) = match parsed {
        Ok(p) => p,
        Err(e) => return clap_error(e),
    };
    match args {
        Some(args) if args.backend != "vm" => {
            let result = logging::init_if_asked().and_then(|()| run::run(global.state_dir, args, early));
            exit_with(result)
        }
        _ => {
            // Sent away (and reaped) before the exec: no jail is needed.
            drop(early);
            exit_with(services::exec_full())
        }
    }
}

/// The sandbox's own processes are either binary re-executed (the helper,
/// where `clawkeep-jail` is not installed; the probe): they take no CLI
/// parsing and must stay single-threaded.
fn sandbox_process() -> Option<ExitCode> {
    match std::env::args_os().nth(1).as_deref().and_then(|a| a.to_str()) {
        Some(clawkeep_sandbox::HELPER_ARG) => Some(ExitCode::from(clawkeep_sandbox::helper::main() as u8)),
        Some(clawkeep_sandbox::probe::PROBE_ARG) => Some(ExitCode::from(clawkeep_sandbox::probe::probe_main() as u8)),
        _ => None,
    }
}

fn exit_with(result: Result<u8, Failure>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("clawkeep: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// `clawkeep-full`: every command; the launcher execs it for all but a
/// jail run, and a jail run starts it for its services.
pub fn full_main() -> ExitCode {
    if let Some(code) = sandbox_process() {
        return code;
    }
    #[cfg(static_glibc)]
    pin_name_lookups();
    if std::env::args_os().nth(1).is_some_and(|a| a == services::SERVICES_ARG) {
        return ExitCode::from(services::services_main());
    }
    let cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return clap_error(e),
    };
    let result = match &cli.command {
        cli::Command::Run(_) => logging::init_if_asked(),
        _ => logging::init(),
    }
    .and_then(|()| match cli.command {
        cli::Command::Run(args) if args.backend == "vm" => run::check_command(&args.command).and_then(|()| {
            logging::init_default();
            vm_run::run(cli.global.state_dir, args)
        }),
        cli::Command::Run(args) => run::run(cli.global.state_dir, args, None),
        cli::Command::Doctor { json } => doctor::doctor(json, vm_doctor::doctor_report(cli.global.state_dir.clone())),
        cli::Command::Audit(cli::AuditCommand::Verify { file, anchor, json }) => {
            audit_cmd::verify(cli.global.state_dir, file, &anchor, json)
        }
        cli::Command::Policy(cli::PolicyCommand::Check { file }) => gate_cmd::policy_check(&file),
        cli::Command::Policy(cli::PolicyCommand::Explain { file, cwd, command }) => gate_cmd::policy_explain(Some(&file), &cwd, &command),
        cli::Command::Policy(cli::PolicyCommand::ShowDefault) => gate_cmd::policy_show_default(),
        cli::Command::Image(cmd) => image_cmd::run(cli.global.state_dir, cmd),
        other => operator(cli.global.state_dir, other),
    });
    exit_with(result)
}

/// Commands that act on the state directory's gate records.
fn operator(state_dir: Option<std::path::PathBuf>, cmd: cli::Command) -> Result<u8, Failure> {
    let state = audit_cmd::state_root(state_dir)?;
    match cmd {
        cli::Command::Approvals { json } => gate_cmd::approvals(&state, json),
        cli::Command::Approve { ids, scope, yes } => gate_cmd::approve(&state, &ids, &scope, yes),
        cli::Command::Deny { id, reason } => gate_cmd::deny(&state, id, reason),
        cli::Command::History { agent, command, outcome, since, limit, offset, json } => {
            let f = clawkeep_store::HistoryFilter { agent, command, outcome, since, limit: Some(limit), offset: Some(offset) };
            gate_cmd::history(&state, f, json)
        }
        cli::Command::Usage { agent, since, json } => usage_cmd::run(&state, agent.as_deref(), since.as_deref(), json),
        cli::Command::Secret(cli::SecretCommand::Set { name, from_env }) => secret_cmd::set(&state, &name, from_env.as_deref()),
        cli::Command::Secret(cli::SecretCommand::List { json }) => secret_cmd::list(&state, json),
        cli::Command::Secret(cli::SecretCommand::Rm { name }) => secret_cmd::rm(&state, &name),
        cli::Command::Kill { agent, freeze, thaw } => gate_cmd::kill(
            &state,
            &agent,
            if freeze {
                "freeze"
            } else if thaw {
                "thaw"
            } else {
                "kill"
            },
        ),
        _ => Err(Failure::usage("unexpected command")),
    }
}

/// Help and version print as usual; every usage error is one line and exits 2.
fn clap_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand) {
        let _ = e.print();
        return ExitCode::from(if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand { 2 } else { 0 });
    }
    // A stray value (not a flag) is never echoed back: it may be a secret
    // someone tried to pass on the command line.
    let stray = e.get(clap::error::ContextKind::InvalidArg).map(|v| v.to_string()).filter(|v| !v.starts_with('-'));
    if e.kind() == ErrorKind::UnknownArgument && stray.is_some() {
        let hint = if std::env::args().nth(1).as_deref() == Some("secret") {
            "a secret's value is never an argument; pipe it on stdin or use --from-env VAR"
        } else {
            "unexpected extra argument (not shown); put the command after '--', see 'clawkeep --help'"
        };
        eprintln!("clawkeep: {hint}");
        return ExitCode::from(2);
    }
    let rendered = e.render().to_string();
    let first = rendered.lines().find(|l| !l.trim().is_empty()).unwrap_or("invalid arguments");
    let first = first.trim_start_matches("error: ");
    eprintln!("clawkeep: {first}; see 'clawkeep --help'");
    ExitCode::from(2)
}

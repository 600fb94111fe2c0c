//! `clawkeep-jail-probe`: the escape suite run *inside* a clawkeep jail.
//!
//! Each check tries to break one restriction of the jail and prints exactly
//! one line: `PASS <check>: <detail>` when the restriction held, or
//! `FAIL <check>: <detail>` when the escape worked. Exit codes: 0 all PASS,
//! 1 any FAIL, 2 usage error, 3 refused because we are not inside a jail.
//!
//! Guarantee: no check runs unless [`guard::inside_jail`] says we are inside a
//! clawkeep jail; only `selftest-guard`, which merely reports the guard's
//! verdict, runs before it.

mod checks;
mod child;
mod errno;
mod guard;
mod report;

use std::net::SocketAddr;
use std::process::ExitCode;

use report::Outcome;

const USAGE: &str = "\
usage: clawkeep-jail-probe <check> [args]

Runs ONLY inside a clawkeep jail (refuses with exit 3 elsewhere).
checks: shadow | write-outside | connect ADDR:PORT | mount | unshare-user |
        ptrace | bpf | keyctl | mknod | raw-socket | net-config | netns-owner |
        io-uring | status | uid | env | forkbomb N | memhog MB | proc | dev |
        hostname HOSTNAME |
        all HOSTADDR:PORT HOSTNAME | selftest-guard |\n        time-exec N PROG [ARGS...] (benchmark helper)";

/// Most children `forkbomb` may try to create, whatever N the caller asks for.
const FORKBOMB_MAX: u32 = 500;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(check) = args.first().map(String::as_str) else {
        return usage("missing check name");
    };
    if matches!(check, "-h" | "--help" | "help") {
        println!("{USAGE}");
        return ExitCode::from(2);
    }
    if check == "selftest-guard" {
        // Reports only; does nothing else, so it is safe on the host.
        println!("{}", if guard::inside_jail() { "inside" } else { "outside" });
        return ExitCode::SUCCESS;
    }
    // Every real probe stops here on the host: they try to escape, and on the
    // host some of those attempts would simply succeed.
    if !guard::inside_jail() {
        eprintln!("clawkeep-jail-probe: refusing to run outside a clawkeep jail");
        return ExitCode::from(3);
    }
    run(check, &args[1..])
}

fn run(check: &str, rest: &[String]) -> ExitCode {
    if let ("time-exec", [n, prog, args @ ..]) = (check, rest) {
        return time_exec(n, prog, args);
    }
    let outcomes = match (check, rest) {
        ("all", [addr, hostname]) => match addr.parse::<SocketAddr>() {
            Ok(addr) => checks::all(addr, hostname),
            Err(_) => return usage(&format!("`{addr}` is not an IP:PORT address")),
        },
        ("all", _) => return usage("all needs HOSTADDR:PORT HOSTNAME"),
        ("connect", [addr]) => match addr.parse::<SocketAddr>() {
            Ok(addr) => vec![checks::net::connect(addr)],
            Err(_) => return usage(&format!("`{addr}` is not an IP:PORT address")),
        },
        ("connect", _) => return usage("connect needs ADDR:PORT"),
        ("hostname", [name]) => vec![checks::net::hostname(name)],
        ("hostname", _) => return usage("hostname needs the host's HOSTNAME"),
        ("forkbomb", [n]) => match n.parse::<u32>() {
            Ok(n) if n > 0 => vec![checks::procs::forkbomb(n.min(FORKBOMB_MAX))],
            _ => return usage("forkbomb needs a positive count N (capped at 500)"),
        },
        ("forkbomb", _) => return usage("forkbomb needs a count N"),
        ("memhog", [mb]) => match mb.parse::<u64>() {
            Ok(mb) if mb > 0 => vec![checks::procs::memhog(mb)],
            _ => return usage("memhog needs a positive size in MiB"),
        },
        ("memhog", _) => return usage("memhog needs a size in MiB"),
        (name, []) => match checks::simple(name) {
            Some(check) => vec![check()],
            None => return usage(&format!("unknown check `{name}`")),
        },
        (name, _) => return usage(&format!("unexpected arguments for `{name}`")),
    };
    for outcome in &outcomes {
        outcome.print();
    }
    if outcomes.iter().all(Outcome::held) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn usage(why: &str) -> ExitCode {
    eprintln!("clawkeep-jail-probe: {why}\n{USAGE}");
    ExitCode::from(2)
}

/// Not an escape check: a timing helper for the benchmarks, run inside the
/// jail like everything else here. Runs PROG N times (fork, exec, wait) and
/// prints the median wall time in microseconds.
fn time_exec(n: &str, prog: &str, args: &[String]) -> ExitCode {
    let Ok(n) = n.parse::<usize>() else { return usage("time-exec needs a count N") };
    let mut times = Vec::with_capacity(n);
    for _ in 0..n.min(10_000) {
        let t0 = std::time::Instant::now();
        let status = std::process::Command::new(prog).args(args).status();
        times.push(t0.elapsed().as_micros());
        if !status.map(|s| s.success()).unwrap_or(false) {
            eprintln!("time-exec: {prog} failed");
            return ExitCode::from(1);
        }
    }
    times.sort_unstable();
    println!("{}", times[times.len() / 2]);
    ExitCode::SUCCESS
}

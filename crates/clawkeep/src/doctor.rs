//! `clawkeep doctor`: every guarantee, whether it holds, what a gap costs.

use crate::Failure;
use clawkeep_sandbox::probe::{self, Status};

pub fn doctor(json: bool, vm: serde_json::Value) -> Result<u8, Failure> {
    let exe = std::env::current_exe().map_err(|e| Failure::runtime(format!("cannot find the clawkeep binary: {e}")))?;
    let checks = probe::host_checks(&exe);
    let can_run = probe::jail_can_run(&checks);
    if json {
        println!("{}", serde_json::json!({"jail_can_run": can_run, "checks": checks, "vm": vm}));
    } else {
        println!("clawkeep doctor: what holds on this host\n");
        let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(10);
        for c in &checks {
            let tag = match c.status {
                Status::Ok => "ok  ",
                Status::Warn => "warn",
                Status::Missing => "MISS",
            };
            println!("  {tag}  {:width$}  {}", c.name, c.detail);
            if let (Some(cost), false) = (&c.cost, c.status == Status::Ok) {
                println!("        {:width$}  cost: {cost}", "");
            }
        }
        println!();
        if can_run {
            println!("jail: can run");
        } else {
            println!("jail: CANNOT run here: a required guarantee is missing (marked MISS above)");
        }
        crate::vm_doctor::print_doctor(&vm);
    }
    Ok(if can_run { 0 } else { 1 })
}

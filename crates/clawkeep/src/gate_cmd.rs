//! Operator commands for the gate and its policy: `policy check|explain|
//! show-default`, `approvals`, `approve`, `deny`, `history`, `kill`.

use crate::api_client::{self, call};
use crate::Failure;
use clawkeep_gate::shown;
use clawkeep_policy::{Policy, Request};
use clawkeep_store::{HistoryFilter, Store};
use serde_json::json;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

/// Where an agent's sockets live: `<state>/agents/<agent>/`.
pub fn agent_dir(state: &Path, agent: &str) -> PathBuf {
    state.join("agents").join(agent)
}

pub fn gate_db(state: &Path) -> PathBuf {
    state.join("gate.db")
}

fn store(state: &Path) -> Result<Option<Store>, Failure> {
    let p = gate_db(state);
    if !p.exists() {
        return Ok(None);
    }
    Store::open(&p).map(Some).map_err(|e| Failure::runtime(e.to_string()))
}

pub fn policy_check(file: &Path) -> Result<u8, Failure> {
    let p = Policy::load(file).map_err(|e| Failure::usage(e.to_string()))?;
    println!(
        "ok {}: {} rules, default_action {}, gated commands: {}",
        file.display(),
        p.rules().len(),
        p.default_action(),
        p.gated_commands().join(" ")
    );
    Ok(0)
}

pub fn policy_explain(file: Option<&Path>, cwd: &str, argv: &[String]) -> Result<u8, Failure> {
    let Some((cmd, args)) = argv.split_first() else {
        return Err(Failure::usage("no command given; usage: clawkeep policy explain FILE -- CMD [ARGS...]"));
    };
    let p = match file {
        Some(f) => Policy::load(f).map_err(|e| Failure::usage(e.to_string()))?,
        None => Policy::builtin_default(),
    };
    let e = p.explain(&Request { command: cmd, args, cwd: Path::new(cwd) });
    for step in &e.steps {
        println!("  {step}");
    }
    let rule = e.decision.line.map_or_else(|| "no rule".to_string(), |l| format!("rule at line {l}"));
    println!("{}: {} ({rule}): {}", argv.join(" "), e.decision.action, e.decision.reason);
    Ok(0)
}

pub fn policy_show_default() -> Result<u8, Failure> {
    print!("{}", Policy::default_yaml());
    Ok(0)
}

pub fn approvals(state: &Path, json_out: bool) -> Result<u8, Failure> {
    let items = match store(state)? {
        Some(s) => s.pending().map_err(|e| Failure::runtime(e.to_string()))?,
        None => Vec::new(),
    };
    if json_out {
        println!("{}", json!(items));
        return Ok(0);
    }
    if items.is_empty() {
        println!("no requests are waiting for approval");
        return Ok(0);
    }
    println!("{:<6} {:<16} {:<40} {:<20} REASON", "ID", "AGENT", "COMMAND", "CWD");
    for a in items {
        let cmd = shown::command_line(&a.command, &a.args);
        let (cwd, reason) = (shown::for_terminal(&a.cwd), shown::for_terminal(&a.reason));
        println!("{:<6} {:<16} {:<40} {:<20} {reason}", a.id, a.agent, truncate(&cmd, 40), truncate(&cwd, 20));
    }
    Ok(0)
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).collect::<String>() + "…"
    }
}

/// The API socket of the agent that owns approval `id`.
fn socket_for(state: &Path, id: i64) -> Result<PathBuf, Failure> {
    let s = store(state)?.ok_or_else(|| Failure::usage(format!("no approval {id}: nothing has been gated yet in {}", state.display())))?;
    let a = s
        .get(id)
        .map_err(|e| Failure::runtime(e.to_string()))?
        .ok_or_else(|| Failure::usage(format!("no approval {id}; list them with 'clawkeep approvals'")))?;
    let sock = agent_dir(state, &a.agent).join("api.sock");
    if !sock.exists() {
        return Err(Failure::runtime(format!("approval {id} belongs to agent {}, which is no longer running", a.agent)));
    }
    Ok(sock)
}

pub fn approve(state: &Path, ids: &[i64], scope: &str, yes: bool) -> Result<u8, Failure> {
    if !["once", "session", "always"].contains(&scope) {
        return Err(Failure::usage(format!("unknown scope '{scope}'; use once, session or always")));
    }
    for id in ids {
        let sock = socket_for(state, *id)?;
        if scope == "always" {
            let r = call(&sock, "GET", &format!("/api/queue/{id}/always-rule"), None).map_err(Failure::runtime)?;
            if r.status != 200 {
                return Err(Failure::runtime(api_client::error_of(&r)));
            }
            let rule = r.body["rule"].as_str().unwrap_or_default();
            println!("approving #{id} always adds this rule to the policy file:\n{rule}");
            if !yes && !confirm("save this rule?")? {
                println!("not saved; #{id} is still pending");
                continue;
            }
        }
        let r = call(&sock, "POST", &format!("/api/queue/{id}/approve"), Some(&json!({"scope": scope, "by": operator()})))
            .map_err(Failure::runtime)?;
        if r.status != 200 {
            return Err(Failure::runtime(api_client::error_of(&r)));
        }
        println!("approved #{id} ({scope})");
    }
    Ok(0)
}

fn confirm(q: &str) -> Result<bool, Failure> {
    if !std::io::stdin().is_terminal() {
        return Err(Failure::usage("refusing to save an 'always' rule without confirmation; pass --yes"));
    }
    print!("{q} [y/N] ");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(|e| Failure::runtime(e.to_string()))?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

fn operator() -> String {
    let user = std::env::var("SUDO_USER").or_else(|_| std::env::var("USER")).unwrap_or_else(|_| "operator".into());
    format!("cli:{user}")
}

pub fn deny(state: &Path, id: i64, reason: Option<String>) -> Result<u8, Failure> {
    let sock = socket_for(state, id)?;
    let body = json!({"reason": reason.unwrap_or_else(|| "denied by an operator".into()), "by": operator()});
    let r = call(&sock, "POST", &format!("/api/queue/{id}/deny"), Some(&body)).map_err(Failure::runtime)?;
    if r.status != 200 {
        return Err(Failure::runtime(api_client::error_of(&r)));
    }
    println!("denied #{id}");
    Ok(0)
}

pub fn history(state: &Path, f: HistoryFilter, json_out: bool) -> Result<u8, Failure> {
    let page = match store(state)? {
        Some(s) => s.history(&f).map_err(|e| Failure::runtime(e.to_string()))?,
        None => clawkeep_store::HistoryPage { items: Vec::new(), total: 0, offset: 0, limit: f.limit.unwrap_or(50) },
    };
    if json_out {
        println!("{}", json!(page));
        return Ok(0);
    }
    println!("{:<24} {:<14} {:<9} {:<9} {:<5} COMMAND", "AT", "AGENT", "DECISION", "OUTCOME", "EXIT");
    for d in &page.items {
        let cmd = shown::command_line(&d.command, &d.args);
        let exit = d.exit_code.map_or("-".to_string(), |c| c.to_string());
        println!("{:<24} {:<14} {:<9} {:<9} {:<5} {}", d.at, d.agent, d.decision, d.outcome, exit, truncate(&cmd, 60));
    }
    println!("({} of {} shown)", page.items.len(), page.total);
    Ok(0)
}

pub fn kill(state: &Path, agent: &str, mode: &str) -> Result<u8, Failure> {
    let sock = agent_dir(state, agent).join("api.sock");
    if !sock.exists() {
        return Err(Failure::usage(format!("no running agent named '{agent}'")));
    }
    let r = call(&sock, "POST", "/api/kill", Some(&json!({"mode": mode}))).map_err(Failure::runtime)?;
    if r.status != 200 {
        return Err(Failure::runtime(api_client::error_of(&r)));
    }
    let done = match mode {
        "freeze" => "froze",
        "thaw" => "thawed",
        _ => "killed",
    };
    println!("{done} {agent}");
    Ok(0)
}

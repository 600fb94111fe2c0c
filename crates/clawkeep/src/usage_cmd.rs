//! `clawkeep usage`: what the inference proxy recorded in its ledger, as a
//! table with totals or as JSON.

use crate::proxy_run::ledger_path;
use crate::Failure;
use clawkeep_proxy::Ledger;
use std::path::Path;

/// `clawkeep usage`: what the proxy recorded.
pub fn run(state: &Path, agent: Option<&str>, since: Option<&str>, json: bool) -> Result<u8, Failure> {
    let since = since.map(since_prefix).transpose()?;
    let path = ledger_path(state);
    let rows = if path.exists() {
        let ledger = Ledger::open(&path).map_err(|e| Failure::runtime(e.to_string()))?;
        ledger.usage(agent, since.as_deref()).map_err(|e| Failure::runtime(e.to_string()))?
    } else {
        Vec::new()
    };
    if json {
        println!("{}", serde_json::to_string(&rows).map_err(|e| Failure::runtime(e.to_string()))?);
        return Ok(0);
    }
    if rows.is_empty() {
        println!("no inference requests recorded");
        return Ok(0);
    }
    println!(
        "{:<20}  {:<16}  {:<24}  {:<10}  {:>8}  {:>8}  {:>10}  {:>8}  {:>6}",
        "AT", "AGENT", "MODEL", "PROVIDER", "IN", "OUT", "COST USD", "MS", "STATUS"
    );
    let (mut tin, mut tout, mut cost) = (0u64, 0u64, 0f64);
    for r in &rows {
        println!(
            "{:<20}  {:<16}  {:<24}  {:<10}  {:>8}  {:>8}  {:>10.6}  {:>8}  {:>6}",
            r.at, r.agent, r.model, r.provider, r.input_tokens, r.output_tokens, r.cost_usd, r.latency_ms, r.status
        );
        tin = tin.saturating_add(r.input_tokens);
        tout = tout.saturating_add(r.output_tokens);
        cost += r.cost_usd;
    }
    println!("{} requests, {tin} input tokens, {tout} output tokens, {cost:.6} USD", rows.len());
    Ok(0)
}

/// `--since`: a duration back from now, or a time (prefix) as stored.
fn since_prefix(s: &str) -> Result<String, Failure> {
    if let Ok(d) = clawkeep_core::parse_duration(s) {
        let t = std::time::SystemTime::now().checked_sub(d).unwrap_or(std::time::UNIX_EPOCH);
        let secs = t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        return Ok(clawkeep_proxy::ledger::format_utc(secs));
    }
    let ok = !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'-' | b':' | b'T' | b'Z'));
    if ok && s.as_bytes()[0].is_ascii_digit() {
        Ok(s.to_string())
    } else {
        Err(Failure::usage(format!("invalid --since '{s}'; use a duration like 1h or 7d, or a time like 2026-11-22T10:00:00Z")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_durations_and_times() {
        assert_eq!(since_prefix("2026-11-22").unwrap(), "2026-11-22");
        assert!(since_prefix("1h").unwrap().ends_with('Z'));
        assert!(since_prefix("yesterday").is_err());
        assert!(since_prefix("' OR 1=1").is_err());
    }
}

//! Hard per-agent budgets over fixed periods aligned to the Unix epoch.
//!
//! Guarantee: a request is admitted only if its reservation fits in what is
//! left after settled spend and every outstanding reservation, checked and
//! taken under one lock; so as long as no request uses more than it reserved,
//! spend in a period never exceeds the budget. Spent totals are seeded from
//! the ledger, so a restart does not reset them.

use crate::config::Budget;
use crate::ledger::Ledger;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

#[derive(Debug, Default, Clone, Copy)]
struct Period {
    start: u64,
    spent_tokens: u64,
    spent_usd: f64,
    reserved_tokens: u64,
    reserved_usd: f64,
}

#[derive(Debug, Clone)]
pub struct Budgets {
    ledger: Arc<Ledger>,
    periods: Arc<Mutex<HashMap<String, Period>>>,
}

/// What one admitted request holds against its agent's budget, until it
/// settles: across a period's end too.
#[derive(Debug, Clone, Copy)]
pub struct Reservation {
    tokens: u64,
    usd: f64,
}

impl Budgets {
    pub fn new(ledger: Arc<Ledger>) -> Budgets {
        Budgets { ledger, periods: Arc::default() }
    }

    /// Reserves `tokens` and `usd` against `agent`'s budget, or says why not.
    pub fn reserve(&self, agent: &str, budget: Budget, tokens: u64, usd: f64, now: u64) -> Result<Reservation, String> {
        let start = period_start(budget, now);
        let mut periods = self.periods.lock().unwrap_or_else(PoisonError::into_inner);
        let p = self.current(&mut periods, agent, start)?;
        if let Some(max) = budget.tokens_per_period {
            let committed = p.spent_tokens.saturating_add(p.reserved_tokens);
            if committed.saturating_add(tokens) > max {
                return Err(format!(
                    "token budget exhausted: {committed} of {max} tokens used or reserved this period, this request may need {tokens}"
                ));
            }
        }
        if let Some(max) = budget.usd_per_period {
            let committed = p.spent_usd + p.reserved_usd;
            if committed + usd > max {
                return Err(format!(
                    "spending budget exhausted: ${committed:.4} of ${max:.4} used or reserved this period, this request may cost ${usd:.4}"
                ));
            }
        }
        p.reserved_tokens += tokens;
        p.reserved_usd += usd;
        Ok(Reservation { tokens, usd })
    }

    /// Replaces a reservation with what the request actually used.
    pub fn settle(&self, agent: &str, budget: Budget, r: Reservation, tokens: u64, usd: f64, now: u64) {
        let start = period_start(budget, now);
        let mut periods = self.periods.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(p) = periods.get_mut(agent) else { return };
        // Outstanding reservations move into each new period (see
        // `current`), so this one is held wherever the agent's period is.
        p.reserved_tokens = p.reserved_tokens.saturating_sub(r.tokens);
        p.reserved_usd = (p.reserved_usd - r.usd).max(0.0);
        // Spend that lands after a rollover counts in the new period; the
        // ledger row (at settle time) agrees.
        if p.start == start {
            p.spent_tokens = p.spent_tokens.saturating_add(tokens);
            p.spent_usd += usd;
        }
    }

    fn current<'a>(&self, periods: &'a mut HashMap<String, Period>, agent: &str, start: u64) -> Result<&'a mut Period, String> {
        let previous = periods.get(agent).copied();
        if previous.is_none_or(|p| p.start != start) {
            let (spent_tokens, spent_usd) =
                self.ledger.spent_since(agent, start).map_err(|e| format!("cannot read spend so far ({e}), refusing to spend blind"))?;
            // Requests still running from the last period will settle into
            // this one (their ledger rows are written then): they keep
            // their reservations here, or a rollover would admit a second
            // budget's worth beside them.
            let (reserved_tokens, reserved_usd) = previous.map_or((0, 0.0), |p| (p.reserved_tokens, p.reserved_usd));
            periods.insert(agent.to_string(), Period { start, spent_tokens, spent_usd, reserved_tokens, reserved_usd });
        }
        periods.get_mut(agent).ok_or_else(|| "budget state lost".to_string())
    }
}

fn period_start(budget: Budget, now: u64) -> u64 {
    let len = budget.period_secs.max(1);
    now - now % len
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Five requests reserved just before a period ends still count after
    /// it: the new period admits nothing beside them, and their spend lands
    /// in it.
    #[test]
    fn reservations_outlive_a_period_rollover() {
        let dir = tempfile::tempdir().unwrap();
        let budgets = Budgets::new(Arc::new(Ledger::open(&dir.path().join("usage.db")).unwrap()));
        let budget = Budget { tokens_per_period: Some(500), period_secs: 60, usd_per_period: Some(5.0) };
        let held: Vec<_> = (0..5).map(|_| budgets.reserve("a", budget, 100, 1.0, 59).unwrap()).collect();
        assert!(budgets.reserve("a", budget, 100, 0.0, 59).is_err());
        let err = budgets.reserve("a", budget, 100, 0.0, 60).unwrap_err();
        assert!(err.contains("token budget exhausted"), "{err}");
        assert!(budgets.reserve("a", budget, 0, 1.0, 61).unwrap_err().contains("spending budget exhausted"));
        for r in held {
            budgets.settle("a", budget, r, 100, 1.0, 60);
        }
        assert!(budgets.reserve("a", budget, 1, 0.0, 61).is_err(), "the settled spend counts in the new period");
        // The period after that starts clean.
        budgets.reserve("a", budget, 500, 5.0, 120).unwrap();
    }
}

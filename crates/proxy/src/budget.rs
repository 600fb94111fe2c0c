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

/// What one admitted request holds against its agent's budget.
#[derive(Debug, Clone, Copy)]
pub struct Reservation {
    period_start: u64,
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
        Ok(Reservation { period_start: start, tokens, usd })
    }

    /// Replaces a reservation with what the request actually used.
    pub fn settle(&self, agent: &str, budget: Budget, r: Reservation, tokens: u64, usd: f64, now: u64) {
        let start = period_start(budget, now);
        let mut periods = self.periods.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(p) = periods.get_mut(agent) else { return };
        if p.start == r.period_start {
            p.reserved_tokens = p.reserved_tokens.saturating_sub(r.tokens);
            p.reserved_usd = (p.reserved_usd - r.usd).max(0.0);
        }
        // Spend that lands after a rollover counts in the new period; the
        // ledger row (at settle time) agrees.
        if p.start == start {
            p.spent_tokens = p.spent_tokens.saturating_add(tokens);
            p.spent_usd += usd;
        }
    }

    fn current<'a>(&self, periods: &'a mut HashMap<String, Period>, agent: &str, start: u64) -> Result<&'a mut Period, String> {
        let fresh = periods.get(agent).is_none_or(|p| p.start != start);
        if fresh {
            let (spent_tokens, spent_usd) =
                self.ledger.spent_since(agent, start).map_err(|e| format!("cannot read spend so far ({e}), refusing to spend blind"))?;
            periods.insert(agent.to_string(), Period { start, spent_tokens, spent_usd, ..Period::default() });
        }
        periods.get_mut(agent).ok_or_else(|| "budget state lost".to_string())
    }
}

fn period_start(budget: Budget, now: u64) -> u64 {
    let len = budget.period_secs.max(1);
    now - now % len
}

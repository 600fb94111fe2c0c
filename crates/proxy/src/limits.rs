//! Per-agent request rate (sliding minute), token rate and concurrency.
//!
//! Guarantee: `admit` either refuses with the seconds to wait or counts the
//! request at once, under one lock, so concurrent requests cannot overshoot.
//! The concurrency slot is held by the returned [`Slot`] until it is dropped.

use crate::config::Limits;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
struct AgentWindow {
    requests: VecDeque<Instant>,
    /// (when, ticket id, tokens): reserved at admission, corrected on settle.
    tokens: VecDeque<(Instant, u64, u64)>,
    in_flight: u32,
}

impl AgentWindow {
    fn prune(&mut self, now: Instant) {
        while self.requests.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
            self.requests.pop_front();
        }
        while self.tokens.front().is_some_and(|(t, _, _)| now.duration_since(*t) >= WINDOW) {
            self.tokens.pop_front();
        }
    }
}

/// Why a request was refused, and how long until it would not be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A limit is reached for now.
    Wait { what: &'static str, retry_after: u64 },
    /// The request alone needs more than the whole tokens-per-minute limit:
    /// waiting never helps.
    Never { needs: u64, tpm: u64 },
}

#[derive(Debug, Default, Clone)]
pub struct RateLimiter {
    agents: Arc<Mutex<HashMap<String, AgentWindow>>>,
}

impl RateLimiter {
    /// Counts one request of `agent` that may use up to `tokens`, or refuses it.
    pub fn admit(&self, agent: &str, limits: Limits, tokens: u64, id: u64) -> Result<Slot, Refused> {
        let now = Instant::now();
        let mut agents = self.agents.lock().unwrap_or_else(PoisonError::into_inner);
        let w = agents.entry(agent.to_string()).or_default();
        w.prune(now);
        if let Some(max) = limits.concurrent {
            if w.in_flight >= max {
                return Err(Refused::Wait { what: "concurrent request", retry_after: 1 });
            }
        }
        if let Some(rpm) = limits.rpm {
            if w.requests.len() >= rpm as usize {
                let oldest = w.requests.front().copied().unwrap_or(now);
                return Err(Refused::Wait { what: "requests-per-minute", retry_after: wait_until_out(oldest, now) });
            }
        }
        if let Some(tpm) = limits.tpm {
            if tokens > tpm {
                return Err(Refused::Never { needs: tokens, tpm });
            }
            let used: u64 = w.tokens.iter().map(|(_, _, n)| n).sum();
            if used.saturating_add(tokens) > tpm {
                let oldest = w.tokens.front().map(|(t, _, _)| *t).unwrap_or(now);
                return Err(Refused::Wait { what: "tokens-per-minute", retry_after: wait_until_out(oldest, now) });
            }
        }
        // Only a limit that is set needs the history; an unlimited agent
        // would otherwise grow a minute of entries that `release` scans.
        if limits.rpm.is_some() {
            w.requests.push_back(now);
        }
        if limits.tpm.is_some() {
            w.tokens.push_back((now, id, tokens));
        }
        w.in_flight += 1;
        Ok(Slot { limiter: self.clone(), agent: agent.to_string(), id })
    }

    fn release(&self, agent: &str, id: u64, actual_tokens: Option<u64>) {
        let mut agents = self.agents.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(w) = agents.get_mut(agent) {
            w.in_flight = w.in_flight.saturating_sub(1);
            if let Some(actual) = actual_tokens {
                // Most requests end soon after they start: look from the newest.
                if let Some(entry) = w.tokens.iter_mut().rev().find(|(_, i, _)| *i == id) {
                    entry.2 = actual;
                }
            }
        }
    }
}

fn wait_until_out(oldest: Instant, now: Instant) -> u64 {
    let left = WINDOW.saturating_sub(now.duration_since(oldest));
    (left.as_secs() + u64::from(left.subsec_nanos() > 0)).max(1)
}

/// One admitted request's concurrency slot; freed on drop.
#[derive(Debug)]
pub struct Slot {
    limiter: RateLimiter,
    agent: String,
    id: u64,
}

impl Slot {
    /// Frees the slot and replaces the reserved token count with `actual`.
    pub fn release(self, actual_tokens: u64) {
        self.limiter.release(&self.agent, self.id, Some(actual_tokens));
        std::mem::forget(self);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.limiter.release(&self.agent, self.id, None);
    }
}

#[cfg(test)]
#[path = "limits_tests.rs"]
mod tests;

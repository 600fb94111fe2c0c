//! One admitted request's claim on its agent's limits and budget.
//!
//! Guarantee: a [`Ticket`] settles exactly once — explicitly, or on drop if
//! the client went away mid-stream — freeing the concurrency slot, replacing
//! the budget reservation with the real charge and writing one ledger row.

use crate::budget::{Budgets, Reservation};
use crate::config::{Budget, Price};
use crate::ledger::{format_utc, unix_now, Ledger, UsageRow};
use crate::limits::Slot;
use crate::usage::Usage;
use std::sync::Arc;
use std::time::Instant;

/// What a finished request is charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// The provider reported usage.
    Actual(Usage),
    /// Usage is unknown but the provider may have done the work: fail closed.
    Reservation,
    /// The provider certainly did no billable work.
    Nothing,
}

/// A request's record on its way to disk (its audit event, when the proxy
/// has an observer). A non-streamed response goes out only once the event
/// is written and fsync'd; a stream's events pass as they come and only its
/// end waits. An append that fails is logged and does not hold the answer
/// back (the provider has done the work). Nothing to wait for without an
/// observer.
#[must_use = "await `recorded` before the response goes out"]
#[derive(Debug, Default)]
pub struct Recorded(Option<tokio::sync::oneshot::Receiver<()>>);

impl Recorded {
    /// Recorded once `on_disk` is sent to (or dropped: the writer is gone
    /// and said why).
    pub fn when(on_disk: tokio::sync::oneshot::Receiver<()>) -> Recorded {
        Recorded(Some(on_disk))
    }

    pub async fn recorded(self) {
        if let Some(rx) = self.0 {
            let _ = rx.await;
        }
    }
}

#[derive(Debug)]
pub struct Ticket {
    /// The proxy's count of requests not yet recorded.
    pub(crate) open: Arc<std::sync::atomic::AtomicUsize>,
    pub(crate) ledger: Arc<Ledger>,
    pub(crate) budgets: Budgets,
    pub(crate) agent: String,
    pub(crate) model: String,
    pub(crate) provider: String,
    pub(crate) price: Option<Price>,
    /// The most this request was allowed to use.
    pub(crate) reserved: Usage,
    pub(crate) slot: Option<Slot>,
    pub(crate) reservation: Option<(Budget, Reservation)>,
    pub(crate) started: Instant,
    pub(crate) done: bool,
    pub(crate) observer: Option<crate::state::UsageObserver>,
    /// The request body, kept only when the config audits prompts.
    pub(crate) prompt: Option<axum::body::Bytes>,
}

impl Ticket {
    pub fn cost(&self, usage: Usage) -> f64 {
        self.price.map(|p| p.cost(&usage)).unwrap_or(0.0)
    }

    pub fn finish(&mut self, charge: Charge, status: u16) -> Recorded {
        if std::mem::replace(&mut self.done, true) {
            return Recorded::default();
        }
        let usage = match charge {
            Charge::Actual(u) => u,
            Charge::Reservation => self.reserved,
            Charge::Nothing => Usage::default(),
        };
        let cost = self.cost(usage);
        let now = unix_now();
        if let Some(slot) = self.slot.take() {
            slot.release(usage.total());
        }
        if let Some((budget, r)) = self.reservation.take() {
            self.budgets.settle(&self.agent, budget, r, usage.total(), cost, now);
        }
        let row = UsageRow {
            agent: self.agent.clone(),
            model: self.model.clone(),
            provider: self.provider.clone(),
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cost_usd: cost,
            latency_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            status,
            at: format_utc(now),
        };
        if let Err(e) = self.ledger.record(&row, now) {
            tracing::error!(error = %e, agent = %self.agent, "could not record usage");
        }
        let recorded = self.observer.as_ref().map(|o| (o.0)(&row, self.prompt.as_deref())).unwrap_or_default();
        tracing::info!(
            agent = %self.agent, model = %self.model, provider = %self.provider, status,
            input_tokens = usage.input_tokens, output_tokens = usage.output_tokens, cost_usd = cost,
            latency_ms = row.latency_ms, "request settled"
        );
        self.open.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        recorded
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        // The client hung up before the response ended; the provider may
        // still bill, so charge the reservation. 499 as nginx logs it.
        // Nobody is left to answer: the record goes to disk on its own.
        let _ = self.finish(Charge::Reservation, 499);
    }
}

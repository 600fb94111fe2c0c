//! Streaming replies pass through chunk by chunk, unbuffered, while usage is
//! read from them on the side. When the stream ends — cleanly, by an upstream
//! error, or because the agent hung up — the ticket is settled once.

use crate::config::ProviderKind;
use crate::error::error_body;
use crate::meter::{Charge, Recorded, Ticket};
use crate::redact::StreamRedactor;
use crate::usage::StreamUsage;
use bytes::Bytes;
use clawkeep_identity::Zeroizing;
use futures_util::{Stream, StreamExt};
use std::convert::Infallible;

struct State<S> {
    upstream: S,
    usage: StreamUsage,
    ticket: Ticket,
    kind: ProviderKind,
    secret: Zeroizing<Vec<u8>>,
    redactor: StreamRedactor,
    ended: bool,
    /// The request's span: the body is polled after the handler returned.
    span: tracing::Span,
}

pub fn metered<S>(
    upstream: S,
    ticket: Ticket,
    kind: ProviderKind,
    secret: Zeroizing<Vec<u8>>,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send
where
    S: Stream<Item = Result<Bytes, reqwest::Error>> + Send + Unpin + 'static,
{
    let state = State {
        upstream,
        usage: StreamUsage::default(),
        ticket,
        kind,
        secret,
        redactor: StreamRedactor::default(),
        ended: false,
        span: tracing::Span::current(),
    };
    futures_util::stream::unfold(state, |mut st| async move {
        if st.ended {
            return None;
        }
        match st.upstream.next().await {
            Some(Ok(chunk)) => {
                st.usage.feed(&chunk);
                let chunk = st.redactor.push(chunk, &st.secret);
                Some((Ok(chunk), st))
            }
            Some(Err(e)) => {
                tracing::warn!(parent: &st.span, timeout = e.is_timeout(), "upstream stream broke");
                settle(&mut st, 502).recorded().await;
                st.ended = true;
                let held = st.redactor.finish().unwrap_or_default();
                Some((Ok([held, error_event(st.kind)].concat().into()), st))
            }
            None => {
                settle(&mut st, 200).recorded().await;
                st.ended = true;
                st.redactor.finish().map(|held| (Ok(held), st))
            }
        }
    })
}

/// Charges what the stream reported, or — if it never reported usage in
/// full — the whole reservation (fail closed). The stream's end waits for
/// the record.
fn settle<S>(st: &mut State<S>, status: u16) -> Recorded {
    let charge = st.usage.finish().map_or(Charge::Reservation, Charge::Actual);
    st.ticket.finish(charge, status)
}

fn error_event(kind: ProviderKind) -> Bytes {
    let message = "the upstream provider's stream broke off; the reply is incomplete";
    let frame = match kind {
        ProviderKind::Openai => format!("data: {}\n\n", error_body("upstream_error", message)),
        ProviderKind::Anthropic => format!("event: error\ndata: {}\n\n", error_body("api_error", message)),
    };
    Bytes::from(frame)
}

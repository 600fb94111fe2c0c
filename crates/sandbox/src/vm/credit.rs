//! Stdin credit on the host end of the channel: how many bytes each
//! flow-controlled exec stream may still send the guest, and the sender
//! that waits for more (see the flow-control paragraph in `channel.rs`).

use super::channel::{Channel, ChannelError};
use clawkeep_guest::proto::Message;
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};

/// Largest Stdin frame the host sends.
pub(super) const STDIN_CHUNK: usize = 64 * 1024;

/// One exec stream's stdin credit, shared by its senders and the reader.
#[derive(Debug)]
pub(super) struct Credit {
    state: Mutex<CreditState>,
    more: Condvar,
}

#[derive(Debug)]
struct CreditState {
    /// Bytes the guest will accept now.
    bytes: u64,
    /// The stream ended: nothing more may be sent, nobody may wait.
    closed: bool,
}

impl Credit {
    pub(super) fn new(bytes: u32) -> Credit {
        Credit { state: Mutex::new(CreditState { bytes: u64::from(bytes), closed: false }), more: Condvar::new() }
    }

    /// Takes up to `max` bytes of credit (at least 1), waiting while there
    /// is none; `Err(Closed)` once the stream ended.
    fn take(&self, max: usize) -> Result<usize, ChannelError> {
        let mut st = self.state.lock().map_err(|_| ChannelError::Closed)?;
        loop {
            if st.closed {
                return Err(ChannelError::Closed);
            }
            if st.bytes > 0 {
                let n = st.bytes.min(max as u64);
                st.bytes -= n;
                return Ok(n as usize);
            }
            st = self.more.wait(st).map_err(|_| ChannelError::Closed)?;
        }
    }

    /// The guest's StdinCredit. Saturating: a guest granting absurd credit
    /// only gets sent more of the caller's data, never more host memory.
    pub(super) fn grant(&self, bytes: u32) {
        if let Ok(mut st) = self.state.lock() {
            st.bytes = st.bytes.saturating_add(u64::from(bytes));
            self.more.notify_all();
        }
    }

    pub(super) fn close(&self) {
        if let Ok(mut st) = self.state.lock() {
            st.closed = true;
            self.more.notify_all();
        }
    }
}

/// The credit of every flow-controlled exec stream.
#[derive(Debug, Default)]
pub(super) struct CreditTable {
    pub(super) streams: HashMap<u32, Arc<Credit>>,
    /// The reader ended: streams added from now on start closed, so no
    /// sender can wait for a credit that will never come.
    pub(super) closed: bool,
}

pub(super) type Credits = Arc<Mutex<CreditTable>>;

/// Ends `stream`'s credit (its command exited, or its owner went away).
/// Every way a credit leaves the table closes it, so a credit not in the
/// table is closed.
pub(super) fn close_credit(credits: &Credits, stream: u32) {
    if let Some(c) = credits.lock().ok().and_then(|mut t| t.streams.remove(&stream)) {
        c.close();
    }
}

/// Sends `data` as Stdin frames of at most [`STDIN_CHUNK`] bytes, each
/// only against `credit` (None: no limit). EOF needs no credit: it costs
/// the guest nothing to hold.
pub(super) fn send_stdin(ch: &Channel, id: u32, credit: Option<&Credit>, data: &[u8]) -> Result<(), ChannelError> {
    if data.is_empty() {
        return ch.send(id, Message::Stdin(Vec::new()));
    }
    let mut rest = data;
    while !rest.is_empty() {
        let max = rest.len().min(STDIN_CHUNK);
        let n = match credit {
            Some(c) => c.take(max)?,
            None => max,
        };
        let (now, later) = rest.split_at(n);
        ch.send(id, Message::Stdin(now.to_vec()))?;
        rest = later;
    }
    Ok(())
}

//! Guest-opened streams on the host: each joined to the Unix socket of the
//! service it names (the gate's, the proxy's) when the host configured
//! one, refused otherwise; a bounded number at once.

use super::channel::Channel;
use super::gate_relay::GateConn;
use clawkeep_guest::proto::{Message, Service};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

/// Guest-opened streams served at once: each costs a host thread and a
/// connection, and the guest decides how many it opens.
pub const MAX_RELAYS: usize = 64;

/// The host end of a guest-opened stream.
pub(super) enum RelayConn {
    Plain(UnixStream),
    Gate(Box<GateConn>),
}

impl RelayConn {
    pub(super) fn sock(&self) -> &UnixStream {
        match self {
            RelayConn::Plain(s) => s,
            RelayConn::Gate(g) => &g.sock,
        }
    }
}

/// A guest-opened stream: joined to the service's Unix socket when the
/// host configured one, refused (Close) otherwise.
pub(super) fn relay(ch: &Channel, relays: &HashMap<Service, PathBuf>, conns: &mut HashMap<u32, RelayConn>, stream: u32, msg: Message) {
    match msg {
        Message::Open { service } => {
            // A stream id in use, or one too many: refused, never replaced
            // (replacing would orphan the old connection and its thread).
            if conns.contains_key(&stream) || conns.len() >= MAX_RELAYS {
                let _ = ch.send(stream, Message::Close);
                return;
            }
            let conn = relays.get(&service).and_then(|p| match service {
                Service::Gate => GateConn::connect(p).ok().map(|g| RelayConn::Gate(Box::new(g))),
                Service::Proxy => UnixStream::connect(p).ok().map(RelayConn::Plain),
            });
            let Some(conn) = conn else {
                let _ = ch.send(stream, Message::Close);
                return;
            };
            if let Ok(mut from) = conn.sock().try_clone() {
                let ch = ch.clone();
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 32 * 1024];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 || ch.send(stream, Message::Data(buf[..n].to_vec())).is_err() {
                            break;
                        }
                    }
                    let _ = ch.send(stream, Message::Close);
                });
            }
            conns.insert(stream, conn);
        }
        Message::Data(d) => {
            if let Some(c) = conns.get_mut(&stream) {
                let r = match c {
                    RelayConn::Plain(s) => s.write_all(&d),
                    RelayConn::Gate(g) => g.data(&d, stream, &ch.gate_streams),
                };
                if r.is_err() {
                    // Gone for good: what the guest sends on it later is
                    // dropped, never kept.
                    let _ = c.sock().shutdown(std::net::Shutdown::Both);
                    if let Some(RelayConn::Gate(_)) = conns.remove(&stream) {
                        ch.gate_streams.remove_stream(stream);
                    }
                    let _ = ch.send(stream, Message::Close);
                }
            }
        }
        Message::Close => {
            if let Some(c) = conns.remove(&stream) {
                let _ = c.sock().shutdown(std::net::Shutdown::Both);
                if let RelayConn::Gate(_) = c {
                    ch.gate_streams.remove_stream(stream);
                }
            }
        }
        _ => {}
    }
}

//! Guest-initiated relays: a connection to 127.0.0.1:PORT inside the VM
//! becomes an odd-numbered stream (Open, Data..., Close) that the host
//! joins to the service's Unix socket. The guest never learns the
//! service's host address; the host decides whether to connect at all.
//! Gate relays (`gate.rs`) share the stream ids and the host's Data/Close.

use crate::cmdline::BootParams;
use crate::exec::{send, Out};
use clawkeep_guest::proto::{Message, Service, MAX_PAYLOAD};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

/// The guest end of one relay.
enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    fn try_clone(&self) -> std::io::Result<Conn> {
        Ok(match self {
            Conn::Tcp(s) => Conn::Tcp(s.try_clone()?),
            Conn::Unix(s) => Conn::Unix(s.try_clone()?),
        })
    }
    fn write_all(&mut self, d: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Tcp(s) => s.write_all(d),
            Conn::Unix(s) => s.write_all(d),
        }
    }
    fn shutdown(&self) {
        let _ = match self {
            Conn::Tcp(s) => s.shutdown(Shutdown::Both),
            Conn::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }
}

/// Guest-opened stream ids: odd, never reused within a boot.
pub fn next_stream() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    NEXT.fetch_add(2, Ordering::Relaxed)
}

/// Host data waiting to be written to one relay's connection. A reader
/// that lets more than this pile up loses its connection: pid 1's channel
/// reader never waits on an agent's socket.
const RELAY_QUEUE: usize = 64;

/// One relay: its connection, and the queue its writer thread drains.
struct Entry {
    conn: Conn,
    tx: SyncSender<Vec<u8>>,
}

#[derive(Clone, Default)]
pub struct Relays {
    conns: Arc<Mutex<HashMap<u32, Entry>>>,
}

/// Writes the host's data for one relay; when the host closes the stream
/// (the queue's sender is dropped), what was queued is written first.
fn writer(mut w: Conn, rx: Receiver<Vec<u8>>) {
    for d in rx {
        if w.write_all(&d).is_err() {
            break;
        }
    }
    w.shutdown();
}

impl Relays {
    /// Listens for the proxy relay when the command line asks for it.
    pub fn start(out: Out, params: &BootParams) -> Relays {
        let r = Relays::default();
        if let Some(port) = params.proxy_port {
            if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
                let r2 = r.clone();
                std::thread::spawn(move || r2.accept(l, out, Service::Proxy));
            }
        }
        r
    }

    fn accept(&self, l: TcpListener, out: Out, service: Service) {
        for conn in l.incoming().flatten() {
            let stream = next_stream();
            let Ok(reader) = conn.try_clone() else { continue };
            if !self.register(stream, Conn::Tcp(conn)) {
                continue;
            }
            send(&out, stream, Message::Open { service });
            let (out, me) = (out.clone(), self.clone());
            std::thread::spawn(move || me.pump(reader, out, stream));
        }
    }

    /// Relays a local Unix connection to `service` on `stream`, starting
    /// with `first` (bytes already read from it); returns when it closes.
    pub fn relay_unix(&self, conn: UnixStream, out: &Out, stream: u32, service: Service, first: Vec<u8>) {
        let Ok(reader) = conn.try_clone() else { return };
        if !self.register(stream, Conn::Unix(conn)) {
            return;
        }
        send(out, stream, Message::Open { service });
        if !first.is_empty() {
            send(out, stream, Message::Data(first));
        }
        self.pump(reader, out.clone(), stream);
    }

    fn pump(&self, mut from: impl Read, out: Out, stream: u32) {
        let mut buf = vec![0u8; 32 * 1024.min(MAX_PAYLOAD)];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            send(&out, stream, Message::Data(buf[..n].to_vec()));
        }
        send(&out, stream, Message::Close);
    }

    /// Starts the writer of a new relay; false if it could not.
    fn register(&self, stream: u32, conn: Conn) -> bool {
        let Ok(w) = conn.try_clone() else { return false };
        let (tx, rx) = sync_channel(RELAY_QUEUE);
        if std::thread::Builder::new().name("relay-writer".into()).spawn(move || writer(w, rx)).is_err() {
            return false;
        }
        match self.conns.lock() {
            Ok(mut c) => {
                c.insert(stream, Entry { conn, tx });
                true
            }
            Err(_) => false,
        }
    }

    /// Queues host data for the relay's writer; never blocks.
    pub fn data(&self, stream: u32, d: Vec<u8>) {
        let Ok(mut c) = self.conns.lock() else { return };
        let Some(e) = c.get(&stream) else { return };
        match e.tx.try_send(d) {
            Ok(()) => {}
            // The agent stopped reading (or the writer is gone): drop it.
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                if let Some(e) = c.remove(&stream) {
                    e.conn.shutdown();
                }
            }
        }
    }

    /// The host closed the stream: the writer flushes what is queued, then
    /// shuts the connection down.
    pub fn close(&self, stream: u32) {
        let _ = self.conns.lock().ok().and_then(|mut c| c.remove(&stream));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_that_stops_reading_loses_its_relay_without_stalling_pid_1() {
        let (agent, ours) = UnixStream::pair().unwrap_or_else(|e| panic!("socketpair: {e}"));
        let relays = Relays::default();
        assert!(relays.register(7, Conn::Unix(ours)));
        let t = std::time::Instant::now();
        // Far more than the socket buffer plus the queue; the agent never reads.
        for _ in 0..400 {
            relays.data(7, vec![0u8; 32 * 1024]);
        }
        assert!(t.elapsed() < std::time::Duration::from_secs(2), "data() waited on the agent's socket");
        assert!(!relays.conns.lock().map(|c| c.contains_key(&7)).unwrap_or(true), "the relay was dropped");
        drop(agent);
    }

    #[test]
    fn queued_data_is_written_before_a_close_ends_the_relay() {
        let (mut agent, ours) = UnixStream::pair().unwrap_or_else(|e| panic!("socketpair: {e}"));
        let relays = Relays::default();
        assert!(relays.register(9, Conn::Unix(ours)));
        relays.data(9, b"hello ".to_vec());
        relays.data(9, b"world".to_vec());
        relays.close(9);
        let mut got = String::new();
        agent.read_to_string(&mut got).unwrap_or_else(|e| panic!("read: {e}"));
        assert_eq!(got, "hello world");
    }
}

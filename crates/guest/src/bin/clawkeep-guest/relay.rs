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

#[derive(Clone, Default)]
pub struct Relays {
    conns: Arc<Mutex<HashMap<u32, Conn>>>,
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
            if let Ok(mut c) = self.conns.lock() {
                c.insert(stream, Conn::Tcp(conn));
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
        if let Ok(mut c) = self.conns.lock() {
            c.insert(stream, Conn::Unix(conn));
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

    pub fn data(&self, stream: u32, d: Vec<u8>) {
        let conn = self.conns.lock().ok().and_then(|c| c.get(&stream).and_then(|s| s.try_clone().ok()));
        if let Some(mut s) = conn {
            if s.write_all(&d).is_err() {
                s.shutdown();
            }
        }
    }

    pub fn close(&self, stream: u32) {
        if let Some(s) = self.conns.lock().ok().and_then(|mut c| c.remove(&stream)) {
            s.shutdown();
        }
    }
}

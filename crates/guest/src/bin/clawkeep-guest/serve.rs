//! The channel loop: one reader (this thread) dispatching host frames;
//! writers share the port behind a mutex, one frame per write.

use crate::exec::{send, Out, Table};
use crate::{cmdline::BootParams, gate, mounts, power, relay};
use clawkeep_guest::proto::{self, HealthInfo, Kind, Message, ReadyInfo};
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn uptime_ms() -> u64 {
    let s = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
    let secs: f64 = s.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
    (secs * 1000.0) as u64
}

fn mem_available_kb() -> Option<u64> {
    let m = std::fs::read_to_string("/proc/meminfo").ok()?;
    m.lines().find_map(|l| l.strip_prefix("MemAvailable:")).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string()
}

/// Waits until the host end of the port is connected: until then the
/// port reports POLLHUP and whatever we write is dropped by QEMU.
fn wait_for_host(port: &File) {
    loop {
        let mut p = libc::pollfd { fd: port.as_raw_fd(), events: libc::POLLOUT, revents: 0 };
        // SAFETY: p is one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, 1000) };
        if n > 0 && p.revents & libc::POLLHUP == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Where the host connects from.
pub enum Transport {
    /// The virtio-serial port: one device, the host attaches and detaches.
    Serial(File),
    /// A listening vsock socket: each host connection is a new stream.
    Vsock(OwnedFd),
}

impl Transport {
    /// The next host connection.
    fn connect(&self) -> std::io::Result<File> {
        match self {
            Transport::Serial(port) => {
                wait_for_host(port);
                port.try_clone()
            }
            Transport::Vsock(l) => crate::port::accept(l),
        }
    }
}

pub fn serve(transport: Transport, params: BootParams) -> ! {
    let conn = transport.connect().unwrap_or_else(|e| power::fatal("channel", &e.to_string()));
    let writer = conn.try_clone().unwrap_or_else(|e| power::fatal("channel", &e.to_string()));
    let out: Out = Arc::new(Mutex::new(writer));
    let table = Table::start();
    let relays = relay::Relays::start(out.clone(), &params);
    let gate = gate::Gate::new(out.clone(), relays.clone(), table.clone());
    let mut conn = Some(conn);
    loop {
        // Each (re)connection starts with Ready; commands keep running
        // across a reconnection and report to whoever is connected.
        let c = match conn.take().map_or_else(|| transport.connect(), Ok) {
            Ok(c) => c,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if let (Ok(w), Ok(mut o)) = (c.try_clone(), out.lock()) {
            *o = w;
        }
        send(
            &out,
            0,
            Message::Ready(ReadyInfo { kernel: kernel_release(), uptime_ms: uptime_ms(), stdin_window: proto::STDIN_WINDOW, tty: true }),
        );
        serve_connection(c, &out, &table, &relays, &gate);
        // The host went away (EOF); wait for it to come back.
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn serve_connection(conn: File, out: &Out, table: &Table, relays: &relay::Relays, gate: &gate::Gate) {
    let mut reader = std::io::BufReader::with_capacity(64 * 1024, conn);
    loop {
        let frame = match proto::read_frame(&mut reader) {
            Ok(Some(f)) => f,
            Ok(None) | Err(proto::ProtoError::Io(_)) | Err(proto::ProtoError::Truncated) => return,
            Err(e) => {
                // Framing is lost: drop this connection, the host reconnects.
                send(out, 0, Message::Error { message: format!("bad frame from the host: {e}") });
                return;
            }
        };
        let stream = frame.stream;
        let relay_kind = matches!(frame.kind, Kind::Data | Kind::Close);
        match Message::from_frame(frame) {
            Ok(Message::Exec(req)) => table.exec(out, stream, req),
            Ok(Message::Stdin(d)) => table.stdin(stream, d),
            Ok(Message::Signal { signo }) => table.signal(stream, signo),
            Ok(Message::Resize(size)) => table.resize(stream, size),
            Ok(Message::Health) => send(
                out,
                stream,
                Message::HealthOk(HealthInfo { uptime_ms: uptime_ms(), mem_available_kb: mem_available_kb(), running: table.running() }),
            ),
            Ok(Message::Shutdown) => shutdown(table),
            // Synchronous: the masks are in place before the next frame
            // (the command's Exec) is even read.
            Ok(Message::GateConfig(g)) => match gate.configure(&g) {
                Ok(masked) => send(out, 0, Message::GateReady { masked }),
                Err(message) => send(out, 0, Message::Error { message: format!("gate masks: {message}") }),
            },
            Ok(Message::GatedExec(job)) => gate.exec(stream, job),
            Ok(Message::GatedRelease) => gate.release(stream),
            Ok(Message::GatedSignal { signo }) => gate.signal(stream, signo),
            Ok(Message::Data(d)) if relay_kind => relays.data(stream, d),
            Ok(Message::Close) => relays.close(stream),
            Ok(other) => send(out, stream, Message::Error { message: format!("unexpected {:?} from the host", other.kind()) }),
            Err(e) => send(out, stream, Message::Error { message: e.to_string() }),
        }
    }
}

fn shutdown(table: &Table) -> ! {
    table.kill_all(Duration::from_secs(2));
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    mounts::unmount_writable();
    power::power_off()
}

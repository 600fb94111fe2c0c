#![allow(clippy::unwrap_used)]
use super::*;
use clawkeep_guest::proto::{ExitStatus, Frame, ReadyInfo, TtySize, STDIN_WINDOW};
use std::io::Read;
use std::os::unix::net::UnixListener;

/// A fake guest on a Unix socket: it accepts once and hands the stream
/// to `f`.
fn fake_guest(f: impl FnOnce(UnixStream) + Send + 'static) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("ch.sock");
    let l = UnixListener::bind(&sock).unwrap();
    std::thread::spawn(move || f(l.accept().unwrap().0));
    (dir, sock)
}

fn write(s: &mut UnixStream, stream: u32, m: Message) {
    proto::write_frame(s, &m.into_frame(stream)).unwrap();
}

fn read(s: &mut UnixStream) -> (u32, Message) {
    let f = proto::read_frame(s).unwrap().unwrap();
    (f.stream, Message::from_frame(f).unwrap())
}

#[test]
fn ready_then_an_exec_is_routed_to_its_stream() {
    let (_d, sock) = fake_guest(|mut s| {
        write(&mut s, 0, Message::Ready(ReadyInfo { kernel: "k".into(), uptime_ms: 5, stdin_window: STDIN_WINDOW, tty: true }));
        let (id, m) = read(&mut s);
        assert!(matches!(m, Message::Exec(ref r) if r.argv == ["echo", "hi"]));
        // Noise on a stream nobody opened is dropped, not misrouted.
        write(&mut s, 40, Message::Stdout(b"stray".to_vec()));
        write(&mut s, id, Message::Started { pid: 7 });
        write(&mut s, id, Message::Stdout(b"hi\n".to_vec()));
        let (sid, m) = read(&mut s);
        assert_eq!((sid, m), (id, Message::Stdin(Vec::new())));
        write(&mut s, id, Message::Exit(ExitStatus { code: Some(0), signal: None }));
        let _ = read(&mut s);
    });
    let ch = Channel::connect(&sock, Instant::now() + Duration::from_secs(5), || true, HashMap::new()).unwrap();
    let ready = ch.wait_ready(Duration::from_secs(5), || true).unwrap();
    assert_eq!(ready.kernel, "k");
    let req =
        ExecRequest { argv: vec!["echo".into(), "hi".into()], env: vec![], cwd: None, uid: 1000, gid: 1000, stdin_credit: true, tty: None };
    let ex = ch.exec(req).unwrap();
    assert_eq!(ex.recv().unwrap(), Message::Started { pid: 7 });
    assert_eq!(ex.recv().unwrap(), Message::Stdout(b"hi\n".to_vec()));
    ex.stdin(&[]).unwrap();
    assert_eq!(ex.recv().unwrap(), Message::Exit(ExitStatus { code: Some(0), signal: None }));
    ch.send(0, Message::Shutdown).unwrap();
}

#[test]
fn a_guest_that_goes_away_ends_waiting_streams() {
    let (_d, sock) = fake_guest(|mut s| {
        let _ = read(&mut s);
        drop(s);
    });
    let ch = Channel::connect(&sock, Instant::now() + Duration::from_secs(5), || true, HashMap::new()).unwrap();
    let ex =
        ch.exec(ExecRequest { argv: vec!["x".into()], env: vec![], cwd: None, uid: 0, gid: 0, stdin_credit: true, tty: None }).unwrap();
    assert!(matches!(ex.recv(), Err(ChannelError::Closed)));
    assert!(matches!(ch.wait_ready(Duration::from_secs(1), || true), Err(ChannelError::Closed)));
}

#[test]
fn a_stream_opened_after_the_reader_stopped_is_refused_not_left_waiting() {
    // A frame of an unknown kind ends the reader while the socket stays
    // open: a later Exec would go out, and its stream would wait forever.
    let (_d, sock) = fake_guest(|mut s| {
        s.write_all(&[0, 0, 0, 5, 0x7f, 0, 0, 0, 0]).unwrap();
        std::thread::sleep(Duration::from_secs(3));
    });
    let ch = Channel::connect(&sock, Instant::now() + Duration::from_secs(5), || true, HashMap::new()).unwrap();
    assert!(matches!(ch.wait_ready(Duration::from_secs(2), || true), Err(ChannelError::Closed)));
    let req = ExecRequest { argv: vec!["x".into()], env: vec![], cwd: None, uid: 0, gid: 0, stdin_credit: true, tty: None };
    assert!(matches!(ch.exec(req), Err(ChannelError::Closed)));
}

#[test]
fn ready_wait_is_bounded() {
    let (_d, sock) = fake_guest(|s| {
        std::thread::sleep(Duration::from_secs(3));
        drop(s);
    });
    let ch = Channel::connect(&sock, Instant::now() + Duration::from_secs(5), || true, HashMap::new()).unwrap();
    let t = Instant::now();
    assert!(matches!(ch.wait_ready(Duration::from_millis(300), || true), Err(ChannelError::Timeout(_))));
    assert!(t.elapsed() < Duration::from_secs(2));
    // A dead VM is noticed without waiting for the timeout.
    let t = Instant::now();
    assert!(matches!(ch.wait_ready(Duration::from_secs(30), || false), Err(ChannelError::Closed)));
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[test]
fn a_guest_opened_proxy_stream_is_joined_to_the_host_socket() {
    let svc = tempfile::tempdir().unwrap();
    let svc_sock = svc.path().join("proxy.sock");
    let l = UnixListener::bind(&svc_sock).unwrap();
    // The host service: echoes in upper case.
    std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        let mut b = [0u8; 5];
        c.read_exact(&mut b).unwrap();
        c.write_all(&b.to_ascii_uppercase()).unwrap();
    });
    let (tx, rx) = mpsc::channel();
    let (_d, sock) = fake_guest(move |mut s| {
        write(&mut s, 3, Message::Open { service: Service::Proxy });
        write(&mut s, 3, Message::Data(b"hello".to_vec()));
        // Gate has no socket configured: refused.
        write(&mut s, 5, Message::Open { service: Service::Gate });
        // Stream 3's Data and Close and stream 5's Close may come in any
        // order: read until both answers the test checks are in (bounded).
        let mut got = Vec::new();
        while got.len() < 3 && !(got.contains(&(5, Message::Close)) && got.iter().any(|(id, m)| *id == 3 && matches!(m, Message::Data(_))))
        {
            got.push(read(&mut s));
        }
        tx.send(got).unwrap();
    });
    let relays = HashMap::from([(Service::Proxy, svc_sock)]);
    let _ch = Channel::connect(&sock, Instant::now() + Duration::from_secs(5), || true, relays).unwrap();
    let got = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(got.contains(&(5, Message::Close)), "{got:?}");
    assert!(got.contains(&(3, Message::Data(b"HELLO".to_vec()))), "{got:?}");
}

#[test]
fn a_guest_cannot_open_unbounded_relays_or_reuse_a_stream() {
    let svc = tempfile::tempdir().unwrap();
    let svc_sock = svc.path().join("proxy.sock");
    let l = UnixListener::bind(&svc_sock).unwrap();
    // The host service accepts everything and holds the connections open.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in l.incoming() {
            held.push(c);
        }
    });
    let (tx, rx) = mpsc::channel();
    let (_d, sock) = fake_guest(move |mut s| {
        let extra = 3u32;
        for i in 0..(MAX_RELAYS as u32 + extra) {
            write(&mut s, 2 * i + 1, Message::Open { service: Service::Proxy });
        }
        // Stream 1 is in use: opening it again is refused too.
        write(&mut s, 1, Message::Open { service: Service::Proxy });
        let mut closed = Vec::new();
        while closed.len() < extra as usize + 1 {
            if let (id, Message::Close) = read(&mut s) {
                closed.push(id);
            }
        }
        tx.send(closed).unwrap();
    });
    let relays = HashMap::from([(Service::Proxy, svc_sock)]);
    let _ch = Channel::connect(&sock, Instant::now() + Duration::from_secs(5), || true, relays).unwrap();
    let mut closed = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    closed.sort_unstable();
    let over: Vec<u32> = (MAX_RELAYS as u32..MAX_RELAYS as u32 + 3).map(|i| 2 * i + 1).collect();
    assert_eq!(closed, [vec![1], over].concat(), "the 65th..67th and the reused stream are refused");
}

/// A fake guest the test drives by hand: it writes frames to the host on
/// `to_host`, and every frame the host sends arrives on `frames`.
struct Puppet {
    _dir: tempfile::TempDir,
    ch: Channel,
    to_host: UnixStream,
    frames: Receiver<(u32, Message)>,
}

/// A connected puppet that said Ready; `window: None` is a guest from
/// before flow control and terminals (its Ready has neither field).
fn puppet(window: Option<u32>) -> Puppet {
    let (sock_tx, sock_rx) = mpsc::channel();
    let (frames_tx, frames) = mpsc::channel();
    let (dir, sock) = fake_guest(move |mut s| {
        sock_tx.send(s.try_clone().unwrap()).unwrap();
        while let Ok(Some(f)) = proto::read_frame(&mut s) {
            if frames_tx.send((f.stream, Message::from_frame(f).unwrap())).is_err() {
                return;
            }
        }
    });
    let ch = Channel::connect(&sock, Instant::now() + Duration::from_secs(5), || true, HashMap::new()).unwrap();
    let mut to_host = sock_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let ready = match window {
        Some(w) => Message::Ready(ReadyInfo { kernel: "k".into(), uptime_ms: 5, stdin_window: w, tty: true }).into_frame(0),
        None => Frame { kind: Kind::Ready, stream: 0, payload: br#"{"kernel":"k","uptime_ms":5}"#.to_vec() },
    };
    proto::write_frame(&mut to_host, &ready).unwrap();
    assert_eq!(ch.wait_ready(Duration::from_secs(5), || true).unwrap().stdin_window, window.unwrap_or(0));
    Puppet { _dir: dir, ch, to_host, frames }
}

impl Puppet {
    /// Starts a command; returns its stream and the id the guest saw.
    fn exec(&self) -> (ExecStream, u32) {
        let (ex, id, _) = self.exec_on(None);
        (ex, id)
    }

    /// Starts a command asking for terminal `tty`; also returns the
    /// terminal the guest was asked for.
    fn exec_on(&self, tty: Option<TtySize>) -> (ExecStream, u32, Option<TtySize>) {
        let req = ExecRequest { argv: vec!["cat".into()], env: vec![], cwd: None, uid: 1000, gid: 1000, stdin_credit: true, tty };
        let ex = self.ch.exec(req).unwrap();
        match self.next() {
            (id, Message::Exec(r)) => (ex, id, r.tty),
            other => panic!("expected Exec, got {other:?}"),
        }
    }

    fn next(&self) -> (u32, Message) {
        self.frames.recv_timeout(Duration::from_secs(5)).unwrap()
    }

    fn write(&mut self, stream: u32, m: Message) {
        write(&mut self.to_host, stream, m);
    }

    /// Stdin frames on `id` until `n` bytes arrived (no frame over the
    /// host's chunk size); returns what arrived, which may be more.
    fn stdin(&self, id: u32, n: usize) -> Vec<u8> {
        let mut got = Vec::new();
        while got.len() < n {
            match self.next() {
                (s, Message::Stdin(d)) if s == id && !d.is_empty() => {
                    assert!(d.len() <= STDIN_CHUNK, "a {}-byte frame", d.len());
                    got.extend(d);
                }
                other => panic!("expected stdin on {id}, got {other:?}"),
            }
        }
        got
    }

    /// Nothing arrives for a while.
    fn quiet(&self) -> bool {
        matches!(self.frames.recv_timeout(Duration::from_millis(300)), Err(RecvTimeoutError::Timeout))
    }
}

/// `data` sent by a thread of its own, as `clawkeep run` forwards stdin.
fn stdin_in_background(s: StreamSender, data: Vec<u8>) -> Receiver<Result<(), ChannelError>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(s.stdin(&data)).unwrap());
    rx
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

#[test]
fn stdin_beyond_the_window_waits_for_the_guests_credit() {
    const TOTAL: usize = 1 << 20;
    let win = STDIN_WINDOW as usize;
    let mut p = puppet(Some(STDIN_WINDOW));
    let (ex, id) = p.exec();
    let data = pattern(TOTAL);
    let done = stdin_in_background(ex.sender(), data.clone());
    let mut got = p.stdin(id, win);
    assert_eq!(got.len(), win, "exactly the window goes out");
    assert!(p.quiet(), "nothing more without credit");
    assert!(matches!(done.try_recv(), Err(mpsc::TryRecvError::Empty)), "the sender waits for credit");
    // A small credit is a small frame: never more than was granted.
    p.write(id, Message::StdinCredit { bytes: 1000 });
    assert_eq!(p.next(), (id, Message::Stdin(data[win..win + 1000].to_vec())));
    assert!(p.quiet());
    // Credit for the rest: it flows in chunk-sized frames.
    let rest = (TOTAL - win - 1000) as u32;
    p.write(id, Message::StdinCredit { bytes: rest });
    got.extend(data[win..win + 1000].iter());
    got.extend(p.stdin(id, rest as usize));
    assert!(done.recv_timeout(Duration::from_secs(5)).unwrap().is_ok());
    assert!(got == data, "the bytes arrive whole and in order");
    // EOF needs no credit (none is left).
    ex.stdin(&[]).unwrap();
    assert_eq!(p.next(), (id, Message::Stdin(Vec::new())));
    // Credit is never a message for the stream's reader.
    p.write(id, Message::StdinCredit { bytes: 5 });
    p.write(id, Message::Exit(ExitStatus { code: Some(0), signal: None }));
    assert_eq!(ex.recv().unwrap(), Message::Exit(ExitStatus { code: Some(0), signal: None }));
}

#[test]
fn a_sender_waiting_for_credit_returns_when_the_command_exits() {
    let mut p = puppet(Some(STDIN_WINDOW));
    let (ex, id) = p.exec();
    let done = stdin_in_background(ex.sender(), pattern(1 << 20));
    p.stdin(id, STDIN_WINDOW as usize);
    assert!(p.quiet());
    assert!(matches!(done.try_recv(), Err(mpsc::TryRecvError::Empty)), "the sender waits for credit");
    p.write(id, Message::Exit(ExitStatus { code: Some(0), signal: None }));
    assert!(matches!(done.recv_timeout(Duration::from_secs(2)).unwrap(), Err(ChannelError::Closed)));
    assert_eq!(ex.recv().unwrap(), Message::Exit(ExitStatus { code: Some(0), signal: None }));
    // After the exit stdin fails at once; EOF still goes out (free, harmless).
    assert!(matches!(ex.stdin(b"late"), Err(ChannelError::Closed)));
    ex.stdin(&[]).unwrap();
    assert_eq!(p.next(), (id, Message::Stdin(Vec::new())));
}

#[test]
fn a_sender_waiting_for_credit_returns_when_its_stream_is_dropped_or_the_channel_closes() {
    let p = puppet(Some(STDIN_WINDOW));
    let (ex, id) = p.exec();
    let done = stdin_in_background(ex.sender(), pattern(1 << 20));
    p.stdin(id, STDIN_WINDOW as usize);
    drop(ex);
    assert!(matches!(done.recv_timeout(Duration::from_secs(2)).unwrap(), Err(ChannelError::Closed)));
    let (ex, id) = p.exec();
    let done = stdin_in_background(ex.sender(), pattern(1 << 20));
    p.stdin(id, STDIN_WINDOW as usize);
    assert!(matches!(done.try_recv(), Err(mpsc::TryRecvError::Empty)), "the sender waits for credit");
    p.to_host.shutdown(std::net::Shutdown::Both).unwrap();
    assert!(matches!(done.recv_timeout(Duration::from_secs(2)).unwrap(), Err(ChannelError::Closed)));
    assert!(matches!(ex.recv(), Err(ChannelError::Closed)));
}

#[test]
fn a_guest_without_a_window_gets_stdin_without_limit() {
    let p = puppet(None);
    let (ex, id) = p.exec();
    let data = pattern(1 << 20);
    // No credit ever comes, and none is needed.
    ex.stdin(&data).unwrap();
    assert!(p.stdin(id, data.len()) == data);
    ex.stdin(&[]).unwrap();
    assert_eq!(p.next(), (id, Message::Stdin(Vec::new())));
}

#[test]
fn a_resize_goes_out_on_the_stream_of_a_command_on_a_terminal() {
    let p = puppet(Some(STDIN_WINDOW));
    let size = TtySize { rows: 30, cols: 100 };
    let (ex, id, asked) = p.exec_on(Some(size));
    assert_eq!(asked, Some(size));
    assert!(ex.tty());
    let big = TtySize { rows: 40, cols: 120 };
    ex.sender().resize(big).unwrap();
    assert_eq!(p.next(), (id, Message::Resize(big)));
    // A command on pipes has nothing to resize: nothing goes out.
    let (ex, _, asked) = p.exec_on(None);
    assert!(asked.is_none() && !ex.tty());
    ex.sender().resize(big).unwrap();
    assert!(p.quiet());
}

#[test]
fn a_guest_without_terminals_is_never_asked_for_one_nor_sent_a_resize() {
    let p = puppet(None);
    let (ex, _, asked) = p.exec_on(Some(TtySize { rows: 30, cols: 100 }));
    assert_eq!(asked, None, "an old guest runs the command on pipes");
    assert!(!ex.tty());
    ex.sender().resize(TtySize { rows: 40, cols: 120 }).unwrap();
    assert!(p.quiet(), "a Resize would cost an old guest the channel's framing");
}

/// A guest that stops reading cannot hold a send (a Shutdown, a signal)
/// for ever: the write times out, and every later send fails at once.
#[test]
fn a_guest_that_stops_reading_cannot_block_a_send() {
    let (host, _guest) = UnixStream::pair().unwrap();
    let ch = Channel::with_write_timeout(host, HashMap::new(), Duration::from_millis(300)).unwrap();
    let t0 = std::time::Instant::now();
    let mut failed = None;
    for _ in 0..10_000 {
        if let Err(e) = ch.send(5, Message::Stdin(vec![0u8; 64 * 1024])) {
            failed = Some(e);
            break;
        }
    }
    assert!(matches!(failed, Some(ChannelError::Stalled(_))), "{failed:?}");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    let t1 = std::time::Instant::now();
    assert!(ch.send(0, Message::Shutdown).is_err());
    assert!(t1.elapsed() < Duration::from_millis(100), "a later send waited again");
}

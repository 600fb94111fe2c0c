#![allow(clippy::unwrap_used)]
use super::*;
use clawkeep_guest::proto::{ExitStatus, ReadyInfo};
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
        write(&mut s, 0, Message::Ready(ReadyInfo { kernel: "k".into(), uptime_ms: 5 }));
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
    let req = ExecRequest { argv: vec!["echo".into(), "hi".into()], env: vec![], cwd: None, uid: 1000, gid: 1000 };
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
    let ex = ch.exec(ExecRequest { argv: vec!["x".into()], env: vec![], cwd: None, uid: 0, gid: 0 }).unwrap();
    assert!(matches!(ex.recv(), Err(ChannelError::Closed)));
    assert!(matches!(ch.wait_ready(Duration::from_secs(1), || true), Err(ChannelError::Closed)));
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

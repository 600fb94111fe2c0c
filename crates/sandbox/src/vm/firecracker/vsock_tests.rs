use super::*;
use std::io::{BufRead, BufReader};
use std::thread;

/// A fake Firecracker vsock socket: reads `CONNECT <port>\n` and answers
/// with `reply(port)`; `None` closes the connection (nobody listening).
fn fake_vsock(uds: &Path, reply: impl Fn(u32) -> Option<String> + Send + 'static) -> thread::JoinHandle<Vec<u32>> {
    let l = UnixListener::bind(uds).expect("bind");
    thread::spawn(move || {
        let mut ports = Vec::new();
        let Ok((mut conn, _)) = l.accept() else { return ports };
        let mut line = String::new();
        BufReader::new(conn.try_clone().expect("clone")).read_line(&mut line).expect("read");
        let port: u32 = line.trim().strip_prefix("CONNECT ").expect("CONNECT").parse().expect("port");
        ports.push(port);
        if let Some(r) = reply(port) {
            // The client may hang up early (refusals, retries): ignore EPIPE.
            let _ = conn.write_all(r.as_bytes());
            // Guest data right behind the ack must reach the caller.
            let _ = conn.write_all(b"hello from guest");
        }
        ports
    })
}

#[test]
fn handshake_ok_keeps_the_bytes_after_the_ack() {
    let dir = tempfile::tempdir().expect("tempdir");
    let uds = dir.path().join("v.sock");
    let server = fake_vsock(&uds, |_| Some("OK 1073741824\n".into()));
    let mut s = connect(&uds, 52, Duration::from_secs(2)).expect("connect");
    let mut rest = String::new();
    s.read_to_string(&mut rest).expect("read");
    assert_eq!(rest, "hello from guest");
    assert_eq!(server.join().expect("join"), [52]);
}

#[test]
fn closed_connection_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let uds = dir.path().join("v.sock");
    let server = fake_vsock(&uds, |_| None);
    let err = connect(&uds, 1024, Duration::from_secs(2)).expect_err("refused");
    assert!(matches!(err, FirecrackerError::VsockRefused { port: 1024, .. }), "{err:?}");
    assert!(err.to_string().contains("is clawkeep-guest running?"));
    server.join().expect("join");
}

#[test]
fn bad_answer_is_a_handshake_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let uds = dir.path().join("v.sock");
    let server = fake_vsock(&uds, |_| Some("NOPE\n".into()));
    let err = connect(&uds, 7, Duration::from_secs(2)).expect_err("bad");
    assert!(matches!(err, FirecrackerError::VsockHandshake { ref answer, .. } if answer == "NOPE"), "{err:?}");
    server.join().expect("join");
}

#[test]
fn overlong_answer_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let uds = dir.path().join("v.sock");
    let server = fake_vsock(&uds, |_| Some("x".repeat(MAX_ACK + 10)));
    assert!(matches!(connect(&uds, 7, Duration::from_secs(2)), Err(FirecrackerError::VsockHandshake { .. })));
    server.join().expect("join");
}

#[test]
fn missing_socket_is_an_io_error_and_connect_until_gives_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let uds = dir.path().join("absent.sock");
    assert!(matches!(connect(&uds, 1, Duration::from_millis(50)), Err(FirecrackerError::VsockIo { .. })));
    let start = Instant::now();
    let err = connect_until(&uds, 1, Instant::now() + Duration::from_millis(200)).expect_err("gives up");
    assert!(matches!(err, FirecrackerError::VsockIo { .. }));
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn connect_until_waits_for_the_listener() {
    let dir = tempfile::tempdir().expect("tempdir");
    let uds = dir.path().join("late.sock");
    let uds2 = uds.clone();
    let server = thread::spawn(move || {
        thread::sleep(Duration::from_millis(100));
        fake_vsock(&uds2, |_| Some("OK 5\n".into())).join().expect("join")
    });
    connect_until(&uds, 9, Instant::now() + Duration::from_secs(5)).expect("connect");
    assert_eq!(server.join().expect("join"), [9]);
}

#[test]
fn guest_initiated_listener_path() {
    assert_eq!(listener_path(Path::new("/x/run/vsock.sock"), 52), PathBuf::from("/x/run/vsock.sock_52"));
    let dir = tempfile::tempdir().expect("tempdir");
    let uds = dir.path().join("v.sock");
    let _l = listen(&uds, 52).expect("listen");
    assert!(dir.path().join("v.sock_52").exists());
}

#![allow(clippy::unwrap_used)]
use super::*;

fn all() -> Vec<Message> {
    vec![
        Message::Exec(ExecRequest {
            argv: vec!["sh".into(), "-c".into(), "echo hi".into()],
            env: vec![("PATH".into(), "/bin".into())],
            cwd: Some("/workspace".into()),
            uid: 1000,
            gid: 1000,
            stdin_credit: true,
            tty: None,
        }),
        Message::Exec(ExecRequest {
            argv: vec!["sh".into()],
            env: vec![],
            cwd: None,
            uid: 1000,
            gid: 1000,
            stdin_credit: true,
            tty: Some(TtySize { rows: 24, cols: 80 }),
        }),
        Message::Resize(TtySize { rows: 50, cols: 132 }),
        Message::Resize(TtySize { rows: u16::MAX, cols: 0 }),
        Message::Stdin(b"abc".to_vec()),
        Message::Stdin(Vec::new()),
        Message::Signal { signo: 15 },
        Message::Health,
        Message::Shutdown,
        Message::Open { service: Service::Proxy },
        Message::Data(vec![0, 1, 2, 255]),
        Message::Close,
        Message::Ready(ReadyInfo { kernel: "6.1.0".into(), uptime_ms: 4200, stdin_window: STDIN_WINDOW, tty: true }),
        Message::Started { pid: 42 },
        Message::Stdout(b"out".to_vec()),
        Message::Stderr(b"err".to_vec()),
        Message::Exit(ExitStatus { code: Some(3), signal: None }),
        Message::HealthOk(HealthInfo { uptime_ms: 1, mem_available_kb: Some(2), running: 0 }),
        Message::Error { message: "no".into() },
        Message::GateConfig(GateSetup { commands: vec!["wget".into(), "git".into()] }),
        Message::GatedExec(GatedJob {
            command: "git".into(),
            args: vec!["push".into()],
            cwd: "/workspace".into(),
            env: vec![("HOME".into(), "/workspace".into())],
            timeout_ms: Some(5000),
        }),
        Message::GatedRelease,
        Message::GatedSignal { signo: 2 },
        Message::GateReady { masked: 7 },
        Message::GatedExit(GatedExitStatus { code: None, signal: Some(9), timed_out: true, bytes_out: None }),
        Message::StdinCredit { bytes: 65536 },
    ]
}

#[test]
fn every_message_round_trips_through_bytes() {
    for (i, m) in all().into_iter().enumerate() {
        let bytes = m.clone().into_frame(i as u32).encode().unwrap();
        let (f, used) = decode(&bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(f.stream, i as u32);
        assert_eq!(Message::from_frame(f).unwrap(), m);
        let f2 = read_frame(&mut &bytes[..]).unwrap().unwrap();
        assert_eq!(Message::from_frame(f2).unwrap(), m);
    }
}

#[test]
fn wire_layout_is_length_kind_stream_payload() {
    let b = Message::Stdout(b"hi".to_vec()).into_frame(7).encode().unwrap();
    assert_eq!(b, [0, 0, 0, 7, 0x83, 0, 0, 0, 7, b'h', b'i']);
}

#[test]
fn oversize_is_refused_both_ways() {
    let big = Frame { kind: Kind::Stdout, stream: 1, payload: vec![0; MAX_PAYLOAD + 1] };
    assert!(matches!(big.encode(), Err(ProtoError::BadLength(_))));
    let ok = Frame { kind: Kind::Stdout, stream: 1, payload: vec![0; MAX_PAYLOAD] };
    assert!(ok.encode().is_ok());
    let head = ((MAX_FRAME + 1) as u32).to_be_bytes();
    assert!(matches!(decode(&head), Err(ProtoError::BadLength(_))));
    // The reader refuses after 4 bytes, without waiting for the body.
    assert!(matches!(read_frame(&mut &head[..]), Err(ProtoError::BadLength(_))));
    assert!(matches!(decode(&[0, 0, 0, 4, 1, 0, 0, 0]), Err(ProtoError::BadLength(4))));
}

#[test]
fn truncated_input_needs_more_or_fails() {
    let b = Message::Stdout(b"hello".to_vec()).into_frame(2).encode().unwrap();
    for cut in 0..b.len() {
        assert!(decode(&b[..cut]).unwrap().is_none(), "cut {cut}");
        let r = read_frame(&mut &b[..cut]);
        if cut == 0 {
            assert!(r.unwrap().is_none());
        } else {
            assert!(matches!(r, Err(ProtoError::Truncated)), "cut {cut}: {r:?}");
        }
    }
}

#[test]
fn unknown_kind_and_bad_json_are_errors() {
    let b = [0, 0, 0, 5, 0x7f, 0, 0, 0, 0];
    assert!(matches!(decode(&b), Err(ProtoError::UnknownKind(0x7f))));
    assert!(matches!(read_frame(&mut &b[..]), Err(ProtoError::UnknownKind(0x7f))));
    let f = Frame { kind: Kind::Exit, stream: 2, payload: b"{not json".to_vec() };
    assert!(matches!(Message::from_frame(f), Err(ProtoError::Payload { kind: Kind::Exit, .. })));
}

#[test]
fn two_frames_back_to_back_decode_in_order() {
    let mut b = Message::Health.into_frame(0).encode().unwrap();
    b.extend(Message::Shutdown.into_frame(0).encode().unwrap());
    let (f1, n) = decode(&b).unwrap().unwrap();
    let (f2, m) = decode(&b[n..]).unwrap().unwrap();
    assert_eq!((f1.kind, f2.kind, n + m), (Kind::Health, Kind::Shutdown, b.len()));
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A cheap deterministic fuzz: every prefix of a pseudo-random stream.
    let mut x: u32 = 0x1234_5678;
    let bytes: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x % 7) as u8
        })
        .collect();
    for start in 0..256 {
        let _ = decode(&bytes[start..]);
        let _ = read_frame(&mut &bytes[start..]).map(|f| f.map(Message::from_frame));
    }
}

#[test]
fn gated_kinds_have_their_wire_values_and_json() {
    let b = Message::GatedRelease.into_frame(3).encode().unwrap();
    assert_eq!(b, [0, 0, 0, 5, 0x08, 0, 0, 0, 3]);
    let f = Message::GatedSignal { signo: 15 }.into_frame(5);
    assert_eq!((f.kind as u8, &f.payload[..]), (0x09, &br#"{"signo":15}"#[..]));
    let f = Message::GateReady { masked: 2 }.into_frame(0);
    assert_eq!((f.kind as u8, &f.payload[..]), (0x88, &br#"{"masked":2}"#[..]));
    for (k, v) in [(Kind::GateConfig, 0x06), (Kind::GatedExec, 0x07), (Kind::GatedExit, 0x89)] {
        assert_eq!(Kind::from_u8(v), Some(k));
    }
    // A GatedExec without its fields is refused, not defaulted.
    let f = Frame { kind: Kind::GatedExec, stream: 1, payload: br#"{"command":"x"}"#.to_vec() };
    assert!(matches!(Message::from_frame(f), Err(ProtoError::Payload { kind: Kind::GatedExec, .. })));
}

#[test]
fn stdin_credit_has_its_wire_value_and_json() {
    let b = Message::StdinCredit { bytes: 7 }.into_frame(2).encode().unwrap();
    assert_eq!(b, [&[0, 0, 0, 16, 0x8a, 0, 0, 0, 2][..], br#"{"bytes":7}"#].concat());
    assert_eq!(Kind::from_u8(0x8a), Some(Kind::StdinCredit));
    let f = Frame { kind: Kind::StdinCredit, stream: 2, payload: br#"{"bytes":4294967295}"#.to_vec() };
    assert_eq!(Message::from_frame(f).unwrap(), Message::StdinCredit { bytes: u32::MAX });
}

#[test]
fn a_bad_stdin_credit_is_refused_not_defaulted() {
    // Missing, negative, over u32, wrong type, not JSON, empty.
    for p in [&br#"{}"#[..], br#"{"bytes":-1}"#, br#"{"bytes":4294967296}"#, br#"{"bytes":"9"}"#, b"{bytes", b""] {
        let f = Frame { kind: Kind::StdinCredit, stream: 2, payload: p.to_vec() };
        let r = Message::from_frame(f);
        assert!(matches!(r, Err(ProtoError::Payload { kind: Kind::StdinCredit, .. })), "{p:?}: {r:?}");
    }
}

#[test]
fn a_ready_without_a_window_is_an_old_guest_without_flow_control() {
    let f = Frame { kind: Kind::Ready, stream: 0, payload: br#"{"kernel":"6.1.0","uptime_ms":9}"#.to_vec() };
    let Message::Ready(r) = Message::from_frame(f).unwrap() else { panic!("not Ready") };
    assert_eq!(r.stdin_window, 0);
}

#[test]
fn resize_has_its_wire_value_and_json() {
    let b = Message::Resize(TtySize { rows: 40, cols: 120 }).into_frame(2).encode().unwrap();
    assert_eq!(b, [&[0, 0, 0, 27, 0x0a, 0, 0, 0, 2][..], br#"{"rows":40,"cols":120}"#].concat());
    assert_eq!(Kind::from_u8(0x0a), Some(Kind::Resize));
}

#[test]
fn a_bad_resize_is_refused_not_defaulted() {
    // Missing a field, negative, over u16, wrong type, not JSON, empty.
    for p in
        [&br#"{"rows":40}"#[..], br#"{"rows":-1,"cols":80}"#, br#"{"rows":65536,"cols":80}"#, br#"{"rows":"40","cols":80}"#, b"{rows", b""]
    {
        let f = Frame { kind: Kind::Resize, stream: 2, payload: p.to_vec() };
        let r = Message::from_frame(f);
        assert!(matches!(r, Err(ProtoError::Payload { kind: Kind::Resize, .. })), "{p:?}: {r:?}");
    }
}

#[test]
fn an_exec_without_a_tty_is_an_old_host_and_runs_on_pipes() {
    let p = br#"{"argv":["true"],"env":[],"cwd":null,"uid":1000,"gid":1000,"stdin_credit":true}"#;
    let f = Frame { kind: Kind::Exec, stream: 2, payload: p.to_vec() };
    let Message::Exec(r) = Message::from_frame(f).unwrap() else { panic!("not Exec") };
    assert_eq!(r.tty, None);
}

#[test]
fn fields_a_guest_does_not_know_are_ignored_so_an_old_guest_runs_a_tty_request_on_pipes() {
    // No proto struct denies unknown fields: a guest built before `tty`
    // reads this Exec (and a future field) as the request it knows.
    let p = br#"{"argv":["true"],"env":[],"cwd":null,"uid":1000,"gid":1000,"stdin_credit":true,
        "tty":{"rows":24,"cols":80},"from_the_future":{"x":1}}"#;
    let f = Frame { kind: Kind::Exec, stream: 2, payload: p.to_vec() };
    let Message::Exec(r) = Message::from_frame(f).unwrap() else { panic!("not Exec") };
    assert_eq!(r.tty, Some(TtySize { rows: 24, cols: 80 }));
}

#[test]
fn a_ready_without_tty_is_an_old_guest_without_terminals() {
    let f = Frame { kind: Kind::Ready, stream: 0, payload: br#"{"kernel":"6.1.0","uptime_ms":9,"stdin_window":5}"#.to_vec() };
    let Message::Ready(r) = Message::from_frame(f).unwrap() else { panic!("not Ready") };
    assert!(!r.tty);
}

use super::*;

fn parse(raw: &str) -> io::Result<Response> {
    read_response(&mut raw.as_bytes())
}

#[test]
fn encodes_a_put_with_a_json_body() {
    let req = String::from_utf8(encode_request("PUT", "/actions", Some(br#"{"a":1}"#))).expect("utf8");
    assert_eq!(
        req,
        "PUT /actions HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\
         Content-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}"
    );
}

#[test]
fn encodes_a_get_without_body_headers() {
    let req = String::from_utf8(encode_request("GET", "/", None)).expect("utf8");
    assert_eq!(req, "GET / HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\r\n");
}

#[test]
fn parses_204_without_content_length() {
    let r = parse("HTTP/1.1 204 No Content\r\nServer: Firecracker API\r\n\r\n").expect("parse");
    assert_eq!((r.status, r.reason.as_str(), r.body.len()), (204, "No Content", 0));
    assert_eq!(r.header("SERVER"), Some("Firecracker API"));
    assert!(r.is_success());
}

#[test]
fn parses_a_fault_body_and_stops_at_its_length() {
    let body = r#"{"fault_message":"bad"}"#;
    let raw = format!("HTTP/1.1 400 Bad Request\r\nContent-Length: {}\r\n\r\n{body}TRAILING", body.len());
    let r = parse(&raw).expect("parse");
    assert_eq!(r.status, 400);
    assert_eq!(r.body, body.as_bytes());
    assert!(!r.is_success());
}

#[test]
fn rejects_garbage_truncation_and_oversize() {
    assert!(parse("SSH-2.0-OpenSSH\r\n\r\n").is_err());
    assert!(parse("HTTP/1.1 abc OK\r\n\r\n").is_err());
    assert_eq!(parse("HTTP/1.1 200 OK\r\nContent-Le").expect_err("eof").kind(), io::ErrorKind::UnexpectedEof);
    assert!(parse("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort").is_err());
    assert!(parse(&format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", MAX_BODY + 1)).is_err());
    assert!(parse(&format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD))).is_err());
    assert!(parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
}

#[test]
fn request_round_trip_over_a_unix_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = super::super::fake_api::FakeApi::start(dir.path(), |_| (200, r#"{"ok":true}"#.into()));
    let r = request(&fake.socket, "PUT", "/x", Some(b"{}"), Duration::from_secs(2)).expect("request");
    assert_eq!((r.status, r.body.as_slice()), (200, br#"{"ok":true}"#.as_slice()));
    let got = fake.requests();
    assert_eq!((got[0].method.as_str(), got[0].path.as_str(), got[0].body.as_str()), ("PUT", "/x", "{}"));
}

#[test]
fn a_silent_server_times_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("silent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
    let err = request(&sock, "GET", "/", None, Duration::from_millis(50)).expect_err("timeout");
    assert!(matches!(err.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut), "{err:?}");
}

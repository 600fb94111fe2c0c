use super::{from_body, StreamUsage, Usage};

#[test]
fn body_usage_both_shapes() {
    let openai = br#"{"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19}}"#;
    assert_eq!(from_body(openai), Some(Usage { input_tokens: 12, output_tokens: 7, cache_write_tokens: 0 }));
    let anthropic = br#"{"usage":{"input_tokens":20,"cache_read_input_tokens":5,"output_tokens":3}}"#;
    assert_eq!(from_body(anthropic), Some(Usage { input_tokens: 25, output_tokens: 3, cache_write_tokens: 0 }));
    assert_eq!(from_body(br#"{"usage":null}"#), None);
    assert_eq!(from_body(b"not json"), None);
}

#[test]
fn openai_stream_usage_split_across_chunks() {
    let stream = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n\
                  data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4}}\n\ndata: [DONE]\n\n";
    let mut s = StreamUsage::default();
    for chunk in stream.as_bytes().chunks(7) {
        s.feed(chunk);
    }
    assert_eq!(s.finish(), Some(Usage { input_tokens: 9, output_tokens: 4, cache_write_tokens: 0 }));
}

#[test]
fn anthropic_stream_usage() {
    let stream = "event: message_start\r\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\r\n\r\n\
                  event: content_block_delta\r\ndata: {\"type\":\"content_block_delta\"}\r\n\r\n\
                  event: message_delta\r\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\r\n\r\n";
    let mut s = StreamUsage::default();
    s.feed(stream.as_bytes());
    assert_eq!(s.finish(), Some(Usage { input_tokens: 25, output_tokens: 15, cache_write_tokens: 0 }));
}

#[test]
fn stream_without_usage_reports_none() {
    let mut s = StreamUsage::default();
    s.feed(
        b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
    );
    assert_eq!(s.finish(), None);
}

#[test]
fn anthropic_cache_writes_are_counted_apart() {
    let body = br#"{"usage":{"input_tokens":20,"cache_creation_input_tokens":1000,"cache_read_input_tokens":5,"output_tokens":3}}"#;
    assert_eq!(from_body(body), Some(Usage { input_tokens: 1025, output_tokens: 3, cache_write_tokens: 1000 }));
    let stream = "data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":4,\"cache_creation_input_tokens\":600,\"output_tokens\":1}}}\n\n\
                  data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":9}}\n\n";
    let mut s = StreamUsage::default();
    s.feed(stream.as_bytes());
    assert_eq!(s.finish(), Some(Usage { input_tokens: 604, output_tokens: 9, cache_write_tokens: 600 }));
}

#[test]
fn cache_writes_cost_their_own_price() {
    let price = crate::config::Price { input_per_mtok: 3.0, output_per_mtok: 15.0, cache_write_per_mtok: None };
    let u = Usage { input_tokens: 1_000_000, output_tokens: 0, cache_write_tokens: 400_000 };
    // 600k plain at $3, 400k written at twice that.
    assert!((price.cost(&u) - (1.8 + 2.4)).abs() < 1e-9, "{}", price.cost(&u));
    let priced = crate::config::Price { cache_write_per_mtok: Some(3.75), ..price };
    assert!((priced.cost(&u) - (1.8 + 1.5)).abs() < 1e-9, "{}", priced.cost(&u));
    // A count above the input (a provider's odd report) never makes input cheaper.
    let odd = Usage { input_tokens: 10, output_tokens: 0, cache_write_tokens: 99 };
    assert!((price.cost(&odd) - 10.0 * 6.0 / 1e6).abs() < 1e-12);
}

/// However the stream is cut into chunks, the same usage is read.
#[test]
fn stream_usage_is_the_same_however_the_stream_is_cut() {
    let stream = "event: message_start\r\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\r\n\r\n\
                  data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\n\ndata: [DONE]\n";
    let want = Some(Usage { input_tokens: 25, output_tokens: 15, cache_write_tokens: 0 });
    for i in 0..=stream.len() {
        for j in i..=stream.len() {
            let mut s = StreamUsage::default();
            for part in [&stream[..i], &stream[i..j], &stream[j..]] {
                s.feed(part.as_bytes());
            }
            assert_eq!(s.finish(), want, "cut at {i},{j}");
        }
    }
}

/// A usage line of `len` bytes (newline not counted).
fn usage_line(len: usize) -> Vec<u8> {
    let head = "data: {\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2},\"pad\":\"";
    let mut line = head.as_bytes().to_vec();
    line.resize(len - 2, b'x');
    line.extend_from_slice(b"\"}");
    line
}

/// A line up to MAX_LINE bytes is read, in one chunk or many; a longer one
/// is passed over whole, and the line after it is read again.
#[test]
fn an_overlong_line_is_passed_over_and_the_next_is_read() {
    let three_two = Some(Usage { input_tokens: 3, output_tokens: 2, cache_write_tokens: 0 });
    for (len, want) in [(super::MAX_LINE, three_two), (super::MAX_LINE + 1, None)] {
        let mut line = usage_line(len);
        line.push(b'\n');
        for piece in [line.len(), 4096, 1000] {
            let mut s = StreamUsage::default();
            for chunk in line.chunks(piece) {
                s.feed(chunk);
            }
            assert_eq!(s.finish(), want, "a line of {len} bytes in chunks of {piece}");
        }
    }
    let mut s = StreamUsage::default();
    let mut long = usage_line(super::MAX_LINE + 10);
    long.extend_from_slice(b"\ndata: {\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4}}\n");
    for chunk in long.chunks(100_000) {
        s.feed(chunk);
    }
    assert_eq!(s.finish(), Some(Usage { input_tokens: 9, output_tokens: 4, cache_write_tokens: 0 }));
}

/// A data line that names usage but cannot be read unambiguously (a member
/// twice, an array) leaves the stream without trusted usage, even after a
/// good usage event: the request is charged its reservation, never less.
#[test]
fn an_ambiguous_usage_event_is_not_trusted() {
    let good = b"data: {\"usage\":{\"prompt_tokens\":90,\"completion_tokens\":40}}\n".as_slice();
    let twice =
        b"data: {\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4},\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n";
    let array = b"data: [null,{\"prompt_tokens\":1,\"completion_tokens\":1}]\n";
    let named = b"data: [\"usage\", {\"prompt_tokens\":1,\"completion_tokens\":1}]\n";
    for bad in [twice.as_slice(), array, named] {
        let mut s = StreamUsage::default();
        s.feed(good);
        s.feed(bad);
        s.feed(b"data: [DONE]\n");
        let text = String::from_utf8_lossy(bad);
        // An array without the word is no usage event at all: the good one stands.
        let want = if text.contains("usage") { None } else { Some(Usage { input_tokens: 90, output_tokens: 40, cache_write_tokens: 0 }) };
        assert_eq!(s.finish(), want, "{text}");
    }
}

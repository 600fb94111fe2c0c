use super::{from_body, StreamUsage, Usage};

#[test]
fn body_usage_both_shapes() {
    let openai = br#"{"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19}}"#;
    assert_eq!(from_body(openai), Some(Usage { input_tokens: 12, output_tokens: 7 }));
    let anthropic = br#"{"usage":{"input_tokens":20,"cache_read_input_tokens":5,"output_tokens":3}}"#;
    assert_eq!(from_body(anthropic), Some(Usage { input_tokens: 25, output_tokens: 3 }));
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
    assert_eq!(s.finish(), Some(Usage { input_tokens: 9, output_tokens: 4 }));
}

#[test]
fn anthropic_stream_usage() {
    let stream = "event: message_start\r\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\r\n\r\n\
                  event: content_block_delta\r\ndata: {\"type\":\"content_block_delta\"}\r\n\r\n\
                  event: message_delta\r\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\r\n\r\n";
    let mut s = StreamUsage::default();
    s.feed(stream.as_bytes());
    assert_eq!(s.finish(), Some(Usage { input_tokens: 25, output_tokens: 15 }));
}

#[test]
fn stream_without_usage_reports_none() {
    let mut s = StreamUsage::default();
    s.feed(
        b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
    );
    assert_eq!(s.finish(), None);
}

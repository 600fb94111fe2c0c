//! The host's decoder of guest channel frames on arbitrary bytes (what a
//! compromised guest can send): never a panic, never a frame over the
//! limit, and a decoded message re-encodes to a frame that decodes to it.
#![no_main]

use clawkeep_guest::proto::{decode, Message, MAX_FRAME};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(Some((frame, used))) = decode(data) else { return };
    assert!(used <= data.len() && used - 4 <= MAX_FRAME);
    let stream = frame.stream;
    if let Ok(msg) = Message::from_frame(frame) {
        let again = msg.clone().into_frame(stream).encode().expect("a decoded message re-encodes");
        let (back, n) = decode(&again).expect("re-encoded frame decodes").expect("complete frame");
        assert_eq!(n, again.len());
        assert_eq!(Message::from_frame(back).expect("round trip"), msg);
    }
});

//! The gate's frame decoder on arbitrary bytes: it must never panic, never
//! accept a frame over the limit, and re-encoding what it decoded must give
//! a frame that decodes to the same message.
#![no_main]

use clawkeep_shim::{frame, Reply, Request, MAX_FRAME};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((req, used)) = frame::decode::<Request>(data) {
        assert!(used <= data.len() && used - 4 <= MAX_FRAME);
        let again = frame::encode(&req);
        let (back, n): (Request, usize) = frame::decode(&again).expect("re-encoded request decodes");
        assert_eq!((back, n), (req, again.len()));
    }
    if let Ok((reply, _)) = frame::decode::<Reply>(data) {
        let again = frame::encode(&reply);
        assert_eq!(frame::decode::<Reply>(&again).expect("re-encoded reply decodes").0, reply);
    }
});

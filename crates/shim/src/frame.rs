//! Length-prefixed JSON frames.

use serde::{de::DeserializeOwned, Serialize};
use std::fmt;

/// Largest frame body accepted, in bytes.
pub const MAX_FRAME: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes than the frame needs: read more.
    Incomplete,
    TooLarge {
        len: usize,
    },
    Malformed {
        message: String,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Incomplete => write!(f, "incomplete frame"),
            FrameError::TooLarge { len } => write!(f, "frame of {len} bytes is over the {MAX_FRAME}-byte limit"),
            FrameError::Malformed { message } => write!(f, "malformed frame: {message}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Encodes one frame.
pub fn encode(msg: &impl Serialize) -> Vec<u8> {
    let body = serde_json::to_vec(msg).unwrap_or_default();
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Decodes the first frame in `buf`: the message and the bytes it used.
pub fn decode<T: DeserializeOwned>(buf: &[u8]) -> Result<(T, usize), FrameError> {
    let Some(head) = buf.get(..4) else { return Err(FrameError::Incomplete) };
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge { len });
    }
    let Some(body) = buf.get(4..4 + len) else { return Err(FrameError::Incomplete) };
    let msg = serde_json::from_slice(body).map_err(|e| FrameError::Malformed { message: e.to_string() })?;
    Ok((msg, 4 + len))
}

/// The length a buffer must reach before `decode` can succeed, once the
/// 4-byte header is there (`None` before that).
pub fn needed(buf: &[u8]) -> Option<usize> {
    let head = buf.get(..4)?;
    Some(4 + u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Reply, Request};

    #[test]
    fn roundtrip() {
        let r = Request::Exec {
            version: 1,
            command: "git".into(),
            args: vec!["status".into()],
            cwd: "/workspace".into(),
            env: vec![],
            tty: false,
        };
        let bytes = encode(&r);
        let (back, used): (Request, usize) = decode(&bytes).unwrap();
        assert_eq!((back, used), (r, bytes.len()));
        let mut two = encode(&Reply::Started);
        two.extend(encode(&Reply::Exit { code: 3 }));
        let (first, n): (Reply, usize) = decode(&two).unwrap();
        assert_eq!(first, Reply::Started);
        assert_eq!(decode::<Reply>(&two[n..]).unwrap().0, Reply::Exit { code: 3 });
    }

    #[test]
    fn limits_and_garbage() {
        assert_eq!(decode::<Reply>(&[0, 0]), Err(FrameError::Incomplete));
        assert_eq!(decode::<Reply>(&[0, 0, 0, 5, b'{']), Err(FrameError::Incomplete));
        let big = ((MAX_FRAME + 1) as u32).to_be_bytes();
        assert!(matches!(decode::<Reply>(&big), Err(FrameError::TooLarge { .. })));
        let mut bad = 3u32.to_be_bytes().to_vec();
        bad.extend_from_slice(b"{x}");
        assert!(matches!(decode::<Reply>(&bad), Err(FrameError::Malformed { .. })));
        let unknown = encode(
            &serde_json::json!({"type": "exec", "version": 1, "command": "x", "args": [], "cwd": "/", "env": [], "tty": false, "extra": 1}),
        );
        assert!(matches!(decode::<Request>(&unknown), Err(FrameError::Malformed { .. })));
    }
}

//! The host end of a guest's `gate` relay stream.
//!
//! A shim in the guest speaks the gate protocol (crates/shim) to pid 1,
//! which forwards its frames over the channel as bytes; its stdio stays in
//! the guest. Here each stream becomes a connection to the agent's gate
//! socket whose first frame carries, three times, one end of a fresh
//! socket pair (a placeholder: the gate only hands the descriptors to its
//! executor). [`GateStreams`] maps the placeholder's inode to the guest
//! stream, so the VM executor knows which shim an approved job is for.
//! Everything after the first frame is relayed verbatim both ways.

use clawkeep_shim::{fdpass, frame};
use std::collections::HashMap;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Placeholder inode → guest relay stream.
#[derive(Debug, Clone, Default)]
pub struct GateStreams(Arc<Mutex<HashMap<u64, u32>>>);

impl GateStreams {
    pub fn insert(&self, ino: u64, stream: u32) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(ino, stream);
    }

    /// The guest stream whose placeholder `fd` is (one of its copies).
    pub fn stream_of(&self, fd: BorrowedFd<'_>) -> Option<u32> {
        let ino = inode(fd)?;
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(&ino).copied()
    }

    pub fn remove_stream(&self, stream: u32) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, s| *s != stream);
    }
}

/// The inode of an open descriptor (sockfs inodes are never reused while
/// the socket lives).
pub fn inode(fd: BorrowedFd<'_>) -> Option<u64> {
    // SAFETY: stat is plain data; fstat fills it for a valid fd.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is borrowed, so open; st is valid for writing.
    (unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } == 0).then_some(st.st_ino)
}

/// The most the guest sends in one Data frame (the channel's payload limit).
const MAX_DATA: usize = clawkeep_guest::proto::MAX_PAYLOAD;

/// One guest `gate` stream on the host.
#[derive(Debug)]
pub struct GateConn {
    /// The connection to the agent's gate socket.
    pub sock: UnixStream,
    /// The shim's first frame, until it is whole.
    first: Option<Vec<u8>>,
    /// Our end of the placeholder pair, kept while the stream lives.
    _near: Option<UnixStream>,
}

impl GateConn {
    pub fn connect(gate_socket: &Path) -> std::io::Result<GateConn> {
        Ok(GateConn { sock: UnixStream::connect(gate_socket)?, first: Some(Vec::new()), _near: None })
    }

    /// Bytes from the guest's shim. The first whole frame goes out with
    /// the placeholder descriptors; a first frame over the limit fails.
    pub fn data(&mut self, d: &[u8], stream: u32, map: &GateStreams) -> std::io::Result<()> {
        let Some(buf) = &mut self.first else { return self.sock.write_all(d) };
        if buf.len() + d.len() > frame::MAX_FRAME + 4 + MAX_DATA {
            self.first = Some(Vec::new());
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "the shim's first frame is over the limit"));
        }
        buf.extend_from_slice(d);
        let Some(need) = frame::needed(buf) else { return Ok(()) };
        if need > frame::MAX_FRAME + 4 {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "the shim's first frame is over the limit"));
        }
        if buf.len() < need {
            return Ok(());
        }
        let buf = self.first.take().unwrap_or_default();
        let (near, far) = UnixStream::pair()?;
        let ino = inode(far.as_fd()).ok_or_else(std::io::Error::last_os_error)?;
        map.insert(ino, stream);
        let raw = far.as_raw_fd();
        fdpass::send_with_fds(self.sock.as_raw_fd(), &buf[..need], &[raw, raw, raw])?;
        self._near = Some(near);
        if buf.len() > need {
            self.sock.write_all(&buf[need..])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::fd::OwnedFd;

    #[test]
    fn the_first_frame_carries_placeholders_the_map_finds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gate.sock");
        let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let map = GateStreams::default();
        let mut c = GateConn::connect(&path).unwrap();
        let (gate, _) = l.accept().unwrap();
        let req = frame::encode(&serde_json::json!({"type": "signal", "signal": 2}));
        // In pieces, as the channel may deliver it, plus a second frame.
        c.data(&req[..3], 7, &map).unwrap();
        let mut rest = req[3..].to_vec();
        rest.extend_from_slice(&req);
        c.data(&rest, 7, &map).unwrap();
        let mut buf = vec![0u8; 4096];
        let (n, fds) = fdpass::recv_with_fds(gate.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], &req[..], "the first frame alone carries the descriptors");
        let fds: [OwnedFd; 3] = fds.try_into().unwrap();
        assert_eq!(map.stream_of(fds[0].as_fd()), Some(7));
        assert_eq!(map.stream_of(fds[2].as_fd()), Some(7));
        let (n, more) = fdpass::recv_with_fds(gate.as_raw_fd(), &mut buf).unwrap();
        assert_eq!((&buf[..n], more.len()), (&req[..], 0));
        // Another stream's placeholder is another inode.
        let mut c2 = GateConn::connect(&path).unwrap();
        let (gate2, _) = l.accept().unwrap();
        c2.data(&req, 9, &map).unwrap();
        let (_, fds2) = fdpass::recv_with_fds(gate2.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(map.stream_of(fds2[1].as_fd()), Some(9));
        map.remove_stream(7);
        assert_eq!(map.stream_of(fds[0].as_fd()), None);
        let (a, _b) = UnixStream::pair().unwrap();
        assert_eq!(map.stream_of(a.as_fd()), None);
    }

    /// A first frame over the limit is refused, and what follows it is not
    /// piled up: the host keeps at most one frame's worth per stream.
    #[test]
    fn an_oversized_first_frame_is_refused_and_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gate.sock");
        let _l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let map = GateStreams::default();
        let mut c = GateConn::connect(&path).unwrap();
        assert!(c.data(&[0xff; 4], 3, &map).is_err());
        let chunk = vec![b'x'; MAX_DATA];
        for _ in 0..40 {
            let _ = c.data(&chunk, 3, &map);
            assert!(c.first.as_ref().map_or(0, Vec::len) <= frame::MAX_FRAME + 4 + MAX_DATA);
        }
        // A frame with no length limit in its header, sent a piece at a time.
        let mut c = GateConn::connect(&path).unwrap();
        let mut refused = false;
        for _ in 0..40 {
            refused |= c.data(&chunk, 4, &map).is_err();
        }
        assert!(refused, "{} bytes held", c.first.as_ref().map_or(0, Vec::len));
    }
}

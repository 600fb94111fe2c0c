//! A VMM's console output, kept to a bounded size on the host.
//!
//! The guest's serial console comes out of the VMM (QEMU's ttyS0,
//! Firecracker's stdout). A file the VMM writes itself grows for as long
//! as the guest writes, and nothing limits how long or how much a guest
//! writes: a loop in it could fill the host's disk. So the VMM writes into
//! a pipe, and a thread here copies the pipe into the log. When the log is
//! full it is moved to `<log>.1` (replacing the one before) and a new one
//! is started: the host keeps at most twice [`MAX_BYTES`], always the
//! latest output (what an error message quotes), and the guest is never
//! held up by it.

use crate::sys;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver};
use std::thread::JoinHandle;
use std::time::Duration;

/// The most one console log file holds.
pub const MAX_BYTES: u64 = 4 << 20;

/// Where a full log is moved: `<log>.1`.
pub fn rotated(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_os_string();
    name.push(".1");
    PathBuf::from(name)
}

/// How long [`ConsoleLog::finish`] waits for the copy to end.
const FINISH_LIMIT: Duration = Duration::from_secs(2);

/// The thread that copies one VMM's console into its log.
#[derive(Debug)]
pub struct ConsoleLog {
    thread: Option<(JoinHandle<()>, Receiver<()>)>,
}

impl ConsoleLog {
    /// Creates `log` (0600, empty) and starts copying into it; returns the
    /// pipe's write end, for the VMM alone (it is close-on-exec here, so
    /// give it to the VMM as a standard stream).
    pub fn start(log: &Path, max: u64) -> io::Result<(OwnedFd, ConsoleLog)> {
        let file = create(log)?;
        let (r, w) = sys::pipe()?;
        let path = log.to_path_buf();
        let (done, ended) = mpsc::channel();
        let thread = std::thread::Builder::new().name("clawkeep-console".into()).spawn(move || {
            copy(r, file, &path, max);
            let _ = done.send(());
        })?;
        Ok((w, ConsoleLog { thread: Some((thread, ended)) }))
    }

    /// Waits until all the VMM wrote is in the log. Call it once the VMM
    /// is gone (reaped): the pipe then ends, and so does the copy. If
    /// something else still holds the pipe, it waits [`FINISH_LIMIT`] at
    /// most and leaves the copy running.
    pub fn finish(&mut self) {
        if let Some((thread, ended)) = self.thread.take() {
            if ended.recv_timeout(FINISH_LIMIT).is_ok() {
                let _ = thread.join();
            }
        }
    }
}

fn create(log: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(log)
}

/// Copies `from` into `log` until the pipe ends, moving a log that would
/// pass `max` bytes aside first. If the log cannot be moved or made again
/// (its directory is gone), the rest is read and dropped: never written
/// past `max`, and the VMM never blocks on a full pipe.
fn copy(from: OwnedFd, mut file: File, log: &Path, max: u64) {
    let mut from = File::from(from);
    // No read is larger than the log may be, so a fresh log holds it.
    let mut buf = vec![0u8; max.clamp(1, 64 << 10) as usize];
    let mut written = 0u64;
    let mut dropping = false;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        if dropping {
            continue;
        }
        if written + n as u64 > max {
            match fs::rename(log, rotated(log)).and_then(|()| create(log)) {
                Ok(f) => {
                    file = f;
                    written = 0;
                }
                Err(_) => {
                    dropping = true;
                    continue;
                }
            }
        }
        if file.write_all(&buf[..n]).is_err() {
            dropping = true;
            continue;
        }
        written += n as u64;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// Writes `chunks` into a console pipe, then closes it, as a VMM's
    /// exit does.
    fn feed(w: OwnedFd, chunks: &[&[u8]]) {
        let mut w = File::from(w);
        for c in chunks {
            w.write_all(c).unwrap();
        }
    }

    #[test]
    fn a_flood_keeps_two_bounded_files_and_the_latest_output() {
        let t = tempfile::tempdir().unwrap();
        let log = t.path().join("console.log");
        let max = 1000;
        let (w, mut c) = ConsoleLog::start(&log, max).unwrap();
        // 50 times what one file may hold, line by line, numbered.
        let lines: Vec<String> = (0..5000).map(|i| format!("line {i:05}\n")).collect();
        let all = lines.concat();
        let writer = std::thread::spawn(move || {
            let refs: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
            feed(w, &refs);
        });
        writer.join().unwrap();
        c.finish();
        let (now, before) = (fs::read_to_string(&log).unwrap(), fs::read_to_string(rotated(&log)).unwrap());
        assert!(now.len() as u64 <= max && before.len() as u64 <= max, "{} and {} bytes", now.len(), before.len());
        // The latest output is kept (a rotation may fall inside its line,
        // which then starts in the rotated file).
        assert!(format!("{before}{now}").ends_with("line 04999\n"), "the latest output is kept: {before:?} {now:?}");
        // The two files are the stream's last bytes, in order, with no gap.
        assert!(before.len() as u64 + now.len() as u64 > max, "{} and {} bytes", before.len(), now.len());
        assert!(all.ends_with(&format!("{before}{now}")), "the rotated log is not what came just before");
        assert_eq!(fs::metadata(&log).unwrap().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(rotated(&log)).unwrap().mode() & 0o777, 0o600);
        // Nothing else appeared beside them.
        assert_eq!(fs::read_dir(t.path()).unwrap().count(), 2);
    }

    #[test]
    fn a_short_console_is_copied_whole() {
        let t = tempfile::tempdir().unwrap();
        let log = t.path().join("console.log");
        let (w, mut c) = ConsoleLog::start(&log, MAX_BYTES).unwrap();
        feed(w, &[b"booting\n", b"clawkeep-guest: fatal: root\n"]);
        c.finish();
        assert_eq!(fs::read_to_string(&log).unwrap(), "booting\nclawkeep-guest: fatal: root\n");
        assert!(!rotated(&log).exists());
    }

    /// A pipe someone else still holds does not hold the caller for ever.
    #[test]
    fn finish_is_bounded_when_the_pipe_stays_open() {
        let t = tempfile::tempdir().unwrap();
        let log = t.path().join("console.log");
        let (w, mut c) = ConsoleLog::start(&log, MAX_BYTES).unwrap();
        let started = std::time::Instant::now();
        c.finish();
        let took = started.elapsed();
        assert!(took >= FINISH_LIMIT && took < FINISH_LIMIT * 3, "took {took:?}");
        drop(w);
    }

    /// Once the log's directory is gone (the run is being removed), the
    /// console is still drained, so the VMM never blocks, and nothing is
    /// written anywhere.
    #[test]
    fn a_log_that_cannot_be_moved_is_dropped_not_grown() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("run");
        fs::create_dir(&dir).unwrap();
        let log = dir.join("console.log");
        let (w, mut c) = ConsoleLog::start(&log, 100).unwrap();
        let mut w = File::from(w);
        w.write_all(&[b'a'; 60]).unwrap();
        // The copy has the first write before the directory goes.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while fs::metadata(&log).map(|m| m.len()).unwrap_or(0) < 60 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let held = File::open(&log).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        // Far more than a pipe's buffer: a copy that stopped reading would
        // block this write for ever.
        w.write_all(&vec![b'b'; 1 << 20]).unwrap();
        drop(w);
        c.finish();
        assert_eq!(held.metadata().unwrap().len(), 60, "the removed log did not grow");
        assert!(!dir.exists());
    }
}

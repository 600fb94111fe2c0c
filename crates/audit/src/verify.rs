//! Checking a whole log, line by line, in constant memory (plus one line).
//!
//! What a clean report proves: every line is a JSON object whose `seq` is its
//! 0-based index and whose `prev` is the SHA-256 of the line before it, and
//! the file ends with `\n`. So an edit, insertion, deletion or reordering of
//! any line but the last is detected, at the first line where the chain
//! breaks:
//!
//! - an edit that keeps line N a well-formed record is reported at line N+1,
//!   whose `prev` no longer matches line N; an edit that breaks JSON or the
//!   header is reported at line N itself;
//! - a deleted or moved line is reported at the first line whose `seq` is
//!   out of place;
//! - a cut-off last line is reported as truncated.
//!
//! What it cannot prove alone: that the last line is unedited, that lines
//! were not removed from the end, or that the whole chain was not
//! rewritten. For that a report names its [`Head`] (the last line and its
//! hash): kept elsewhere, it is an [`Anchor`] a later check holds the log
//! to — the line must still be there, with the same hash, and so must
//! every line before it (each line's hash covers its predecessor's).

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::error::AuditError;
use crate::line::{hash_line, GENESIS_PREV};
use crate::lock::Flock;

/// The outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Lines in the file, counting a final line without `\n` and any lines
    /// after the first broken one.
    pub lines: u64,
    /// The first line that fails a check; `None` means the chain is intact.
    pub first_broken: Option<Broken>,
    /// The last line of an intact, non-empty chain.
    pub head: Option<Head>,
}

/// A line of the log and the SHA-256 of its text (without `\n`): what a
/// later check can be anchored to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Head {
    /// 1-based.
    pub line: u64,
    pub sha256: String,
}

/// A [`Head`] recorded earlier: `LINE:SHA256` on the command line.
pub type Anchor = Head;

impl std::str::FromStr for Head {
    type Err = String;

    fn from_str(s: &str) -> Result<Head, String> {
        let bad = || format!("{s:?} is not an anchor: expected LINE:SHA256, as `audit verify` prints after `head`");
        let (line, hash) = s.split_once(':').ok_or_else(bad)?;
        let line: u64 = line.parse().ok().filter(|n| *n > 0).ok_or_else(bad)?;
        let hash = hash.to_ascii_lowercase();
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        Ok(Head { line, sha256: hash })
    }
}

impl std::fmt::Display for Head {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.line, self.sha256)
    }
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.first_broken.is_none()
    }
}

/// A line that failed verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Broken {
    /// 1-based line number, as an editor shows it.
    pub line: u64,
    /// What is wrong with it, e.g. "prev hash does not match line 2".
    pub reason: String,
}

/// Verifies the log at `path`. Appends that start while this runs are not
/// read: the check covers the file as it was when it began.
pub fn verify(path: &Path) -> Result<VerifyReport, AuditError> {
    verify_anchored(path, &[])
}

/// As [`verify`], and each anchor's line must still be in the log with the
/// hash recorded: a log cut short, or rewritten up to or past an anchor,
/// fails here even when its chain is consistent.
pub fn verify_anchored(path: &Path, anchors: &[Anchor]) -> Result<VerifyReport, AuditError> {
    let file = open(path)?;
    let read_error = |source| AuditError::Read { path: path.to_path_buf(), source };
    // Writers hold LOCK_EX for the whole write, so under LOCK_SH the length
    // ends on a line boundary unless a writer crashed; reading only up to it
    // keeps an in-flight append from looking like a truncated line.
    let len = {
        let _shared = Flock::shared(&file).map_err(|source| AuditError::Lock { path: path.to_path_buf(), source })?;
        file.metadata().map_err(read_error)?.len()
    };
    check_lines(BufReader::new(file.take(len)), anchors).map_err(read_error)
}

fn open(path: &Path) -> Result<File, AuditError> {
    // O_NONBLOCK: opening a FIFO planted at the path must not hang the check;
    // it has no effect on regular files.
    let file = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => AuditError::NotFound { path: path.to_path_buf() },
        _ => AuditError::Open { path: path.to_path_buf(), source },
    })?;
    let meta = file.metadata().map_err(|source| AuditError::Open { path: path.to_path_buf(), source })?;
    if !meta.is_file() {
        return Err(AuditError::NotRegularFile { path: path.to_path_buf() });
    }
    Ok(file)
}

fn check_lines(mut reader: impl BufRead, anchors: &[Anchor]) -> io::Result<VerifyReport> {
    let mut buf = Vec::new();
    let mut lines = 0u64;
    let mut prev = GENESIS_PREV.to_owned();
    let mut first_broken = None;
    let mut anchors: Vec<&Anchor> = anchors.iter().collect();
    anchors.sort_by_key(|a| a.line);
    let mut pending = anchors.into_iter().peekable();
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        let index = lines;
        lines += 1;
        if first_broken.is_some() {
            continue;
        }
        // `read_until` stops without `\n` only at end of file.
        let complete = buf.last() == Some(&b'\n');
        if complete {
            buf.pop();
        }
        match check_line(&buf, complete, index, &prev) {
            Ok(()) => prev = hash_line(&buf),
            Err(reason) => first_broken = Some(Broken { line: index + 1, reason }),
        }
        while let Some(a) = pending.next_if(|a| a.line == lines) {
            if first_broken.is_none() && a.sha256 != prev {
                let reason = format!("differs from the anchor {a}: the log was rewritten up to here");
                first_broken = Some(Broken { line: a.line, reason });
            }
        }
    }
    if let (None, Some(a)) = (&first_broken, pending.next()) {
        let reason = format!("missing: the log ends at line {lines}, before the anchor {a}; lines were removed from its end");
        first_broken = Some(Broken { line: a.line, reason });
    }
    let head = (first_broken.is_none() && lines > 0).then_some(Head { line: lines, sha256: prev });
    Ok(VerifyReport { lines, first_broken, head })
}

/// Checks line `index` (0-based) against the hash of the line before it.
fn check_line(line: &[u8], complete: bool, index: u64, prev: &str) -> Result<(), String> {
    if !complete {
        return Err("truncated: no trailing newline".to_owned());
    }
    let value: Value = serde_json::from_slice(line).map_err(|e| format!("not valid JSON ({e})"))?;
    let object = value.as_object().ok_or_else(|| "not a JSON object".to_owned())?;
    match object.get("seq").map(Value::as_u64) {
        Some(Some(seq)) if seq == index => {}
        Some(Some(seq)) => return Err(format!("seq is {seq}, expected {index}")),
        _ => return Err("missing or non-integer seq".to_owned()),
    }
    match object.get("prev").and_then(Value::as_str) {
        Some(p) if p == prev => {}
        Some(_) if index == 0 => return Err("prev of the first line is not all zeros".to_owned()),
        Some(_) => return Err(format!("prev hash does not match line {index}")),
        None => return Err("missing prev".to_owned()),
    }
    for key in ["ts", "kind"] {
        if !object.get(key).is_some_and(Value::is_string) {
            return Err(format!("missing or non-string {key}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::line::encode;
    use serde_json::Map;

    /// A valid log of `n` lines, as raw lines without `\n`.
    fn chain(n: u64) -> Vec<String> {
        let mut prev = GENESIS_PREV.to_owned();
        (0..n)
            .map(|seq| {
                let line = encode(seq, "t", &prev, "k", &Map::new());
                prev = hash_line(line.as_bytes());
                line
            })
            .collect()
    }

    fn check(text: &str) -> VerifyReport {
        check_lines(text.as_bytes(), &[]).expect("in-memory read")
    }

    fn broken(line: u64, reason: &str) -> Option<Broken> {
        Some(Broken { line, reason: reason.to_owned() })
    }

    #[test]
    fn empty_and_intact_logs_pass() {
        assert_eq!(check(""), VerifyReport { lines: 0, first_broken: None, head: None });
        let text = chain(3).join("\n") + "\n";
        let report = check(&text);
        assert!(report.is_ok());
        assert_eq!(report.lines, 3);
    }

    #[test]
    fn names_each_kind_of_damage() {
        let lines = chain(2);
        let cases = [
            (format!("{}\n{}", lines[0], lines[1]), broken(2, "truncated: no trailing newline")),
            ("[1]\n".to_owned(), broken(1, "not a JSON object")),
            ("{\"ts\":\"t\"}\n".to_owned(), broken(1, "missing or non-integer seq")),
            ("{\"seq\":0,\"ts\":\"t\",\"kind\":\"k\"}\n".to_owned(), broken(1, "missing prev")),
            (
                format!("{{\"seq\":0,\"prev\":\"{}\",\"ts\":\"t\",\"kind\":\"k\"}}\n", "1".repeat(64)),
                broken(1, "prev of the first line is not all zeros"),
            ),
            (format!("{{\"seq\":0,\"prev\":\"{GENESIS_PREV}\",\"ts\":\"t\"}}\n"), broken(1, "missing or non-string kind")),
        ];
        for (text, expected) in cases {
            assert_eq!(check(&text).first_broken, expected, "{text}");
        }
    }

    #[test]
    fn blank_line_is_not_json() {
        let b = check(&format!("{}\n\n", chain(1)[0])).first_broken.expect("blank line detected");
        assert_eq!(b.line, 2);
        assert!(b.reason.starts_with("not valid JSON"), "{}", b.reason);
    }

    #[test]
    fn counts_lines_after_the_break() {
        let mut lines = chain(5);
        lines[1] = "garbage".to_owned();
        let report = check(&(lines.join("\n") + "\n"));
        assert_eq!(report.lines, 5);
        assert_eq!(report.first_broken.map(|b| b.line), Some(2));
    }

    #[test]
    fn anchors_catch_a_cut_and_a_rewritten_chain() {
        let lines = chain(4);
        let text = lines.join("\n") + "\n";
        let head = check(&text).head.expect("an intact log has a head");
        assert_eq!(head, Head { line: 4, sha256: hash_line(lines[3].as_bytes()) });
        let at2 = Head { line: 2, sha256: hash_line(lines[1].as_bytes()) };
        let anchored = |t: &str, a: &[Anchor]| check_lines(t.as_bytes(), a).unwrap();
        assert!(anchored(&text, &[at2.clone(), head.clone()]).is_ok());
        // The last line removed: a consistent chain, but the anchor's line is gone.
        let cut = lines[..3].join("\n") + "\n";
        assert!(check(&cut).is_ok());
        let r = anchored(&cut, std::slice::from_ref(&head));
        assert_eq!(r.first_broken.as_ref().map(|b| b.line), Some(4), "{r:?}");
        assert!(r.first_broken.unwrap().reason.contains("ends at line 3"));
        assert_eq!(r.head, None);
        // The whole chain rewritten consistently from line 2 on.
        let mut prev = hash_line(lines[0].as_bytes());
        let mut forged = vec![lines[0].clone()];
        for seq in 1..4 {
            let line = encode(seq, "t", &prev, "forged", &Map::new());
            prev = hash_line(line.as_bytes());
            forged.push(line);
        }
        let forged = forged.join("\n") + "\n";
        assert!(check(&forged).is_ok());
        let r = anchored(&forged, &[head.clone(), at2]);
        assert_eq!(r.first_broken.map(|b| (b.line, b.reason.contains("rewritten"))), Some((2, true)));
        assert_eq!("4:ABC".parse::<Anchor>().map_err(|e| e.contains("LINE:SHA256")), Err(true));
        assert_eq!(head.to_string().parse::<Anchor>(), Ok(head));
        assert!("0:".to_string().parse::<Anchor>().is_err());
    }
}

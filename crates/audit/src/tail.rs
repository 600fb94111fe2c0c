//! Finding the last line of the log by reading backwards from the end, so an
//! append costs O(last line), not O(file size).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// How far back each read reaches; one chunk holds a typical line.
const CHUNK: usize = 8192;

/// What the end of the log looks like.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Tail {
    /// The file has no bytes.
    Empty,
    /// The file ends with `\n`; this is the last line, without its `\n`.
    Complete(Vec<u8>),
    /// The file ends with bytes after its last `\n`: a torn write. Holds the
    /// last complete line, if there is one.
    Torn(Option<Vec<u8>>),
}

/// Reads the tail of the first `len` bytes of `file`. Uses positioned reads,
/// so it does not move the cursor of an `O_APPEND` descriptor.
pub(crate) fn read_tail(file: &File, len: u64) -> io::Result<Tail> {
    read_tail_chunked(file, len, CHUNK)
}

fn read_tail_chunked(file: &File, len: u64, chunk: usize) -> io::Result<Tail> {
    if len == 0 {
        return Ok(Tail::Empty);
    }
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, len - 1)?;
    if last[0] == b'\n' {
        return Ok(Tail::Complete(line_ending_at(file, len - 1, chunk)?));
    }
    match rfind_newline(file, len, chunk)? {
        None => Ok(Tail::Torn(None)),
        Some(nl) => Ok(Tail::Torn(Some(line_ending_at(file, nl, chunk)?))),
    }
}

/// The line whose terminating `\n` is at offset `nl`, without the `\n`.
fn line_ending_at(file: &File, nl: u64, chunk: usize) -> io::Result<Vec<u8>> {
    let start = rfind_newline(file, nl, chunk)?.map_or(0, |p| p + 1);
    let size = usize::try_from(nl - start).map_err(|_| io::Error::other("last line does not fit in memory"))?;
    let mut line = vec![0u8; size];
    file.read_exact_at(&mut line, start)?;
    Ok(line)
}

/// Offset of the last `\n` strictly before `before`, reading backwards.
fn rfind_newline(file: &File, before: u64, chunk: usize) -> io::Result<Option<u64>> {
    let mut buf = vec![0u8; chunk];
    let mut end = before;
    while end > 0 {
        let start = end.saturating_sub(chunk as u64);
        // `end - start <= chunk`, so this cannot truncate.
        let piece = &mut buf[..(end - start) as usize];
        file.read_exact_at(piece, start)?;
        if let Some(i) = piece.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(start + i as u64));
        }
        end = start;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tail_of(content: &[u8], chunk: usize) -> Tail {
        let mut file = tempfile::tempfile().expect("tempfile");
        file.write_all(content).expect("write");
        read_tail_chunked(&file, content.len() as u64, chunk).expect("read tail")
    }

    #[test]
    fn finds_last_line_across_chunk_boundaries() {
        let content = b"first line\nsecond, longer line\n";
        for chunk in [1, 2, 3, 7, 64, CHUNK] {
            assert_eq!(tail_of(content, chunk), Tail::Complete(b"second, longer line".to_vec()), "chunk {chunk}");
        }
    }

    #[test]
    fn single_and_empty_lines() {
        assert_eq!(tail_of(b"", 4), Tail::Empty);
        assert_eq!(tail_of(b"only\n", 2), Tail::Complete(b"only".to_vec()));
        assert_eq!(tail_of(b"a\n\n", 2), Tail::Complete(Vec::new()));
    }

    #[test]
    fn torn_tail_reports_last_complete_line() {
        for chunk in [1, 3, CHUNK] {
            assert_eq!(tail_of(b"partial", chunk), Tail::Torn(None));
            assert_eq!(tail_of(b"one\ntwo\nthr", chunk), Tail::Torn(Some(b"two".to_vec())), "chunk {chunk}");
        }
    }

    #[test]
    fn only_looks_at_the_first_len_bytes() {
        let mut file = tempfile::tempfile().expect("tempfile");
        file.write_all(b"one\ntwo\nthr").expect("write");
        let tail = read_tail_chunked(&file, 8, 3).expect("read tail");
        assert_eq!(tail, Tail::Complete(b"two".to_vec()));
    }
}

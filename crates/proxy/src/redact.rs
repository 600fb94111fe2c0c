//! Last line of defence: a provider that echoes its key back (some error
//! bodies do) must not hand it to the agent, whole or streamed — also when
//! the key arrives split across two chunks of a stream.

use bytes::Bytes;
use memchr::memmem;

const MARK: &[u8] = b"[redacted]";

/// `body` with every occurrence of `secret` replaced; `body` itself (no
/// copy) when it holds none.
pub fn redact(body: Bytes, secret: &[u8]) -> Bytes {
    if secret.is_empty() || memmem::find(&body, secret).is_none() {
        return body;
    }
    Bytes::from(replace_all(&body, secret))
}

fn replace_all(body: &[u8], secret: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut rest = 0;
    for at in memmem::find_iter(body, secret) {
        // find_iter reports non-overlapping matches, left to right.
        out.extend_from_slice(&body[rest..at]);
        out.extend_from_slice(MARK);
        rest = at + secret.len();
    }
    out.extend_from_slice(&body[rest..]);
    out
}

/// Redacts a stream chunk by chunk. A chunk that ends in the first bytes
/// of the secret keeps those bytes back until the next chunk shows whether
/// the secret goes on; everything else passes at once (an SSE event ends
/// in a newline, which no key starts with, so nothing is held in practice).
#[derive(Default)]
pub struct StreamRedactor {
    held: Vec<u8>,
}

/// What is held may be the start of the secret: only its length shows.
impl std::fmt::Debug for StreamRedactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamRedactor").field("held", &self.held.len()).finish()
    }
}

impl StreamRedactor {
    /// What of `chunk` (after anything held back) can go out now.
    pub fn push(&mut self, chunk: Bytes, secret: &[u8]) -> Bytes {
        if secret.is_empty() {
            return chunk;
        }
        if self.held.is_empty() && memmem::find(&chunk, secret).is_none() && prefix_at_end(&chunk, 0, secret) == 0 {
            return chunk;
        }
        let mut buf = std::mem::take(&mut self.held);
        buf.extend_from_slice(&chunk);
        let keep = partial_tail(&buf, secret);
        let send = buf.len() - keep;
        self.held = buf[send..].to_vec();
        buf.truncate(send);
        Bytes::from(replace_all(&buf, secret))
    }

    /// What was held back when the stream ended: never the whole secret.
    pub fn finish(&mut self) -> Option<Bytes> {
        (!self.held.is_empty()).then(|| Bytes::from(std::mem::take(&mut self.held)))
    }
}

/// The length of the longest proper prefix of `secret` that `buf` ends in,
/// after the last occurrence that [`replace_all`] replaces.
fn partial_tail(buf: &[u8], secret: &[u8]) -> usize {
    let last_match_end = memmem::find_iter(buf, secret).last().map_or(0, |at| at + secret.len());
    prefix_at_end(buf, last_match_end, secret)
}

/// The length of the longest proper prefix of `secret` (not empty) that
/// `buf[from..]` ends in. Such a prefix starts with the secret's first
/// byte, so only those bytes of the tail are tried, leftmost (longest) first.
fn prefix_at_end(buf: &[u8], from: usize, secret: &[u8]) -> usize {
    let start = buf.len() - (secret.len() - 1).min(buf.len() - from);
    memchr::memchr_iter(secret[0], &buf[start..])
        .map(|i| buf.len() - start - i)
        .find(|&n| secret.starts_with(&buf[buf.len() - n..]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::{prefix_at_end, redact, StreamRedactor};
    use bytes::Bytes;

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        memchr::memmem::find(haystack, needle).is_some()
    }

    #[test]
    fn replaces_every_occurrence() {
        assert_eq!(&redact(Bytes::from_static(b"a sk-1 b sk-1"), b"sk-1")[..], b"a [redacted] b [redacted]");
        assert_eq!(&redact(Bytes::from_static(b"clean"), b"sk-1")[..], b"clean");
        assert_eq!(&redact(Bytes::from_static(b"sk-1sk-1"), b"sk-1")[..], b"[redacted][redacted]");
    }

    /// Every way of cutting a body into two or three chunks redacts as the
    /// whole body would, and nothing of the secret goes out unredacted.
    #[test]
    fn a_secret_split_across_chunks_is_still_redacted() {
        let secret = b"sk-ant-secret-key";
        let bodies: [&[u8]; 4] = [
            b"data: {\"error\":\"bad key sk-ant-secret-key\"}\n\n",
            b"sk-ant-secret-key",
            b"sk-ant-sk-ant-secret-keysk-ant-",
            b"data: no key here, only sk-ant-se and more\n\n",
        ];
        let overlapping: [(&[u8], &[u8]); 2] = [(b"aa", b"aaaaa"), (b"aba", b"abababa xab")];
        let cases = bodies.iter().map(|b| (&secret[..], *b)).chain(overlapping);
        for (secret, body) in cases {
            let whole = redact(Bytes::copy_from_slice(body), secret);
            for i in 0..=body.len() {
                for j in i..=body.len() {
                    let mut r = StreamRedactor::default();
                    let mut out = Vec::new();
                    for part in [&body[..i], &body[i..j], &body[j..]] {
                        let sent = r.push(Bytes::copy_from_slice(part), secret);
                        assert!(!contains(&sent, secret), "cut at {i},{j}: {sent:?}");
                        out.extend_from_slice(&sent);
                    }
                    out.extend_from_slice(&r.finish().unwrap_or_default());
                    assert_eq!(out, &whole[..], "cut at {i},{j}");
                    assert!(!contains(&out, secret), "cut at {i},{j}: {out:?}");
                }
            }
        }
    }

    #[test]
    fn a_chunk_without_the_secret_passes_whole_and_at_once() {
        let mut r = StreamRedactor::default();
        let chunk = Bytes::from_static(b"data: {\"x\":1}\n\n");
        let sent = r.push(chunk.clone(), b"sk-1");
        assert_eq!(sent.as_ptr(), chunk.as_ptr(), "copied");
        assert!(r.finish().is_none());
        // Held back only while it may be the secret's start.
        assert_eq!(&r.push(Bytes::from_static(b"abc sk-"), b"sk-1")[..], b"abc ");
        assert_eq!(&r.push(Bytes::from_static(b"2"), b"sk-1")[..], b"sk-2");
    }

    /// The tail search agrees with trying every prefix length, longest first.
    #[test]
    fn prefix_at_end_finds_the_longest_proper_prefix() {
        let naive = |buf: &[u8], from: usize, secret: &[u8]| {
            let longest = (secret.len() - 1).min(buf.len() - from);
            (1..=longest).rev().find(|&n| buf.ends_with(&secret[..n])).unwrap_or(0)
        };
        for secret in [&b"sk-ant-key"[..], b"aa", b"abab", b"s"] {
            for text in [&b"xx sk-ant-ke"[..], b"aaaa", b"ababab", b"sk-sk-s", b"", b"no match", b"ss"] {
                for end in 0..=text.len() {
                    for from in 0..=end {
                        let buf = &text[..end];
                        assert_eq!(prefix_at_end(buf, from, secret), naive(buf, from, secret), "{buf:?} from {from}, {secret:?}");
                    }
                }
            }
        }
    }
}

//! Last line of defence: a provider that echoes its key back (some error
//! bodies do) must not hand it to the agent.

use bytes::Bytes;

const MARK: &[u8] = b"[redacted]";

/// `body` with every occurrence of `secret` replaced.
pub fn redact(body: &[u8], secret: &[u8]) -> Bytes {
    if secret.is_empty() || !contains(body, secret) {
        return Bytes::copy_from_slice(body);
    }
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        if body[i..].starts_with(secret) {
            out.extend_from_slice(MARK);
            i += secret.len();
        } else {
            out.push(body[i]);
            i += 1;
        }
    }
    Bytes::from(out)
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn replaces_every_occurrence() {
        assert_eq!(&redact(b"a sk-1 b sk-1", b"sk-1")[..], b"a [redacted] b [redacted]");
        assert_eq!(&redact(b"clean", b"sk-1")[..], b"clean");
    }
}

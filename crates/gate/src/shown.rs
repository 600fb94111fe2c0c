//! What the gate's records show of a command's arguments.
//!
//! An agent that calls its inference proxy by hand puts its own token on
//! the command line (`curl -H "Authorization: Bearer $OPENAI_API_KEY"`).
//! The command gets its arguments unchanged; the audit log, the approval
//! queue and the history get them with every JWT-shaped word (three
//! base64url segments, the first two JSON objects: `eyJ...`) replaced by
//! [`REDACTED`], so no record holds a credential. A request whose shown
//! arguments differ from its real ones can be approved once only: a
//! session or always grant is made on what the operator saw, and would
//! match any other token-shaped word in the hidden place.

/// What a token is replaced with.
pub const REDACTED: &str = "[redacted token]";

/// `args` as the records show them.
pub fn shown_args(args: &[String]) -> Vec<String> {
    args.iter().map(|a| redact_tokens(a)).collect()
}

/// The command line as an operator's terminal shows it: control
/// characters and the invisible or direction-changing marks a request could
/// use to make a prompt or a listing read as another command are shown
/// escaped (`\u{1b}`), never interpreted.
pub fn command_line(command: &str, args: &[String]) -> String {
    let mut out = for_terminal(command);
    for a in args {
        out.push(' ');
        out.push_str(&for_terminal(a));
    }
    out
}

/// `s` with every control or invisible formatting character escaped.
pub fn for_terminal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let invisible = matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{206f}' | '\u{feff}');
        if c.is_control() || invisible {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

fn is_b64url(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

/// Replaces every compact-JWS-shaped run in `s`.
fn redact_tokens(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let mut copied = 0;
    while let Some(at) = s[i..].find("eyJ").map(|o| i + o) {
        // A token starts a word: not in the middle of a base64url run.
        if at > 0 && (is_b64url(b[at - 1]) || b[at - 1] == b'.') {
            i = at + 3;
            continue;
        }
        let end = at + b[at..].iter().take_while(|c| is_b64url(**c) || **c == b'.').count();
        let parts: Vec<&str> = s[at..end].split('.').collect();
        let jwt = parts.len() == 3 && parts[0].len() >= 10 && parts[1].len() >= 10 && parts[1].starts_with("eyJ") && !parts[2].is_empty();
        if jwt {
            out.push_str(&s[copied..at]);
            out.push_str(REDACTED);
            copied = end;
        }
        i = end.max(at + 3);
    }
    out.push_str(&s[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_terminal_sees_control_characters_escaped() {
        let args = vec!["--force".to_string(), "-o".to_string(), "\r\u{1b}[2Kapprove #3: git status".to_string(), "a\u{202e}b".to_string()];
        let shown = command_line("git", &args);
        assert_eq!(shown, "git --force -o \\u{d}\\u{1b}[2Kapprove #3: git status a\\u{202e}b");
        assert!(!shown.chars().any(|c| c.is_control()));
        assert_eq!(for_terminal("plain words, ünïcode"), "plain words, ünïcode");
    }

    const JWT: &str = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhZ2VudCJ9.c2lnbmF0dXJlX2J5dGVz";

    #[test]
    fn tokens_are_replaced_wherever_they_sit() {
        let args = vec![
            "-H".to_string(),
            format!("Authorization: Bearer {JWT}"),
            JWT.to_string(),
            format!("x-api-key:{JWT},next"),
            "https://example.com/v1/models".to_string(),
        ];
        let shown = shown_args(&args);
        assert_eq!(shown[0], "-H");
        assert_eq!(shown[1], format!("Authorization: Bearer {REDACTED}"));
        assert_eq!(shown[2], REDACTED);
        assert_eq!(shown[3], format!("x-api-key:{REDACTED},next"));
        assert_eq!(shown[4], args[4]);
        assert!(shown.iter().all(|a| !a.contains("c2lnbmF0dXJl")));
    }

    #[test]
    fn look_alikes_are_left_alone() {
        for s in [
            "eyJ",
            "eyJhbGciOiJFZERTQSJ9",
            "a.b.c",
            "xeyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhZ2VudCJ9.sig",
            "eyJhbGciOiJFZERTQSJ9.e30.sig",
            "plain text",
        ] {
            assert_eq!(redact_tokens(s), s, "{s}");
        }
        assert_eq!(redact_tokens("héllo eyJ wörld"), "héllo eyJ wörld");
    }
}

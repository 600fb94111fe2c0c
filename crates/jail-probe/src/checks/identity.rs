//! Who the agent is: no capabilities, no_new_privs, seccomp on, not root,
//! host root unmapped and no secrets in the environment.

use std::fs;

use crate::errno;
use crate::report::{Findings, Outcome};

/// `/proc/self/status` fields and the value each must have.
const STATUS_EXPECTED: [(&str, Expect); 6] = [
    ("CapEff", Expect::NoCaps),
    ("CapPrm", Expect::NoCaps),
    ("CapBnd", Expect::NoCaps),
    ("CapAmb", Expect::NoCaps),
    ("NoNewPrivs", Expect::Exactly("1")),
    // 2 = SECCOMP_MODE_FILTER (proc(5)).
    ("Seccomp", Expect::Exactly("2")),
];

#[derive(Debug, Clone, Copy)]
enum Expect {
    /// A capability mask that parses as hex zero.
    NoCaps,
    Exactly(&'static str),
}

impl Expect {
    fn accepts(self, value: &str) -> bool {
        match self {
            Expect::NoCaps => u64::from_str_radix(value, 16) == Ok(0),
            Expect::Exactly(want) => value == want,
        }
    }
}

/// No capability sets, no_new_privs set and a seccomp filter installed.
pub fn status() -> Outcome {
    let mut f = Findings::new();
    let text = match fs::read_to_string("/proc/self/status") {
        Ok(text) => text,
        Err(e) => {
            f.escaped(format!("read(/proc/self/status) -> {}", errno::io_name(&e)));
            return f.finish("status");
        }
    };
    for (key, expect) in STATUS_EXPECTED {
        let value = text.lines().filter_map(|line| line.split_once(':')).find(|(k, _)| *k == key).map(|(_, v)| v.trim());
        match value {
            Some(v) => f.record(expect.accepts(v), format!("{key}={v}")),
            None => f.escaped(format!("{key} missing")),
        }
    }
    f.finish("status")
}

/// Not uid 0 inside, and host uid 0 mapped to nothing.
pub fn uid() -> Outcome {
    let mut f = Findings::new();
    // SAFETY: getuid/geteuid cannot fail and take no arguments.
    let (uid, euid) = unsafe { (libc::getuid(), libc::geteuid()) };
    f.record(uid != 0, format!("uid={uid}"));
    f.record(euid != 0, format!("euid={euid}"));
    match fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => {
            let lines: Vec<Vec<&str>> =
                map.lines().map(|l| l.split_whitespace().collect()).filter(|fields: &Vec<&str>| !fields.is_empty()).collect();
            let shown: Vec<String> = lines.iter().map(|l| l.join(" ")).collect();
            let host_root = lines.iter().any(|l| l.get(1) == Some(&"0"));
            let text = format!("uid_map=[{}]", shown.join(", "));
            if host_root {
                f.escaped(format!("{text} maps host uid 0"));
            } else {
                f.held(text);
            }
        }
        Err(e) => f.escaped(format!("read(/proc/self/uid_map) -> {}", errno::io_name(&e))),
    }
    f.finish("uid")
}

const SECRET_NAMES: [&str; 2] = ["ANTHROPIC_API_KEY", "OPENAI_API_KEY"];
const SECRET_SUFFIXES: [&str; 5] = ["_API_KEY", "_KEY", "_TOKEN", "_SECRET", "_PASSWORD"];

/// No credential-looking variable reached the agent. Only names are printed,
/// never values.
pub fn env() -> Outcome {
    let mut f = Findings::new();
    let mut names: Vec<String> = std::env::vars_os().map(|(name, _)| name.to_string_lossy().into_owned()).collect();
    names.sort();
    // clawkeep's own agent token is the one secret-looking value allowed in.
    let leaked: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|name| looks_secret(name) && !std::env::var(name).is_ok_and(|v| is_agent_token(&v)))
        .collect();
    f.held(format!("names=[{}]", names.join(" ")));
    if !leaked.is_empty() {
        f.escaped(format!("secret-looking: {}", leaked.join(" ")));
    }
    f.finish("env")
}

/// A clawkeep agent token: a compact JWS whose header names EdDSA and whose
/// claims start with `"iss":"clawkeep"` (how clawkeep serialises them), in
/// base64url. A provider key never has this shape.
fn is_agent_token(v: &str) -> bool {
    const HEADER: &str = "eyJhbGciOiJFZERTQSI"; // {"alg":"EdDSA"
    const CLAIMS: &str = "eyJpc3MiOiJjbGF3a2VlcCI"; // {"iss":"clawkeep"
    let parts: Vec<&str> = v.split('.').collect();
    parts.len() == 3
        && parts[0].starts_with(HEADER)
        && parts[1].starts_with(CLAIMS)
        && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
}

fn looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SECRET_NAMES.contains(&upper.as_str()) || SECRET_SUFFIXES.iter().any(|s| upper.ends_with(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_clawkeep_tokens_pass_as_secret_values() {
        let token =
            "eyJhbGciOiJFZERTQSIsInR5cCI6IkpXVCIsImtpZCI6ImFkZTliNWJiOGU0YWMwZmMifQ.eyJpc3MiOiJjbGF3a2VlcCIsInN1YiI6InJ1biJ9.DbyEN73vAMeJ";
        assert!(is_agent_token(token));
        assert!(!is_agent_token("sk-ant-api03-REAL"));
        assert!(!is_agent_token("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.sig"));
        assert!(!is_agent_token(&format!("{token}.extra")));
    }

    #[test]
    fn secret_names_are_caught() {
        assert!(looks_secret("ANTHROPIC_API_KEY"));
        assert!(looks_secret("GITHUB_TOKEN"));
        assert!(looks_secret("aws_secret"));
        assert!(!looks_secret("PATH"));
        assert!(!looks_secret("TOKENIZER"));
    }

    #[test]
    fn cap_masks_parse_as_hex() {
        assert!(Expect::NoCaps.accepts("0000000000000000"));
        assert!(!Expect::NoCaps.accepts("000001ffffffffff"));
        assert!(!Expect::NoCaps.accepts("garbage"));
    }
}

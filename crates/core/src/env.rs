//! The agent's environment.
//!
//! Guarantee: the environment an agent starts with is built from an explicit
//! allow-list (PATH, HOME, LANG, TERM) plus what the operator asked for with
//! `--env`. A variable whose *name* looks like a secret never enters unless
//! the operator named it in `--allow-secret-env`, and even the error that
//! refuses it never prints its value.

use std::collections::BTreeMap;
use thiserror::Error;

/// The PATH every agent gets; the jail's root has these directories.
pub const AGENT_PATH: &str = "/usr/local/bin:/usr/local/sbin:/usr/bin:/usr/sbin:/bin:/sbin";
/// The agent's home, which is also its workspace and its cwd.
pub const AGENT_HOME: &str = "/workspace";

/// `_KEY` covers names like CLAWKEEP_MASTER_KEY and AWS_SECRET_ACCESS_KEY.
const SECRET_SUFFIXES: &[&str] = &["_API_KEY", "_KEY", "_TOKEN", "_SECRET", "_PASSWORD"];

/// True when a variable name looks like it holds a credential.
pub fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SECRET_SUFFIXES.iter().any(|s| upper.ends_with(s) || upper == s[1..])
}

/// One `--env` argument: `NAME=VALUE` sets a value, a bare `NAME` copies the
/// host's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvRequest {
    Set { name: String, value: String },
    Inherit { name: String },
}

impl EnvRequest {
    pub fn name(&self) -> &str {
        match self {
            EnvRequest::Set { name, .. } | EnvRequest::Inherit { name } => name,
        }
    }
}

impl std::str::FromStr for EnvRequest {
    type Err = EnvError;

    fn from_str(s: &str) -> Result<Self, EnvError> {
        let (name, value) = match s.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (s, None),
        };
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(EnvError::BadName { name: name.to_string() });
        }
        Ok(match value {
            Some(v) => EnvRequest::Set { name: name.to_string(), value: v.to_string() },
            None => EnvRequest::Inherit { name: name.to_string() },
        })
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum EnvError {
    #[error("invalid --env name '{name}': use NAME=VALUE or NAME with letters, digits and _")]
    BadName { name: String },
    #[error(
        "--env {name} looks like a secret and secrets never enter the agent; \
         add --allow-secret-env {name} if this one really must"
    )]
    SecretRefused { name: String },
    #[error("--env {name} asks for the host's value but {name} is not set on the host")]
    NotSetOnHost { name: String },
}

/// The environment an agent starts with, in a stable order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentEnv {
    vars: BTreeMap<String, String>,
}

impl AgentEnv {
    /// Builds the agent's environment from the host's and the operator's
    /// requests. `host` is consulted only for LANG, TERM and `--env NAME`.
    pub fn build(host: impl Fn(&str) -> Option<String>, requests: &[EnvRequest], allow_secret: &[String]) -> Result<Self, EnvError> {
        let mut vars = BTreeMap::new();
        vars.insert("PATH".into(), AGENT_PATH.into());
        vars.insert("HOME".into(), AGENT_HOME.into());
        vars.insert("LANG".into(), host("LANG").unwrap_or_else(|| "C.UTF-8".into()));
        if let Some(term) = host("TERM") {
            vars.insert("TERM".into(), term);
        }
        for req in requests {
            let name = req.name();
            if is_secret_name(name) && !allow_secret.iter().any(|a| a == name) {
                return Err(EnvError::SecretRefused { name: name.to_string() });
            }
            let value = match req {
                EnvRequest::Set { value, .. } => value.clone(),
                EnvRequest::Inherit { name } => host(name).ok_or_else(|| EnvError::NotSetOnHost { name: name.clone() })?,
            };
            vars.insert(name.to_string(), value);
        }
        Ok(Self { vars })
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// Variable names only: what the audit log may record.
    pub fn names(&self) -> Vec<String> {
        self.vars.keys().cloned().collect()
    }

    pub fn into_pairs(self) -> Vec<(String, String)> {
        self.vars.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str) -> Option<String> {
        match name {
            "ANTHROPIC_API_KEY" => Some("sk-ant-real".into()),
            "GITHUB_TOKEN" => Some("ghp_real".into()),
            "TERM" => Some("xterm".into()),
            "EDITOR" => Some("vi".into()),
            _ => None,
        }
    }

    #[test]
    fn secret_names() {
        for s in [
            "ANTHROPIC_API_KEY",
            "openai_api_key",
            "GITHUB_TOKEN",
            "AWS_SECRET",
            "TOKEN",
            "CLAWKEEP_MASTER_KEY",
            "AWS_SECRET_ACCESS_KEY",
            "DB_PASSWORD",
        ] {
            assert!(is_secret_name(s), "{s}");
        }
        for s in ["PATH", "TOKENIZER", "SECRETARY_NAME", "HOME", "KEYBOARD", "CLAWKEEP_IMAGE_PUBKEY"] {
            assert!(!is_secret_name(s), "{s}");
        }
    }

    #[test]
    fn defaults_only_allowlist() {
        let env = AgentEnv::build(host, &[], &[]).unwrap();
        assert_eq!(env.names(), ["HOME", "LANG", "PATH", "TERM"]);
        assert_eq!(env.get("HOME"), Some("/workspace"));
    }

    #[test]
    fn secret_refused_without_allow() {
        let reqs = ["ANTHROPIC_API_KEY".parse().unwrap()];
        let err = AgentEnv::build(host, &reqs, &[]).unwrap_err();
        assert_eq!(err, EnvError::SecretRefused { name: "ANTHROPIC_API_KEY".into() });
        assert!(!err.to_string().contains("sk-ant-real"));
        let set = ["GITHUB_TOKEN=abc".parse().unwrap()];
        assert!(AgentEnv::build(host, &set, &[]).is_err());
        let ok = AgentEnv::build(host, &set, &["GITHUB_TOKEN".into()]).unwrap();
        assert_eq!(ok.get("GITHUB_TOKEN"), Some("abc"));
    }

    #[test]
    fn inherit_and_set() {
        let reqs = ["EDITOR".parse().unwrap(), "X=1=2".parse().unwrap()];
        let env = AgentEnv::build(host, &reqs, &[]).unwrap();
        assert_eq!(env.get("EDITOR"), Some("vi"));
        assert_eq!(env.get("X"), Some("1=2"));
        let missing = ["NOPE".parse().unwrap()];
        assert!(AgentEnv::build(host, &missing, &[]).is_err());
        assert!("1BAD=x".parse::<EnvRequest>().is_err());
        assert!("=x".parse::<EnvRequest>().is_err());
    }
}

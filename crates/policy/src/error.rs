//! Why a policy was refused. Every variant that comes from a file names the
//! file and line (and column where YAML knows it), so an editor can jump there.

use std::path::PathBuf;

/// A policy that could not be read, parsed or checked.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("{}: cannot read policy: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The YAML is malformed or does not have the policy's shape (unknown
    /// key, wrong type, bad glob in `allowed_paths`/`env_scrub`).
    #[error("{origin}:{line}:{column}: {message}")]
    Parse {
        /// File path, or a name such as `builtin:default-policy.yaml`.
        origin: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// The YAML is well-formed but a rule cannot be used (unknown action, bad
    /// regex or glob, bad timeout, empty command, `args` with `patterns`).
    #[error("{origin}:{line}: {message}")]
    Invalid {
        /// File path or name.
        origin: String,
        /// 1-based line of the offending rule's `- ` item.
        line: usize,
        /// What is wrong, naming the rule and the field.
        message: String,
    },
    /// A rule built in code (not read from a file) cannot be used.
    #[error("invalid rule: {message}")]
    InvalidRule {
        /// What is wrong.
        message: String,
    },
}

impl PolicyError {
    /// Converts a serde_norway error, moving its position out of the message
    /// and into `line`/`column`.
    pub(crate) fn from_yaml(origin: &str, err: &serde_norway::Error) -> PolicyError {
        let (line, column) = err.location().map_or((1, 1), |l| (l.line(), l.column()));
        let mut message = err.to_string();
        let suffix = format!(" at line {line} column {column}");
        if let Some(at) = message.find(&suffix) {
            message.replace_range(at..at + suffix.len(), "");
        }
        PolicyError::Parse { origin: origin.to_string(), line, column, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_errors_put_the_position_in_front() {
        let err = serde_norway::from_str::<serde_norway::Value>("a: [1,\n").unwrap_err();
        let e = PolicyError::from_yaml("p.yaml", &err);
        let PolicyError::Parse { line, column, ref message, .. } = e else { panic!("{e:?}") };
        assert_eq!((line, column), (2, 1));
        assert!(!message.contains("at line 2 column 1"), "{message}");
        assert!(e.to_string().starts_with("p.yaml:2:1: "), "{e}");
    }

    #[test]
    fn invalid_shows_file_and_line() {
        let e = PolicyError::Invalid { origin: "p.yaml".into(), line: 7, message: "bad".into() };
        assert_eq!(e.to_string(), "p.yaml:7: bad");
    }
}

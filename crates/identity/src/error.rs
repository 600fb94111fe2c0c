//! Errors. Messages say what failed, on which path, and what to do; none of
//! them ever carries a key, a token or a secret value.

use std::io;
use std::path::PathBuf;
use thiserror::Error;

/// Failures of the key ring, the revocation list and the sealed store.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum IdentityError {
    #[error(transparent)]
    Dir(#[from] clawkeep_core::StateDirError),
    #[error("cannot {op} {path}: {source}; check that the clawkeep user owns it and the disk is not full or read-only")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} has mode {mode:03o}, which lets group or others read it; run `chmod 600 {path}`")]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("{path} is not a regular file (a symlink or a directory?); replace it with a 0600 file")]
    NotRegular { path: PathBuf },
    #[error(
        "signing key {path} is damaged ({reason}); move it out of the directory so a new key is made (tokens it signed stop verifying)"
    )]
    BadKeyFile { path: PathBuf, reason: &'static str },
    #[error("{path} is not valid ({source}); move it away to start a fresh one")]
    BadStateFile {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("the OS random number generator failed: {0}; check that getrandom(2) is allowed and /dev/urandom exists")]
    Random(getrandom::Error),
    #[error("CLAWKEEP_MASTER_KEY is {reason}; set it to exactly 64 hex characters (32 bytes) or unset it to use the key file")]
    MasterKeyEnv { reason: &'static str },
    #[error("master key file {path} is {reason}; it must hold 32 raw bytes or 64 hex characters: restore it from backup")]
    MasterKeyFile { path: PathBuf, reason: &'static str },
    #[error("secret name {name:?} is invalid; use 1 to 64 characters from A-Z a-z 0-9 _ . -")]
    SecretName { name: String },
    #[error("cannot open sealed secret {name} ({path}): wrong master key, or the file was altered or renamed; use the master key it was sealed with, or set the secret again")]
    Unseal { name: String, path: PathBuf },
    #[error("sealed secret file {path} is damaged ({reason}); set the secret again")]
    SealedFormat { path: PathBuf, reason: &'static str },
    #[error("cannot seal secret {name}: AES-GCM encryption failed; the value may be too large")]
    Seal { name: String },
    #[error("cannot encode token JSON: {0}; this is a bug in clawkeep, please report it")]
    Encode(#[source] serde_json::Error),
    #[error("agent id is empty; pass the id of the agent the token is for")]
    EmptyAgent,
    #[error("token id (jti) is empty or longer than 128 characters; pass the jti from the token's claims")]
    BadJti,
}

impl IdentityError {
    /// A closure for `map_err` that names the operation and the path.
    pub(crate) fn io<'a>(op: &'static str, path: &'a std::path::Path) -> impl FnOnce(io::Error) -> IdentityError + 'a {
        move |source| IdentityError::Io { op, path: path.to_path_buf(), source }
    }
}

/// Why a token was refused. The variants carry nothing from the token
/// itself, so an attacker's bytes never reach a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error("token is malformed: expected header.claims.signature in base64url with clawkeep's claims; request a new token")]
    Malformed,
    #[error("token algorithm is not EdDSA; clawkeep accepts only Ed25519-signed tokens")]
    UnsupportedAlg,
    #[error("token was signed by an unknown or pruned key; request a new token")]
    UnknownKey,
    #[error("token signature does not verify: the token was altered or forged")]
    BadSignature,
    #[error("token has expired; request a new token")]
    Expired,
    #[error("token was issued in the future; check the host clock")]
    NotYetValid,
    #[error("token has been revoked; request a new token")]
    Revoked,
    #[error("token was issued to another agent")]
    WrongAgent,
    #[error("token is not this run's: a run's proxy takes only the tokens issued for it, and a run's token is valid nowhere else; use the token this run put in the agent's environment (OPENAI_API_KEY, ANTHROPIC_API_KEY)")]
    WrongRun,
}

//! Agent identity for clawkeep: Ed25519 signing keys, agent JWTs, the JWKS
//! that publishes their public halves, token revocation, and the sealed
//! (AES-256-GCM) secret store that keeps provider keys out of every agent.
//!
//! Guarantees:
//! - every file this crate writes is 0600 in a 0700 directory, and is
//!   replaced atomically (temp file, fsync, rename, fsync of the directory);
//! - secret key bytes, the master key and secret values are zeroized on drop
//!   and never appear in `Debug` output or in an error message;
//! - a token verifies only if it is a compact JWS with `alg` EdDSA, signed by
//!   a key of this ring that has not been pruned, unexpired, not revoked,
//!   and bound to the run the verifier is bound to (none: unbound).
//!
//! Several processes may share a state directory (each run has its own
//! proxy): the revocation list is an append-only log any of them may
//! write to, read when a token is first checked and re-read when it
//! changed (looked at once a second at most); see `revocation.rs`.

pub mod error;
pub mod jwks;
pub mod jwt;
pub mod keys;
pub mod layout;
pub mod master_key;
mod private_file;
mod random;
pub mod redacted;
pub mod revocation;
pub mod sealed;

pub use error::{IdentityError, TokenError};
pub use jwt::{Claims, IssuedToken, ISSUER, LEEWAY};
pub use keys::KeyRing;
pub use layout::IdentityPaths;
pub use master_key::{MasterKey, MASTER_KEY_ENV};
pub use redacted::Redacted;
pub use sealed::SealedStore;
pub use zeroize::Zeroizing;

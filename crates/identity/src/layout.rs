//! Where identity state lives under the clawkeep state directory.

use std::path::{Path, PathBuf};

/// The identity layout under one state directory:
/// `<state>/identity/{keys/, secrets/, master.key}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityPaths {
    /// Signing keys (`<kid>.key`), their index and the revocation list.
    pub keys: PathBuf,
    /// Sealed secrets, one `<name>.sealed` file each.
    pub secrets: PathBuf,
    /// The master key file used when `CLAWKEEP_MASTER_KEY` is unset.
    pub master_key: PathBuf,
}

impl IdentityPaths {
    pub fn under(state_dir: &Path) -> IdentityPaths {
        let root = state_dir.join("identity");
        IdentityPaths { keys: root.join("keys"), secrets: root.join("secrets"), master_key: root.join("master.key") }
    }
}

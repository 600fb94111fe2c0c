//! Environment scrubbing before a gated command runs. Only names are ever
//! inspected or reported here; values are never read, logged or returned.

use globset::GlobMatcher;

use crate::matcher::glob;
use crate::policy::Policy;

/// Variables removed from every gated command, whatever the policy says:
/// each one changes what the command loads or which host it controls.
pub const ALWAYS_SCRUBBED: [&str; 5] = [
    "LD_PRELOAD",      // injects a library into the command (ld.so(8))
    "LD_LIBRARY_PATH", // swaps the libraries it links against
    "LD_AUDIT",        // runs auditing code inside it (rtld-audit(7))
    "DOCKER_HOST",     // points docker at another daemon
    "KUBECONFIG",      // points kubectl at another cluster or identity
];

/// Compiled `env_scrub` globs (case-sensitive, as env names are).
#[derive(Debug, Clone, Default)]
pub(crate) struct EnvGlobs {
    matchers: Vec<GlobMatcher>,
}

impl EnvGlobs {
    pub(crate) fn compile(globs: &[String]) -> Result<Self, String> {
        let matchers = globs.iter().map(|g| glob(g).map(|g| g.compile_matcher())).collect::<Result<_, _>>()?;
        Ok(EnvGlobs { matchers })
    }

    fn is_match(&self, name: &str) -> bool {
        self.matchers.iter().any(|m| m.is_match(name))
    }
}

impl Policy {
    /// Whether the variable `name` is removed before a gated command runs.
    pub fn env_scrubbed(&self, name: &str) -> bool {
        ALWAYS_SCRUBBED.contains(&name) || self.env_globs.is_match(name)
    }

    /// Removes the always-scrubbed variables and those named by `env_scrub`.
    pub fn scrub_env(&self, env: &mut Vec<(String, String)>) {
        env.retain(|(name, _)| !self.env_scrubbed(name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Action;

    fn env(names: &[&str]) -> Vec<(String, String)> {
        names.iter().map(|n| (n.to_string(), "secret".to_string())).collect()
    }

    #[test]
    fn fixed_names_go_even_without_env_scrub() {
        let p = Policy::empty(Action::Deny, "t");
        let mut e = env(&["PATH", "LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "DOCKER_HOST", "KUBECONFIG", "HOME"]);
        p.scrub_env(&mut e);
        let names: Vec<&str> = e.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["PATH", "HOME"]);
    }

    #[test]
    fn globs_are_case_sensitive_and_whole_name() {
        let p = Policy::parse("env_scrub: [\"AWS_*\", NPM_TOKEN]\n", "t").unwrap();
        assert!(p.env_scrubbed("AWS_SECRET_ACCESS_KEY"));
        assert!(p.env_scrubbed("NPM_TOKEN"));
        assert!(!p.env_scrubbed("aws_secret"));
        assert!(!p.env_scrubbed("MY_AWS_KEY"));
        assert!(!p.env_scrubbed("NPM_TOKEN_2"));
    }
}

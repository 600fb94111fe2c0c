//! Environment scrubbing before a gated command runs. Only names are ever
//! inspected or reported here; values are never read, logged or returned.

use globset::GlobMatcher;

use crate::matcher::glob;
use crate::policy::Policy;

/// Variables removed from every gated command, whatever the policy says:
/// each one changes what the command loads, runs or controls. A gated
/// command runs where the real binaries are visible, so code injected into
/// it could run any of them unasked.
pub const ALWAYS_SCRUBBED: [&str; 15] = [
    "DOCKER_HOST",       // points docker at another daemon
    "KUBECONFIG",        // points kubectl at another cluster or identity
    "GCONV_PATH",        // loads iconv modules (code) from a directory
    "BASH_ENV",          // a script bash runs before any other
    "ENV",               // the same for sh
    "GIT_EXTERNAL_DIFF", // a command run for every diff
    "GIT_PROXY_COMMAND", // a command run to connect
    "GIT_ASKPASS",       // a command run for credentials
    "GIT_EXEC_PATH",     // where git finds its subcommands
    "GIT_TEMPLATE_DIR",  // hooks copied into new repositories
    "PYTHONPATH",        // modules shadowing the standard ones (pip)
    "PYTHONSTARTUP",
    "NODE_OPTIONS", // --require: code loaded into node (npm, npx)
    "RUBYOPT",      // -r: code loaded into ruby (gem, bundle)
    "RUBYLIB",
];

/// Prefixes of variables removed the same way: the dynamic loader's
/// (LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT, ...), git's config injection
/// (GIT_CONFIG_PARAMETERS, _COUNT, _KEY_n, _VALUE_n, _GLOBAL, _SYSTEM: with
/// core.fsmonitor or core.pager, commands) and ssh command (GIT_SSH,
/// GIT_SSH_COMMAND), functions bash imports from its environment, and the
/// interpreters' preload options (NODE_OPTIONS, PERL5OPT, PERL5LIB, RUBYOPT).
pub const ALWAYS_SCRUBBED_PREFIXES: [&str; 8] =
    ["LD_", "GIT_CONFIG", "GIT_SSH", "BASH_FUNC_", "NODE_OPTIONS", "PERL5", "RUBYOPT", "RUBYLIB"];

/// Whether `name` is a name at all: a pair whose name is empty or holds
/// `=` (`LD_PRELOAD=/x.so:` with any value) would reach the command as
/// another variable than the one checked.
fn well_formed(name: &str) -> bool {
    !name.is_empty() && !name.contains(['=', '\0'])
}

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
        !well_formed(name)
            || ALWAYS_SCRUBBED.contains(&name)
            || ALWAYS_SCRUBBED_PREFIXES.iter().any(|p| name.starts_with(p))
            || self.env_globs.is_match(name)
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

    /// A name that is not one (it would become another variable in the
    /// command's environment), the loader's whole family and the known
    /// code-injection variables are removed.
    #[test]
    fn malformed_names_and_injection_variables_go() {
        let p = Policy::empty(Action::Deny, "t");
        let mut e = env(&[
            "LD_PRELOAD=/workspace/a.so:",
            "",
            "LD_BIND_NOW",
            "GIT_CONFIG_COUNT",
            "GIT_CONFIG_KEY_0",
            "GIT_CONFIG_VALUE_0",
            "BASH_FUNC_ls%%",
            "NODE_OPTIONS",
            "GCONV_PATH",
            "GIT_AUTHOR_NAME",
            "TERM",
        ]);
        p.scrub_env(&mut e);
        let names: Vec<&str> = e.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["GIT_AUTHOR_NAME", "TERM"]);
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

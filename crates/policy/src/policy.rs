//! The loaded policy: rules in order, the default action, the directories an
//! agent may work in and the extra environment names to strip.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Serialize;

use crate::env::EnvGlobs;
use crate::error::PolicyError;
use crate::matcher::{normalize, PathGlobs};
use crate::model::{Action, RuleSpec};
use crate::rule::Rule;

/// A checked, compiled command policy. Evaluation cannot fail.
///
/// Two policies are equal when they decide alike by construction: same
/// default action, paths, env globs and rule specs in the same order. Where
/// they came from (origin, line numbers) is not compared.
#[derive(Debug, Clone)]
pub struct Policy {
    pub(crate) default_action: Action,
    pub(crate) allowed_paths: Vec<String>,
    pub(crate) allowed: PathGlobs,
    pub(crate) env_scrub: Vec<String>,
    pub(crate) env_globs: EnvGlobs,
    pub(crate) rules: Vec<Rule>,
    pub(crate) origin: String,
}

/// The canonical YAML shape [`Policy::to_yaml`] writes.
#[derive(Serialize)]
struct PolicyDoc<'a> {
    default_action: Action,
    allowed_paths: &'a [String],
    env_scrub: &'a [String],
    rules: Vec<&'a RuleSpec>,
}

impl Policy {
    /// Assembles a policy from checked parts; compiles the top-level globs.
    pub(crate) fn from_parts(
        default_action: Action,
        allowed_paths: Vec<String>,
        env_scrub: Vec<String>,
        rules: Vec<Rule>,
        origin: String,
    ) -> Result<Policy, String> {
        let allowed = PathGlobs::compile(&allowed_paths).map_err(|e| format!("`allowed_paths`: {e}"))?;
        let env_globs = EnvGlobs::compile(&env_scrub).map_err(|e| format!("`env_scrub`: {e}"))?;
        Ok(Policy { default_action, allowed_paths, allowed, env_scrub, env_globs, rules, origin })
    }

    /// A policy with no rules that answers `action` to everything.
    pub(crate) fn empty(action: Action, origin: &str) -> Policy {
        Policy {
            default_action: action,
            allowed_paths: Vec::new(),
            allowed: PathGlobs::default(),
            env_scrub: Vec::new(),
            env_globs: EnvGlobs::default(),
            rules: Vec::new(),
            origin: origin.to_string(),
        }
    }

    /// What happens when no rule matches.
    pub fn default_action(&self) -> Action {
        self.default_action
    }

    /// The rules, in evaluation order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// `allowed_paths` as written (empty: any cwd).
    pub fn allowed_paths(&self) -> &[String] {
        &self.allowed_paths
    }

    /// `env_scrub` as written.
    pub fn env_scrub(&self) -> &[String] {
        &self.env_scrub
    }

    /// Where the policy came from (a path or a `builtin:` name).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Whether an agent may run gated commands from `cwd` (compared after
    /// resolving `.` and `..` lexically).
    pub fn cwd_allowed(&self, cwd: &Path) -> bool {
        self.allowed.is_empty() || self.allowed.is_match(&normalize(cwd))
    }

    /// The command names the rules name (globs left out), sorted and
    /// distinct: the shims an agent needs.
    pub fn gated_commands(&self) -> Vec<String> {
        let names: BTreeSet<&str> = self.rules.iter().filter(|r| !r.is_glob()).map(|r| r.command.as_str()).collect();
        names.into_iter().map(str::to_string).collect()
    }

    /// Canonical YAML for this policy; [`Policy::parse`] reads it back to an
    /// equal policy. Comments and the original layout are not kept.
    pub fn to_yaml(&self) -> String {
        let doc = PolicyDoc {
            default_action: self.default_action,
            allowed_paths: &self.allowed_paths,
            env_scrub: &self.env_scrub,
            rules: self.rules.iter().map(Rule::spec).collect(),
        };
        // Strings, lists and enums always serialise; the fallback is unreachable
        // but must still be YAML that parses to "ask".
        serde_norway::to_string(&doc).unwrap_or_else(|_| "default_action: ask\n".to_string())
    }

    /// One rule as a YAML list item (`- command: ...`), the way it would
    /// appear under `rules:` in [`Policy::to_yaml`]; for showing an operator
    /// what "approve always" will save.
    pub fn rule_yaml(rule: &RuleSpec) -> String {
        serde_norway::to_string(&[rule]).unwrap_or_else(|_| format!("- command: {:?}\n", rule.command))
    }

    /// A copy of this policy with `rule` placed first, for "approve always".
    /// Build the rule with [`RuleSpec::exact`] so it matches exactly one
    /// command line. The new rule has line 0; the others keep theirs.
    pub fn with_rule_prepended(&self, rule: RuleSpec) -> Result<Policy, PolicyError> {
        let first = Rule::compile(rule, 0, 0).map_err(|message| PolicyError::InvalidRule { message })?;
        let mut out = self.clone();
        out.rules = std::iter::once(first)
            .chain(self.rules.iter().cloned().map(|mut r| {
                r.index += 1;
                r
            }))
            .collect();
        Ok(out)
    }
}

impl PartialEq for Policy {
    fn eq(&self, other: &Policy) -> bool {
        self.default_action == other.default_action
            && self.allowed_paths == other.allowed_paths
            && self.env_scrub == other.env_scrub
            && self.rules.len() == other.rules.len()
            && self.rules.iter().zip(&other.rules).all(|(a, b)| a.spec() == b.spec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
default_action: deny
allowed_paths: [\"/workspace/**\"]
env_scrub: [\"AWS_*\"]
rules:
  - command: git
    args: [\"push *\", 're:^push\\b.*--force']
    cwd: [\"/workspace/**\"]
    action: ask
    timeout: 5m
    reason: \"pushing: needs a human\"
  - command: python3*
    action: allow
  - command: git
    action: allow
  - command: cargo
    argv: [build, --release]
    action: allow
";

    #[test]
    fn to_yaml_parses_back_to_an_equal_policy() {
        let p = Policy::parse(TEXT, "t.yaml").unwrap();
        let yaml = p.to_yaml();
        let back = Policy::parse(&yaml, "back.yaml").unwrap();
        assert_eq!(back, p, "{yaml}");
        assert_eq!(back.to_yaml(), yaml, "to_yaml is canonical");
        assert!(yaml.contains("timeout: 5m"), "{yaml}");
    }

    #[test]
    fn rule_yaml_is_a_rules_item() {
        let spec = RuleSpec { reason: Some("ok: once".into()), ..RuleSpec::exact("git", &["push".into(), "a b".into()], Action::Allow) };
        let item = Policy::rule_yaml(&spec);
        assert!(item.starts_with("- command: git\n"), "{item}");
        let p = Policy::parse(&format!("rules:\n{item}"), "t.yaml").unwrap();
        assert_eq!(p.rules()[0].spec(), &spec);
        assert_eq!(p.rules()[0].line, 2);
    }

    #[test]
    fn gated_commands_are_distinct_sorted_names_without_globs() {
        let p = Policy::parse(TEXT, "t.yaml").unwrap();
        assert_eq!(p.gated_commands(), vec!["cargo".to_string(), "git".to_string()]);
    }

    #[test]
    fn prepending_shifts_indexes_and_keeps_lines() {
        let p = Policy::parse(TEXT, "t.yaml").unwrap();
        let q = p.with_rule_prepended(RuleSpec::exact("ls", &[], Action::Allow)).unwrap();
        assert_eq!(q.rules().len(), p.rules().len() + 1);
        assert_eq!((q.rules()[0].index, q.rules()[0].line), (0, 0));
        assert_eq!((q.rules()[1].index, q.rules()[1].line), (1, 5));
        assert_eq!(q.origin(), "t.yaml");
        assert_ne!(q, p);
        let bad = RuleSpec { command: String::new(), ..RuleSpec::default() };
        assert!(matches!(p.with_rule_prepended(bad), Err(PolicyError::InvalidRule { .. })));
    }

    #[test]
    fn cwd_check_normalises_before_matching() {
        let p = Policy::parse(TEXT, "t.yaml").unwrap();
        assert!(p.cwd_allowed(Path::new("/workspace")));
        assert!(p.cwd_allowed(Path::new("/workspace/a/./b/")));
        assert!(!p.cwd_allowed(Path::new("/workspace/../etc")));
        assert!(!p.cwd_allowed(Path::new("workspace/a")));
        assert!(Policy::empty(Action::Deny, "x").cwd_allowed(Path::new("/anywhere")));
    }
}

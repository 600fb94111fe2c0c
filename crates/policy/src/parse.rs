//! Reading a policy file: strict YAML shape first (unknown keys refused with
//! their line and column), then each rule checked and compiled, refused with
//! the rule's line.

use std::fmt;
use std::path::Path;

use serde::Deserialize;

use crate::error::PolicyError;
use crate::lines::rule_lines;
use crate::matcher::check_path_glob;
use crate::model::{Action, DurationText, RuleSpec};
use crate::policy::Policy;
use crate::rule::Rule;

/// The top level of a policy file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    /// Missing means deny, as in Clawrden.
    #[serde(default)]
    default_action: Action,
    #[serde(default)]
    allowed_paths: Vec<CheckedGlob>,
    #[serde(default)]
    env_scrub: Vec<CheckedGlob>,
    #[serde(default)]
    rules: Vec<RawRule>,
}

/// One rule as written; fields stay loose here so that a bad value is
/// reported against the rule's line with the rule named.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    command: String,
    action: String,
    #[serde(default)]
    args: Option<Vec<String>>,
    /// Clawrden's name for `args`.
    #[serde(default)]
    patterns: Option<Vec<String>>,
    #[serde(default)]
    argv: Option<Vec<String>>,
    #[serde(default)]
    cwd: Option<Vec<String>>,
    #[serde(default)]
    timeout: Option<DurationText>,
    #[serde(default)]
    reason: Option<String>,
}

impl RawRule {
    fn into_spec(self) -> Result<RuleSpec, String> {
        let command = self.command;
        let action = self.action.parse::<Action>().map_err(|e| e.to_string())?;
        let args = match (self.args, self.patterns) {
            (Some(_), Some(_)) => return Err("both `args` and `patterns` given; `patterns` is Clawrden's name for `args`, keep one".into()),
            (Some(list), None) => non_empty("args", list)?,
            (None, Some(list)) => non_empty("patterns", list)?,
            (None, None) => Vec::new(),
        };
        let cwd = match self.cwd {
            Some(list) => non_empty("cwd", list)?,
            None => Vec::new(),
        };
        let timeout = match self.timeout {
            Some(DurationText(text)) => Some(clawkeep_core::parse_duration(&text).map_err(|e| format!("`timeout: {text}`: {e}"))?),
            None => None,
        };
        Ok(RuleSpec { command, args, argv: self.argv, cwd, action, timeout, reason: self.reason })
    }
}

fn non_empty(key: &str, list: Vec<String>) -> Result<Vec<String>, String> {
    if list.is_empty() {
        Err(format!("`{key}: []` matches nothing; remove the key to match any"))
    } else {
        Ok(list)
    }
}

/// A path or env-name glob, checked while deserialising so a bad one is
/// reported at its own line and column.
#[derive(Debug)]
struct CheckedGlob(String);

impl<'de> Deserialize<'de> for CheckedGlob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = CheckedGlob;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a glob string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<CheckedGlob, E> {
                check_path_glob(v).map_err(E::custom)?;
                Ok(CheckedGlob(v.to_string()))
            }
        }
        d.deserialize_str(Visit)
    }
}

/// The built-in policy, used when `clawkeep run` gets no `--policy`.
const DEFAULT_YAML: &str = include_str!("../default-policy.yaml");
const DEFAULT_ORIGIN: &str = "builtin:default-policy.yaml";

impl Policy {
    /// Parses policy YAML. `origin` names the text in errors (usually the path).
    pub fn parse(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        let empty = || PolicyError::Invalid {
            origin: origin.to_string(),
            line: 1,
            message: "empty policy; write at least `default_action: deny`".into(),
        };
        if text.trim().is_empty() {
            return Err(empty());
        }
        // `Option` so that a document of only comments, `~` or `---` reads as
        // "nothing", which is refused rather than taken as deny-everything.
        let raw: Option<RawPolicy> = serde_norway::from_str(text).map_err(|e| PolicyError::from_yaml(origin, &e))?;
        let raw = raw.ok_or_else(empty)?;
        let lines = rule_lines(text, raw.rules.len());
        let invalid = |line: usize, message: String| PolicyError::Invalid { origin: origin.to_string(), line, message };
        let mut rules = Vec::with_capacity(raw.rules.len());
        for (index, (raw_rule, line)) in raw.rules.into_iter().zip(lines).enumerate() {
            let name = format!("rules[{index}] (`{}`)", raw_rule.command);
            let rule = raw_rule.into_spec().and_then(|spec| Rule::compile(spec, index, line));
            rules.push(rule.map_err(|why| invalid(line, format!("{name}: {why}")))?);
        }
        let strings = |list: Vec<CheckedGlob>| list.into_iter().map(|g| g.0).collect::<Vec<_>>();
        Policy::from_parts(raw.default_action, strings(raw.allowed_paths), strings(raw.env_scrub), rules, origin.to_string())
            .map_err(|message| invalid(1, message))
    }

    /// Reads and parses a policy file; errors name the path.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Io { path: path.to_path_buf(), source })?;
        Policy::parse(&text, &path.display().to_string())
    }

    /// The built-in default policy (see `default-policy.yaml` in this crate).
    pub fn builtin_default() -> Policy {
        // The embedded file is parsed by a test on every build; should it
        // ever fail anyway, asking a human is the safe reading of "default".
        Policy::parse(DEFAULT_YAML, DEFAULT_ORIGIN).unwrap_or_else(|_| Policy::empty(Action::Ask, DEFAULT_ORIGIN))
    }

    /// The command names the built-in policy gates (what
    /// [`Policy::gated_commands`] gives for it), read off its text without
    /// compiling it: `clawkeep run` needs them before the jail exists, the
    /// compiled policy only once a gated command runs.
    pub fn builtin_gated_commands() -> Vec<String> {
        let names: std::collections::BTreeSet<&str> = DEFAULT_YAML
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("- command:"))
            .map(|c| c.trim().trim_matches(|q| q == '"' || q == '\''))
            .filter(|c| !crate::matcher::has_glob_meta(c))
            .collect();
        names.into_iter().map(str::to_string).collect()
    }

    /// The YAML text of the built-in default policy.
    pub fn default_yaml() -> &'static str {
        DEFAULT_YAML
    }
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;

//! The policy's vocabulary: actions, the YAML form of a rule, requests and
//! decisions. Nothing here matches or parses; see `rule.rs` and `parse.rs`.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What the gate does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Run the command.
    Allow,
    /// Refuse the command. The default, because a missing answer must not
    /// widen what an agent may do.
    #[default]
    Deny,
    /// Hold the command until a human approves or refuses it.
    Ask,
}

impl Action {
    /// Every action, in the order the YAML documentation lists them.
    pub const ALL: [Action; 3] = [Action::Allow, Action::Deny, Action::Ask];

    /// The lowercase name used in YAML and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::Ask => "ask",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A word that is not `allow`, `deny` or `ask`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown action `{0}`; expected allow, deny or ask")]
pub struct UnknownAction(pub String);

impl FromStr for Action {
    type Err = UnknownAction;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Action::ALL.into_iter().find(|a| a.as_str() == s).ok_or_else(|| UnknownAction(s.to_string()))
    }
}

/// The YAML form of one rule, as written in a policy file and as produced by
/// [`crate::Policy::to_yaml`]. [`crate::Policy::parse`] checks more than this
/// type's own `Deserialize` does (both `args` and `patterns`, empty lists, bad
/// patterns), and names the rule's line when it refuses one.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Command name (the basename the shim was called as), or a glob over it.
    pub command: String,
    /// Argument patterns (glob, or `re:` regex); empty means any arguments.
    /// `patterns` is accepted as Clawrden's name for the same key.
    #[serde(default, alias = "patterns", skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// The exact argument list, compared element by element; no patterns.
    /// This is what "approve always" saves (see [`RuleSpec::exact`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<String>>,
    /// Working-directory globs; empty means any directory.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cwd: Vec<String>,
    /// What to do when the rule matches.
    pub action: Action,
    /// How long an allowed command may run.
    #[serde(default, with = "duration_text", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Why the rule exists; shown to the agent and the approver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl RuleSpec {
    /// A rule for exactly `command` with exactly `args`: what "approve
    /// always" records. `command` may be a path; its basename is used.
    ///
    /// Patterns would be wrong here: the literal pattern `push` matches any
    /// single argument `push`, so approving `git push origin main` as
    /// patterns would also approve `git push --force origin main`.
    pub fn exact(command: &str, args: &[String], action: Action) -> RuleSpec {
        RuleSpec { command: crate::matcher::command_name(command).to_string(), argv: Some(args.to_vec()), action, ..RuleSpec::default() }
    }
}

/// One gated command the agent wants to run.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The command as the shim saw it (a name or a path; its basename is matched).
    pub command: &'a str,
    /// Arguments, without the command itself.
    pub args: &'a [String],
    /// The directory the agent ran it from (compared after lexical
    /// normalisation; the caller resolves symlinks).
    pub cwd: &'a Path,
}

/// The policy's answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// What to do.
    pub action: Action,
    /// Position (0-based) of the rule that decided, `None` for the default
    /// action or a cwd refusal.
    pub rule: Option<usize>,
    /// Line (1-based) of that rule in the policy file, when it came from one.
    pub line: Option<usize>,
    /// One line for the agent and the approver.
    pub reason: String,
    /// The deciding rule's timeout, if it set one.
    pub timeout: Option<Duration>,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.action, self.reason)
    }
}

/// A decision and how it was reached, for `clawkeep policy explain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The same decision [`crate::Policy::evaluate`] returns.
    pub decision: Decision,
    /// One line per check made: the cwd check when it refuses, each rule
    /// considered (matched, or why not), and the default action if reached.
    pub steps: Vec<String>,
}

/// Formats a duration in the largest unit that keeps it exact, in the syntax
/// `clawkeep_core::parse_duration` reads. Sub-millisecond parts round up to
/// a whole millisecond, because the parser has no smaller unit.
pub(crate) fn format_duration(d: Duration) -> String {
    let sub_ms = d.subsec_nanos() % 1_000_000 != 0;
    let ms = d.as_millis().saturating_add(u128::from(sub_ms)).max(1);
    if ms % 1000 != 0 {
        return format!("{ms}ms");
    }
    let secs = ms / 1000;
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if secs % size == 0 {
            return format!("{}{unit}", secs / size);
        }
    }
    format!("{secs}s")
}

/// Serde glue for `timeout: 5m` (a string, or a bare number of seconds).
pub(crate) mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&super::format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let Some(text) = Option::<super::DurationText>::deserialize(d)? else {
            return Ok(None);
        };
        clawkeep_core::parse_duration(&text.0).map(Some).map_err(serde::de::Error::custom)
    }
}

/// A duration as written: `5m`, `"90s"`, or a bare number of seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DurationText(pub(crate) String);

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = DurationText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 30s, 5m or 1h30m")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DurationText, E> {
                Ok(DurationText(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<DurationText, E> {
                Ok(DurationText(v.to_string()))
            }
        }
        d.deserialize_any(Visit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_names_round_trip() {
        for a in Action::ALL {
            assert_eq!(a.to_string().parse::<Action>(), Ok(a));
        }
        assert_eq!("maybe".parse::<Action>(), Err(UnknownAction("maybe".into())));
        assert!("Allow".parse::<Action>().is_err(), "action names are lowercase only");
    }

    #[test]
    fn durations_format_in_the_largest_exact_unit() {
        let cases = [
            (Duration::from_secs(300), "5m"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(7200), "2h"),
            (Duration::from_secs(86_400 * 3), "3d"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_nanos(1), "1ms"),
            (Duration::ZERO, "1ms"),
        ];
        for (d, want) in cases {
            assert_eq!(format_duration(d), want);
        }
    }

    #[test]
    fn formatted_durations_parse_back() {
        for ms in [1u64, 999, 1000, 59_000, 60_000, 3_600_000, 86_400_000, 90_061_001] {
            let d = Duration::from_millis(ms);
            assert_eq!(clawkeep_core::parse_duration(&format_duration(d)).ok(), Some(d));
        }
    }

    #[test]
    fn exact_rule_uses_the_basename_and_the_whole_argv() {
        let args = vec!["push".to_string(), "origin".to_string()];
        let spec = RuleSpec::exact("/usr/bin/git", &args, Action::Allow);
        assert_eq!(spec.command, "git");
        assert_eq!(spec.argv, Some(args));
        assert!(spec.args.is_empty());
    }
}

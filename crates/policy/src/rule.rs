//! A compiled rule: the YAML form plus its matchers, checked once at load.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use crate::matcher::{match_args, ArgPattern, CommandMatcher, PathGlobs};
use crate::model::{Action, Decision, RuleSpec};

/// One rule of a loaded policy. Every pattern in it compiled when the policy
/// was loaded, so evaluation cannot fail.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Position in the policy (0-based); `Decision::rule` refers to it.
    pub index: usize,
    /// Line (1-based) of the rule's `- ` item in the policy file; 0 for a rule
    /// that did not come from a file (see [`crate::Policy::with_rule_prepended`]).
    pub line: usize,
    /// The `command` as written (a name or a glob).
    pub command: String,
    /// What to do when it matches.
    pub action: Action,
    /// How long an allowed command may run.
    pub timeout: Option<Duration>,
    /// Why the rule exists.
    pub reason: Option<String>,
    spec: RuleSpec,
    command_matcher: CommandMatcher,
    args: Vec<ArgPattern>,
    cwd: PathGlobs,
}

/// Why a rule did not match a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Miss {
    Command,
    Argv,
    Args,
    Cwd,
}

/// What made a rule match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hit<'a> {
    /// The rule has no argument constraint.
    AnyArgs,
    /// `argv` equals the request's arguments.
    Argv,
    /// `pattern` matched `subject` (the joined string or one argument).
    Pattern { pattern: &'a str, subject: &'a str },
}

impl Rule {
    /// Compiles `spec`; the error says which field is wrong and why.
    pub(crate) fn compile(spec: RuleSpec, index: usize, line: usize) -> Result<Rule, String> {
        let command_matcher = CommandMatcher::compile(&spec.command)?;
        if spec.argv.is_some() && !spec.args.is_empty() {
            return Err("both `argv` (exact arguments) and `args` (patterns) given; keep one".into());
        }
        let args = spec.args.iter().map(|p| ArgPattern::compile(p)).collect::<Result<Vec<_>, _>>()?;
        let cwd = PathGlobs::compile(&spec.cwd).map_err(|e| format!("`cwd`: {e}"))?;
        if spec.timeout.is_some_and(|t| t.is_zero()) {
            return Err("`timeout` must be positive".into());
        }
        Ok(Rule {
            index,
            line,
            command: spec.command.clone(),
            action: spec.action,
            timeout: spec.timeout,
            reason: spec.reason.clone(),
            spec,
            command_matcher,
            args,
            cwd,
        })
    }

    /// The rule in its YAML form.
    pub fn spec(&self) -> &RuleSpec {
        &self.spec
    }

    /// Whether `command` is a glob rather than one command name.
    pub fn is_glob(&self) -> bool {
        self.command_matcher.is_glob()
    }

    /// Checks the rule against a request. `name` is the command's basename,
    /// `joined` the arguments joined by spaces, `cwd` already normalised.
    pub(crate) fn check<'a>(&'a self, name: &str, args: &'a [String], joined: &'a str, cwd: &Path) -> Result<Hit<'a>, Miss> {
        if !self.command_matcher.is_match(name) {
            return Err(Miss::Command);
        }
        if !self.cwd.is_empty() && !self.cwd.is_match(cwd) {
            return Err(Miss::Cwd);
        }
        if let Some(argv) = &self.spec.argv {
            return if argv.as_slice() == args { Ok(Hit::Argv) } else { Err(Miss::Argv) };
        }
        if self.args.is_empty() {
            return Ok(Hit::AnyArgs);
        }
        match match_args(&self.args, joined, args) {
            Some((p, subject)) => Ok(Hit::Pattern { pattern: p.text(), subject }),
            None => Err(Miss::Args),
        }
    }

    /// The decision this rule gives when it matches.
    pub(crate) fn decision(&self) -> Decision {
        let reason = match &self.reason {
            Some(r) => r.clone(),
            None => format!("matched {self}"),
        };
        Decision { action: self.action, rule: Some(self.index), line: (self.line > 0).then_some(self.line), reason, timeout: self.timeout }
    }

    /// Explains a miss in one phrase.
    pub(crate) fn describe_miss(&self, miss: Miss, name: &str, joined: &str, cwd: &Path) -> String {
        match miss {
            Miss::Command => format!("command `{name}` is not `{}`", self.command),
            Miss::Cwd => format!("cwd {} matches none of {:?}", cwd.display(), self.spec.cwd),
            Miss::Argv => format!("arguments `{joined}` are not exactly {:?}", self.spec.argv.as_deref().unwrap_or_default()),
            Miss::Args => format!("no pattern of {:?} matches `{joined}` or any single argument", self.spec.args),
        }
    }
}

impl fmt::Display for Rule {
    /// `rules[3] (line 12, git, ask)`: how messages name a rule.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rules[{}] (", self.index)?;
        if self.line > 0 {
            write!(f, "line {}, ", self.line)?;
        }
        write!(f, "{}, {})", self.command, self.action)
    }
}

impl fmt::Display for Hit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hit::AnyArgs => f.write_str("no argument constraint"),
            Hit::Argv => f.write_str("arguments equal `argv` exactly"),
            Hit::Pattern { pattern, subject } => write!(f, "pattern {pattern:?} matches {subject:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn spec(command: &str, args: &[&str], action: Action) -> RuleSpec {
        RuleSpec { command: command.into(), args: args.iter().map(|s| s.to_string()).collect(), action, ..RuleSpec::default() }
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn check_reports_the_first_failing_condition() {
        let mut s = spec("git", &["push *"], Action::Ask);
        s.cwd = vec!["/workspace/**".into()];
        let rule = Rule::compile(s, 0, 3).unwrap();
        let ws = PathBuf::from("/workspace/repo");
        let args = strings(&["push", "origin"]);
        let joined = args.join(" ");
        assert_eq!(rule.check("npm", &args, &joined, &ws), Err(Miss::Command));
        assert_eq!(rule.check("git", &args, &joined, Path::new("/etc")), Err(Miss::Cwd));
        assert_eq!(rule.check("git", &args, &joined, &ws), Ok(Hit::Pattern { pattern: "push *", subject: "push origin" }));
        let args = strings(&["status"]);
        assert_eq!(rule.check("git", &args, "status", &ws), Err(Miss::Args));
    }

    #[test]
    fn argv_rules_need_the_exact_argument_list() {
        let rule = Rule::compile(RuleSpec::exact("git", &strings(&["push", "origin"]), Action::Allow), 0, 0).unwrap();
        let cwd = Path::new("/");
        let exact = strings(&["push", "origin"]);
        assert_eq!(rule.check("git", &exact, "push origin", cwd), Ok(Hit::Argv));
        let joined_alike = strings(&["push origin"]);
        assert_eq!(rule.check("git", &joined_alike, "push origin", cwd), Err(Miss::Argv));
        let longer = strings(&["push", "origin", "--force"]);
        assert_eq!(rule.check("git", &longer, "push origin --force", cwd), Err(Miss::Argv));
    }

    #[test]
    fn compile_refuses_what_cannot_be_matched() {
        assert!(Rule::compile(spec("", &[], Action::Allow), 0, 1).is_err());
        assert!(Rule::compile(spec("git", &["re:(unclosed"], Action::Allow), 0, 1).is_err());
        let mut both = spec("git", &["push"], Action::Allow);
        both.argv = Some(vec![]);
        assert!(Rule::compile(both, 0, 1).unwrap_err().contains("both `argv`"));
        let mut zero = spec("git", &[], Action::Allow);
        zero.timeout = Some(Duration::ZERO);
        assert!(Rule::compile(zero, 0, 1).is_err());
    }

    #[test]
    fn decisions_name_the_rule_when_it_has_no_reason() {
        let rule = Rule::compile(spec("git", &[], Action::Deny), 2, 9).unwrap();
        let d = rule.decision();
        assert_eq!((d.action, d.rule, d.line), (Action::Deny, Some(2), Some(9)));
        assert_eq!(d.reason, "matched rules[2] (line 9, git, deny)");
        let unsourced = Rule::compile(spec("git", &[], Action::Deny), 0, 0).unwrap();
        assert_eq!(unsourced.decision().line, None);
    }
}

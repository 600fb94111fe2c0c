//! Evaluation: the cwd check, then rules in file order, first match wins,
//! then `default_action`. Pure and deterministic: the same policy and request
//! always give the same decision.

use crate::matcher::{command_name, normalize};
use crate::model::{Action, Decision, Explanation, Request};
use crate::policy::Policy;

impl Policy {
    /// Decides what to do with `req`.
    pub fn evaluate(&self, req: &Request<'_>) -> Decision {
        self.decide(req, None)
    }

    /// Decides, and records each check made on the way.
    pub fn explain(&self, req: &Request<'_>) -> Explanation {
        let mut steps = Vec::new();
        let decision = self.decide(req, Some(&mut steps));
        Explanation { decision, steps }
    }

    fn decide(&self, req: &Request<'_>, mut steps: Option<&mut Vec<String>>) -> Decision {
        let mut note = |text: String| {
            if let Some(steps) = steps.as_deref_mut() {
                steps.push(text);
            }
        };
        let cwd = normalize(req.cwd);
        if !self.cwd_allowed(&cwd) {
            let reason = format!("cwd {} is outside allowed_paths [{}]", cwd.display(), self.allowed_paths.join(", "));
            note(format!("cwd check: {reason}; no rule consulted"));
            return Decision { action: Action::Deny, rule: None, line: None, reason, timeout: None };
        }
        let name = command_name(req.command);
        let joined = req.args.join(" ");
        for rule in &self.rules {
            match rule.check(name, req.args, &joined, &cwd) {
                Ok(hit) => {
                    note(format!("{rule}: matches ({hit})"));
                    return rule.decision();
                }
                Err(miss) => note(format!("{rule}: no match: {}", rule.describe_miss(miss, name, &joined, &cwd))),
            }
        }
        let reason = format!("no rule matched; default_action: {}", self.default_action);
        note(reason.clone());
        Decision { action: self.default_action, rule: None, line: None, reason, timeout: None }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;

    const TEXT: &str = "\
default_action: deny
allowed_paths: [\"/workspace/**\"]
rules:
  - command: git
    args: [\"re:^push\\\\b.*--force\"]
    action: deny
    reason: no force pushes
  - command: git
    args: [\"push *\"]
    action: ask
    timeout: 10m
  - command: git
    action: allow
";

    fn req<'a>(command: &'a str, args: &'a [String], cwd: &'a str) -> Request<'a> {
        Request { command, args, cwd: Path::new(cwd) }
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn first_matching_rule_decides() {
        let p = Policy::parse(TEXT, "t.yaml").unwrap();
        let force = strings(&["push", "origin", "--force"]);
        let d = p.evaluate(&req("git", &force, "/workspace"));
        assert_eq!((d.action, d.rule, d.line, d.reason.as_str()), (Action::Deny, Some(0), Some(4), "no force pushes"));
        let push = strings(&["push", "origin"]);
        let d = p.evaluate(&req("/usr/bin/git", &push, "/workspace/r"));
        assert_eq!((d.action, d.rule, d.timeout), (Action::Ask, Some(1), Some(Duration::from_secs(600))));
        let d = p.evaluate(&req("git", &strings(&["status"]), "/workspace"));
        assert_eq!((d.action, d.rule, d.line), (Action::Allow, Some(2), Some(12)));
    }

    #[test]
    fn cwd_outside_allowed_paths_is_denied_before_rules() {
        let p = Policy::parse(TEXT, "t.yaml").unwrap();
        let e = p.explain(&req("git", &strings(&["status"]), "/workspace/../etc"));
        assert_eq!((e.decision.action, e.decision.rule), (Action::Deny, None));
        assert_eq!(e.decision.reason, "cwd /etc is outside allowed_paths [/workspace/**]");
        assert_eq!(e.steps.len(), 1);
    }

    #[test]
    fn explain_lists_every_rule_considered() {
        let p = Policy::parse(TEXT, "t.yaml").unwrap();
        let e = p.explain(&req("npm", &strings(&["test"]), "/workspace"));
        assert_eq!(e.decision.reason, "no rule matched; default_action: deny");
        assert_eq!(e.steps.len(), 4, "{:#?}", e.steps);
        assert_eq!(e.steps[0], "rules[0] (line 4, git, deny): no match: command `npm` is not `git`");
        let e = p.explain(&req("git", &strings(&["push", "o"]), "/workspace"));
        assert_eq!(
            e.steps,
            [
                "rules[0] (line 4, git, deny): no match: no pattern of [\"re:^push\\\\b.*--force\"] matches `push o` or any single argument",
                "rules[1] (line 8, git, ask): matches (pattern \"push *\" matches \"push o\")",
            ]
        );
        assert_eq!(e.decision, p.evaluate(&req("git", &strings(&["push", "o"]), "/workspace")));
    }
}

#![allow(clippy::unwrap_used, clippy::expect_used)]
//! How a loaded policy decides: order, defaults, patterns, paths, timeouts.

use std::path::Path;
use std::time::Duration;

use clawkeep_policy::{Action, Decision, Policy, Request, RuleSpec};

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn decide(p: &Policy, command: &str, args: &[&str], cwd: &str) -> Decision {
    let args = strings(args);
    p.evaluate(&Request { command, args: &args, cwd: Path::new(cwd) })
}

fn action(p: &Policy, command: &str, args: &[&str]) -> Action {
    decide(p, command, args, "/workspace").action
}

const ORDERED: &str = r#"
default_action: ask
rules:
  - command: git
    args: ["push *"]
    action: deny
    reason: first
  - command: git
    args: ["push *"]
    action: allow
    reason: second, never reached for push
  - command: git
    action: allow
"#;

#[test]
fn first_match_wins_in_file_order() {
    let p = Policy::parse(ORDERED, "ordered.yaml").unwrap();
    let d = decide(&p, "git", &["push", "origin"], "/");
    assert_eq!((d.action, d.rule, d.line, d.reason.as_str()), (Action::Deny, Some(0), Some(4), "first"));
    let d = decide(&p, "git", &["status"], "/");
    assert_eq!((d.action, d.rule, d.line), (Action::Allow, Some(2), Some(12)));
}

#[test]
fn default_action_applies_when_nothing_matches() {
    for (word, want) in [("allow", Action::Allow), ("deny", Action::Deny), ("ask", Action::Ask)] {
        let p = Policy::parse(&format!("default_action: {word}\nrules:\n  - command: git\n    action: deny\n"), "d").unwrap();
        let d = decide(&p, "npm", &["test"], "/");
        assert_eq!((d.action, d.rule, d.line, d.timeout), (want, None, None, None));
        assert_eq!(d.reason, format!("no rule matched; default_action: {word}"));
    }
}

const PATTERNS: &str = r#"
default_action: deny
rules:
  - command: git
    args: ["re:^push\\b.*--force"]
    action: deny
    reason: regex on the joined string
  - command: rm
    args: ["-rf"]
    action: deny
    reason: literal on one argument
  - command: git
    args: ["push *"]
    action: ask
    reason: glob on the joined string
  - command: cat
    args: ["*.md", "/workspace/**"]
    action: allow
    reason: glob on one argument, crossing slashes
  - command: "python3*"
    action: ask
"#;

#[test]
fn args_match_by_glob_regex_or_single_argument() {
    let p = Policy::parse(PATTERNS, "patterns.yaml").unwrap();
    assert_eq!(action(&p, "git", &["push", "origin", "main", "--force"]), Action::Deny);
    assert_eq!(action(&p, "git", &["push", "--force-with-lease"]), Action::Deny, "regexes are searched, not anchored at the end");
    assert_eq!(action(&p, "git", &["push", "origin"]), Action::Ask);
    assert_eq!(action(&p, "git", &["fetch", "--force"]), Action::Deny, "the default");
    assert_eq!(action(&p, "rm", &["-rf", "build"]), Action::Deny, "-rf matches one argument");
    assert_eq!(action(&p, "rm", &["build", "-rf"]), Action::Deny);
    assert_eq!(action(&p, "rm", &["-r", "-f", "build"]), Action::Deny, "default: `-rf` is a literal");
    assert_eq!(decide(&p, "rm", &["-r", "-f"], "/").rule, None);
    assert_eq!(action(&p, "cat", &["docs/README.md"]), Action::Allow, "* crosses /");
    assert_eq!(action(&p, "cat", &["-n", "/workspace/a/b.rs"]), Action::Allow);
    assert_eq!(decide(&p, "cat", &["/etc/passwd"], "/").rule, None);
    assert_eq!(action(&p, "python3.12", &["x.py"]), Action::Ask, "command globs");
    assert_eq!(action(&p, "/usr/bin/python3", &[]), Action::Ask, "paths are matched by basename");
}

#[test]
fn rule_cwd_globs_limit_where_a_rule_applies() {
    let text = "default_action: deny\nrules:\n  - command: make\n    cwd: [\"/workspace/**\"]\n    action: allow\n  - command: make\n    action: ask\n";
    let p = Policy::parse(text, "cwd.yaml").unwrap();
    assert_eq!(decide(&p, "make", &[], "/workspace").action, Action::Allow);
    assert_eq!(decide(&p, "make", &[], "/workspace/sub/dir").action, Action::Allow);
    assert_eq!(decide(&p, "make", &[], "/srv").action, Action::Ask);
    assert_eq!(decide(&p, "make", &[], "/workspace/../srv").action, Action::Ask, "cwd is normalised first");
}

#[test]
fn a_cwd_outside_allowed_paths_is_denied_before_any_rule() {
    let text = "default_action: allow\nallowed_paths: [\"/workspace/**\", \"/tmp/**\"]\nrules:\n  - command: ls\n    action: allow\n";
    let p = Policy::parse(text, "paths.yaml").unwrap();
    let d = decide(&p, "ls", &[], "/etc");
    assert_eq!((d.action, d.rule, d.line), (Action::Deny, None, None));
    assert_eq!(d.reason, "cwd /etc is outside allowed_paths [/workspace/**, /tmp/**]");
    assert_eq!(decide(&p, "ls", &[], "/tmp/x").action, Action::Allow);
    assert_eq!(decide(&p, "ls", &[], "/workspace").action, Action::Allow);
    assert_eq!(decide(&p, "ls", &[], "/workspace-evil").action, Action::Deny);
    assert!(!p.cwd_allowed(Path::new("/tmp/../root")));
}

#[test]
fn timeouts_are_parsed_and_returned_with_the_decision() {
    let text = "rules:\n  - {command: a, action: allow, timeout: 5m}\n  - {command: b, action: allow, timeout: 1h30m}\n  - {command: c, action: allow, timeout: 45}\n  - {command: d, action: allow}\n";
    let p = Policy::parse(text, "t.yaml").unwrap();
    let t = |c| decide(&p, c, &[], "/").timeout;
    assert_eq!(t("a"), Some(Duration::from_secs(300)));
    assert_eq!(t("b"), Some(Duration::from_secs(5400)));
    assert_eq!(t("c"), Some(Duration::from_secs(45)), "a bare number is seconds");
    assert_eq!(t("d"), None);
    assert_eq!(p.rules()[1].line, 3, "flow-style rules still get their lines");
}

#[test]
fn gated_commands_lists_named_commands_once() {
    let p = Policy::parse(PATTERNS, "patterns.yaml").unwrap();
    assert_eq!(p.gated_commands(), strings(&["cat", "git", "rm"]));
    assert!(Policy::builtin_default().gated_commands().contains(&"git".to_string()));
}

#[test]
fn scrub_env_removes_the_fixed_list_and_the_policy_globs() {
    let p = Policy::parse("env_scrub: [\"AWS_*\", NPM_TOKEN, \"*_SECRET\"]\n", "env.yaml").unwrap();
    let names = [
        "PATH",
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "LD_AUDIT",
        "DOCKER_HOST",
        "KUBECONFIG",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "NPM_TOKEN",
        "APP_SECRET",
        "HOME",
        "LANG",
    ];
    let mut env: Vec<(String, String)> = names.iter().map(|n| (n.to_string(), format!("value-of-{n}"))).collect();
    p.scrub_env(&mut env);
    let kept: Vec<&str> = env.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(kept, ["PATH", "HOME", "LANG"]);
    assert_eq!(env[0].1, "value-of-PATH", "kept values are untouched");
}

#[test]
fn to_yaml_round_trips_to_the_same_decisions() {
    let requests: &[(&str, &[&str], &str)] = &[
        ("git", &["push", "origin", "--force"], "/workspace"),
        ("git", &["push", "origin"], "/workspace"),
        ("git", &["status"], "/workspace"),
        ("rm", &["-rf", "/"], "/workspace"),
        ("cat", &["README.md"], "/tmp"),
        ("npm", &["install"], "/workspace/app"),
        ("python3.11", &[], "/etc"),
        ("cargo", &["install", "ripgrep"], "/workspace"),
        ("sudo", &["ls"], "/"),
    ];
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/policies");
    let mut policies = vec![Policy::builtin_default(), Policy::parse(PATTERNS, "p").unwrap()];
    for name in ["coding-agent.yaml", "read-only-explorer.yaml", "clawrden-compat.yaml"] {
        policies.push(Policy::load(&dir.join(name)).unwrap());
    }
    for p in policies {
        let back = Policy::parse(&p.to_yaml(), "round-trip.yaml").unwrap();
        assert_eq!(back, p, "{}", p.origin());
        for (command, args, cwd) in requests {
            let (a, b) = (decide(&p, command, args, cwd), decide(&back, command, args, cwd));
            // Reasons may differ only in line numbers, which the canonical layout changes.
            assert_eq!((a.action, a.rule, a.timeout), (b.action, b.rule, b.timeout), "{command} {args:?}");
        }
    }
}

#[test]
fn an_always_rule_allows_exactly_one_command_line() {
    let p = Policy::builtin_default();
    assert_eq!(action(&p, "git", &["push", "origin", "main"]), Action::Ask);
    let always =
        RuleSpec { reason: Some("approved always".into()), ..RuleSpec::exact("git", &strings(&["push", "origin", "main"]), Action::Allow) };
    let q = p.with_rule_prepended(always).unwrap();
    let d = decide(&q, "git", &["push", "origin", "main"], "/workspace");
    assert_eq!((d.action, d.rule, d.line, d.reason.as_str()), (Action::Allow, Some(0), None, "approved always"));
    assert_eq!(action(&q, "git", &["push", "origin", "main", "--force"]), Action::Deny);
    assert_eq!(action(&q, "git", &["push", "origin"]), Action::Ask);
    assert_eq!(action(&q, "git", &["push origin main"]), Action::Ask, "one argument with spaces is not the same command line");
    let yaml = q.to_yaml();
    assert!(yaml.contains("argv:"), "{yaml}");
    assert_eq!(Policy::parse(&yaml, "saved.yaml").unwrap(), q);
}

#[test]
fn the_builtin_policy_is_sensible_for_a_coding_agent() {
    let p = Policy::builtin_default();
    assert_eq!(p.default_action(), Action::Ask);
    assert_eq!(action(&p, "git", &["status"]), Action::Allow);
    assert_eq!(action(&p, "git", &["log", "--oneline", "-5"]), Action::Allow);
    assert_eq!(action(&p, "git", &["diff", "HEAD~1"]), Action::Allow);
    assert_eq!(action(&p, "git", &["push"]), Action::Ask);
    assert_eq!(action(&p, "git", &["push", "origin", "main"]), Action::Ask);
    for force in [&["push", "--force"][..], &["push", "-f", "origin"], &["push", "origin", "+main"], &["push", "--force-with-lease"]] {
        assert_eq!(action(&p, "git", force), Action::Deny, "{force:?}");
    }
    assert_eq!(action(&p, "git", &["push", "--follow-tags"]), Action::Ask);
    assert_eq!(action(&p, "git", &["rm", "-r", "log"]), Action::Ask, "an argument named `log` does not make rm read-only");
    assert_eq!(action(&p, "git", &["-c", "core.pager=sh", "log"]), Action::Ask);
    assert_eq!(action(&p, "npm", &["install", "left-pad"]), Action::Ask);
    assert_eq!(action(&p, "cargo", &["install", "ripgrep"]), Action::Ask);
    assert_eq!(action(&p, "sudo", &["ls"]), Action::Deny);
    assert_eq!(action(&p, "make", &[]), Action::Ask);
}

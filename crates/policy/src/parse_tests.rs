use std::time::Duration;

use super::*;

fn parse_err(text: &str) -> PolicyError {
    Policy::parse(text, "p.yaml").unwrap_err()
}

#[test]
fn a_minimal_policy_defaults_to_deny() {
    let p = Policy::parse("rules: []\n", "p.yaml").unwrap();
    assert_eq!(p.default_action(), Action::Deny);
    assert!(p.rules().is_empty() && p.allowed_paths().is_empty() && p.env_scrub().is_empty());
}

#[test]
fn empty_documents_are_refused() {
    for text in ["", "  \n", "# only a comment\n", "~\n", "---\n", "---\n...\n", "null"] {
        let e = parse_err(text);
        assert_eq!(e.to_string(), "p.yaml:1: empty policy; write at least `default_action: deny`", "{text:?}");
    }
}

#[test]
fn rule_fields_are_read() {
    let text = "rules:\n  - command: git\n    patterns: [\"push *\"]\n    cwd: [/w/**]\n    action: ask\n    timeout: 90\n    reason: r\n";
    let p = Policy::parse(text, "p.yaml").unwrap();
    let r = &p.rules()[0];
    assert_eq!((r.index, r.line, r.command.as_str(), r.action), (0, 2, "git", Action::Ask));
    assert_eq!(r.timeout, Some(Duration::from_secs(90)));
    assert_eq!(r.reason.as_deref(), Some("r"));
    assert_eq!(r.spec().args, vec!["push *".to_string()], "patterns is read as args");
    assert_eq!(r.spec().cwd, vec!["/w/**".to_string()]);
}

#[test]
fn unknown_top_level_key_names_its_position() {
    let e = parse_err("default_action: deny\nrulez: []\n");
    assert!(e.to_string().starts_with("p.yaml:2:1: unknown field `rulez`, expected one of"), "{e}");
}

#[test]
fn unknown_rule_key_names_its_position() {
    let e = parse_err("rules:\n  - command: git\n    action: allow\n    comand: x\n");
    let PolicyError::Parse { line, column, message, .. } = e else { panic!() };
    assert_eq!((line, column), (4, 5));
    assert!(message.contains("unknown field `comand`"), "{message}");
}

#[test]
fn rule_errors_name_the_rule_line() {
    let cases = [
        ("action: maybe", "unknown action `maybe`"),
        ("action: allow\n    args: [\"re:(\"]", "invalid regex `re:(`"),
        ("action: allow\n    args: [\"[z-a\"]", "invalid glob `[z-a`"),
        ("action: allow\n    cwd: [\"/w/[\"]", "`cwd`: invalid glob"),
        ("action: allow\n    timeout: 5 minutes", "`timeout: 5 minutes`"),
        ("action: allow\n    timeout: 0s", "`timeout: 0s`"),
        ("action: allow\n    args: []", "`args: []` matches nothing"),
        ("action: allow\n    args: [a]\n    patterns: [b]", "both `args` and `patterns`"),
        ("action: allow\n    args: [a]\n    argv: [b]", "both `argv`"),
    ];
    for (body, want) in cases {
        let text = format!("default_action: deny\nrules:\n  - command: ls\n    action: allow\n  - command: git\n    {body}\n");
        let e = parse_err(&text);
        let PolicyError::Invalid { line, ref message, .. } = e else { panic!("{body}: {e:?}") };
        assert_eq!(line, 5, "{body}: {e}");
        assert!(message.starts_with("rules[1] (`git`): "), "{message}");
        assert!(message.contains(want), "{body}: {message}");
    }
}

#[test]
fn empty_command_is_refused_with_its_line() {
    let e = parse_err("rules:\n\n  - command: \"\"\n    action: deny\n");
    assert_eq!(e.to_string(), "p.yaml:3: rules[0] (``): empty `command`; name the command this rule gates");
}

#[test]
fn bad_top_level_globs_name_the_entry() {
    let e = parse_err("allowed_paths:\n  - /ok/**\n  - \"/bad/[\"\n");
    let PolicyError::Parse { line, column, ref message, .. } = e else { panic!("{e:?}") };
    assert_eq!((line, column), (3, 5), "{e}");
    assert!(message.contains("invalid glob `/bad/[`"), "{message}");
    let e = parse_err("env_scrub: [\"A_{\"]\n");
    assert!(e.to_string().starts_with("p.yaml:1:13: env_scrub[0]: invalid glob"), "{e}");
}

#[test]
fn wrong_shapes_are_parse_errors() {
    for text in ["- a\n- b\n", "rules: git\n", "rules:\n  - git\n", "default_action: [allow]\n"] {
        assert!(matches!(parse_err(text), PolicyError::Parse { .. }), "{text}");
    }
}

#[test]
fn builtin_default_parses_and_asks_by_default() {
    let p = Policy::parse(Policy::default_yaml(), DEFAULT_ORIGIN).unwrap();
    assert_eq!(p, Policy::builtin_default());
    assert_eq!(p.default_action(), Action::Ask);
    assert!(p.rules().len() > 5);
    assert!(p.rules().iter().all(|r| r.reason.is_some()), "every built-in rule explains itself");
}

#[test]
fn builtin_gated_commands_are_the_compiled_policys() {
    let names = Policy::builtin_gated_commands();
    assert_eq!(names, Policy::builtin_default().gated_commands());
    assert!(names.iter().any(|n| n == "git") && names.iter().any(|n| n == "curl"), "{names:?}");
}

#[test]
fn load_reports_missing_files_with_the_path() {
    let e = Policy::load(Path::new("/nonexistent/clawkeep/policy.yaml")).unwrap_err();
    assert!(matches!(e, PolicyError::Io { .. }));
    assert!(e.to_string().starts_with("/nonexistent/clawkeep/policy.yaml: cannot read policy: "), "{e}");
}

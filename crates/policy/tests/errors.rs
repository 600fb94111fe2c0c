#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A bad policy file is refused with the file, line (and column) to fix.

use clawkeep_policy::{Policy, PolicyError};

/// Writes `text` to a temp file and loads it, so errors carry a real path.
fn load(text: &str) -> (tempfile::TempDir, String, PolicyError) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.yaml");
    std::fs::write(&path, text).unwrap();
    let err = Policy::load(&path).unwrap_err();
    let shown = path.display().to_string();
    (dir, shown, err)
}

const GOOD_HEAD: &str = "\
default_action: deny
allowed_paths: [\"/workspace/**\"]
rules:
  - command: ls
    action: allow

  - command: git
    args: [\"push *\"]
";

#[test]
fn unknown_key_in_a_rule_names_file_line_and_column() {
    let (_dir, path, e) = load(&format!("{GOOD_HEAD}    action: ask\n    reasn: typo\n"));
    let PolicyError::Parse { ref origin, line, column, ref message } = e else { panic!("{e:?}") };
    assert_eq!((origin.as_str(), line, column), (path.as_str(), 10, 5));
    assert!(message.contains("unknown field `reasn`, expected one of"), "{message}");
    assert!(e.to_string().starts_with(&format!("{path}:10:5: ")), "{e}");
}

#[test]
fn unknown_top_level_key_names_file_line_and_column() {
    let e = Policy::parse("default_action: deny\n\n  \nenv_scrubs: []\n", "policy.yaml").unwrap_err();
    assert!(e.to_string().starts_with("policy.yaml:4:1: unknown field `env_scrubs`, expected one of"), "{e}");
}

#[test]
fn unknown_action_names_the_rule_line() {
    let (_dir, path, e) = load(&format!("{GOOD_HEAD}    action: maybe\n"));
    assert_eq!(e.to_string(), format!("{path}:7: rules[1] (`git`): unknown action `maybe`; expected allow, deny or ask"));
}

#[test]
fn bad_regex_names_the_rule_line() {
    let text = format!("{GOOD_HEAD}    action: ask\n  - command: rm\n    args: [\"re:-rf(\"]\n    action: deny\n");
    let (_dir, path, e) = load(&text);
    let PolicyError::Invalid { line, ref message, .. } = e else { panic!("{e:?}") };
    assert_eq!(line, 10);
    assert!(message.starts_with("rules[2] (`rm`): invalid regex `re:-rf(`: "), "{message}");
    assert!(e.to_string().starts_with(&format!("{path}:10: ")), "{e}");
    assert!(!e.to_string().contains('\n'), "one line: {e}");
}

#[test]
fn bad_timeout_and_bad_glob_name_the_rule_line() {
    let text = format!("{GOOD_HEAD}    action: ask\n    timeout: 5 parsecs\n");
    let (_dir, path, e) = load(&text);
    let PolicyError::Invalid { line, ref message, .. } = e else { panic!("{e:?}") };
    assert_eq!(line, 7, "{e}");
    // The duration parser's own words belong to clawkeep-core; check the frame.
    assert!(message.starts_with("rules[1] (`git`): `timeout: 5 parsecs`: invalid duration"), "{message}");
    assert!(e.to_string().starts_with(&format!("{path}:7: ")), "{e}");
    let text = "rules:\n  - command: ls\n    action: allow\n  - command: cat\n    cwd: [\"/w/{a\"]\n    action: allow\n";
    let e = Policy::parse(text, "policy.yaml").unwrap_err();
    assert!(e.to_string().starts_with("policy.yaml:4: rules[1] (`cat`): `cwd`: invalid glob `/w/{a`"), "{e}");
}

#[test]
fn patterns_and_args_together_are_refused() {
    let text = "rules:\n  - command: git\n    action: deny\n    args: [\"push -f\"]\n    patterns: [\"push --force\"]\n";
    let e = Policy::parse(text, "policy.yaml").unwrap_err();
    assert!(matches!(e, PolicyError::Invalid { line: 2, .. }), "{e:?}");
    assert!(e.to_string().contains("both `args` and `patterns`"), "{e}");
}

#[test]
fn empty_and_path_commands_are_refused() {
    let e = Policy::parse("rules:\n  - command: \" \"\n    action: deny\n", "policy.yaml").unwrap_err();
    assert!(e.to_string().starts_with("policy.yaml:2: rules[0] (` `): empty `command`"), "{e}");
    let e = Policy::parse("rules:\n  - command: /bin/rm\n    action: deny\n", "policy.yaml").unwrap_err();
    assert!(e.to_string().contains("is a path"), "{e}");
}

#[test]
fn missing_required_rule_keys_are_refused() {
    let e = Policy::parse("rules:\n  - command: ls\n", "policy.yaml").unwrap_err();
    assert!(e.to_string().contains("missing field `action`"), "{e}");
    let e = Policy::parse("rules:\n  - action: allow\n", "policy.yaml").unwrap_err();
    assert!(e.to_string().contains("missing field `command`"), "{e}");
}

#[test]
fn malformed_yaml_names_the_position() {
    let e = Policy::parse("default_action: deny\nrules:\n  - command: [ls\n", "policy.yaml").unwrap_err();
    let PolicyError::Parse { line, .. } = e else { panic!("{e:?}") };
    assert!(line >= 3, "{e}");
}

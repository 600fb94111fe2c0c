#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Properties of evaluation that must hold for every command line.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use clawkeep_policy::{Action, Policy, Request, RuleSpec};
use proptest::prelude::*;

fn command() -> impl Strategy<Value = String> {
    prop_oneof![Just("git".to_string()), Just("rm".to_string()), Just("npm".to_string()), Just("cargo".to_string()), "[a-z][a-z0-9_-]{0,7}",]
}

/// Arguments with spaces, slashes and glob characters mixed in.
fn args() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(
        prop_oneof![
            Just("push".to_string()),
            Just("--force".to_string()),
            Just("-rf".to_string()),
            Just("/".to_string()),
            Just("install".to_string()),
            "[a-z0-9 /*.=+-]{0,8}",
        ],
        0..6,
    )
}

/// A pattern with no glob or regex syntax in it.
fn literal() -> impl Strategy<Value = String> {
    prop_oneof![Just("push".to_string()), Just("-rf".to_string()), "[a-z0-9 ./=+-]{0,6}"]
}

fn cwd() -> impl Strategy<Value = PathBuf> {
    prop_oneof![Just("/workspace"), Just("/workspace/a/../b"), Just("/tmp/x"), Just("/etc"), Just("/")].prop_map(PathBuf::from)
}

/// The built-in and example policies, loaded once (parsing them for every
/// case would dominate the run time).
fn policies() -> &'static [Policy] {
    static POLICIES: OnceLock<Vec<Policy>> = OnceLock::new();
    POLICIES.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/policies");
        let mut out = vec![Policy::builtin_default()];
        for name in ["coding-agent.yaml", "read-only-explorer.yaml", "clawrden-compat.yaml"] {
            out.push(Policy::load(&dir.join(name)).unwrap());
        }
        out
    })
}

fn only(rule: RuleSpec, default: Action) -> Policy {
    let base = Policy::parse(&format!("default_action: {default}\n"), "base.yaml").unwrap();
    base.with_rule_prepended(rule).unwrap()
}

fn action_strategy() -> impl Strategy<Value = Action> {
    prop_oneof![Just(Action::Allow), Just(Action::Deny), Just(Action::Ask)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn evaluation_is_deterministic(cmd in command(), args in args(), cwd in cwd()) {
        for p in policies() {
            let req = Request { command: &cmd, args: &args, cwd: &cwd };
            let first = p.evaluate(&req);
            prop_assert_eq!(&first, &p.evaluate(&req));
            prop_assert_eq!(&first, &p.explain(&req).decision);
            prop_assert_eq!(&first, &p.clone().evaluate(&req));
        }
    }

    #[test]
    fn a_leading_bare_allow_rule_allows_its_command_with_any_args(
        cmd in command(), args in args(), default in action_strategy()
    ) {
        let text = format!(
            "default_action: {default}\nrules:\n  - command: {cmd}\n    action: allow\n  - command: {cmd}\n    args: [\"*\"]\n    action: deny\n"
        );
        let p = Policy::parse(&text, "p.yaml").unwrap();
        let d = p.evaluate(&Request { command: &cmd, args: &args, cwd: Path::new("/") });
        prop_assert_eq!((d.action, d.rule, d.line), (Action::Allow, Some(0), Some(3)));
    }

    #[test]
    fn a_literal_pattern_matches_iff_an_argument_or_the_joined_string_equals_it(
        lit in literal(), args in args()
    ) {
        let rule = RuleSpec { command: "c".into(), args: vec![lit.clone()], action: Action::Allow, ..RuleSpec::default() };
        let p = only(rule, Action::Deny);
        let d = p.evaluate(&Request { command: "c", args: &args, cwd: Path::new("/") });
        let expected = args.contains(&lit) || args.join(" ") == lit;
        prop_assert_eq!(d.action == Action::Allow, expected, "lit {:?} args {:?}", lit, args);
        // The same rule read back from YAML decides the same.
        let back = Policy::parse(&p.to_yaml(), "back.yaml").unwrap();
        prop_assert_eq!(back.evaluate(&Request { command: "c", args: &args, cwd: Path::new("/") }).action, d.action);
    }

    #[test]
    fn an_exact_always_rule_allows_exactly_that_command_line(
        cmd in command(), args in args(), other_cmd in command(), other_args in args(), cwd in cwd()
    ) {
        for base in policies() {
            let p = base.with_rule_prepended(RuleSpec::exact(&cmd, &args, Action::Allow)).unwrap();
            let req = Request { command: &cmd, args: &args, cwd: &cwd };
            let d = p.evaluate(&req);
            if base.cwd_allowed(&cwd) {
                prop_assert_eq!((d.action, d.rule), (Action::Allow, Some(0)));
            } else {
                prop_assert_eq!((d.action, d.rule), (Action::Deny, None), "allowed_paths still applies");
            }
            if other_cmd != cmd || other_args != args {
                // Any other command line is decided as before (rule indexes shift by one).
                let req = Request { command: &other_cmd, args: &other_args, cwd: &cwd };
                let (before, after) = (base.evaluate(&req), p.evaluate(&req));
                prop_assert_eq!(after.action, before.action);
                prop_assert_eq!(after.rule, before.rule.map(|i| i + 1));
            }
        }
    }

    #[test]
    fn to_yaml_round_trips_arbitrary_rules(
        cmd in command(),
        pats in prop::collection::vec("[a-z0-9 /*?.=+-]{0,8}", 0..3),
        reason in proptest::option::of("\\PC{0,20}"),
        secs in proptest::option::of(1u64..200_000),
        action in action_strategy(),
    ) {
        let spec = RuleSpec {
            command: cmd,
            args: pats,
            action,
            timeout: secs.map(std::time::Duration::from_secs),
            reason,
            ..RuleSpec::default()
        };
        let p = only(spec, Action::Ask);
        let yaml = p.to_yaml();
        let back = Policy::parse(&yaml, "back.yaml").unwrap();
        prop_assert_eq!(&back, &p, "{}", yaml);
    }
}

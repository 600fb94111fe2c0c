//! Feeds arbitrary UTF-8 to `Policy::parse`. A parse may fail, but must not
//! panic or hang; a policy that parses must evaluate, explain the same
//! decision, and survive `to_yaml` -> `parse` unchanged.

#![no_main]

use std::path::Path;

use clawkeep_policy::{Policy, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(policy) = Policy::parse(text, "fuzz.yaml") else { return };

    let args: Vec<String> = ["push", "origin", "--force"].iter().map(|s| s.to_string()).collect();
    let req = Request { command: "git", args: &args, cwd: Path::new("/workspace/repo") };
    let decision = policy.evaluate(&req);
    assert_eq!(policy.explain(&req).decision, decision, "explain disagrees with evaluate");

    let yaml = policy.to_yaml();
    let back = match Policy::parse(&yaml, "round-trip.yaml") {
        Ok(p) => p,
        Err(e) => panic!("to_yaml output does not parse: {e}\n{yaml}"),
    };
    assert!(back == policy, "to_yaml changed the policy:\n{yaml}");
    let again = back.evaluate(&req);
    assert_eq!((again.action, again.rule, again.timeout), (decision.action, decision.rule, decision.timeout));
});

//! clawkeep's command policy: which gated commands an agent may run, which
//! need a human, and which are refused.
//!
//! A policy is a YAML file (see `default-policy.yaml` and
//! `deploy/policies/`): a default action, the directories an agent may work
//! in, extra environment names to strip, and rules tried in file order, first
//! match wins. Loading is strict: an unknown key, action, bad pattern or bad
//! timeout is refused with the file and line, so a typo never silently
//! widens what an agent may do. Once loaded, evaluation cannot fail.
//!
//! Argument patterns: a rule with `args` matches when any pattern matches the
//! space-joined arguments or any single argument. Because of the second half,
//! an `allow` rule for `log` also matches `git rm log`; put `ask`/`deny` rules
//! for the dangerous forms first, and use `argv` for an exact command line.

mod env;
mod error;
mod eval;
mod lines;
mod matcher;
mod model;
mod parse;
mod policy;
mod reload;
mod rule;

pub use env::{ALWAYS_SCRUBBED, ALWAYS_SCRUBBED_PREFIXES};
pub use error::PolicyError;
pub use matcher::REGEX_PREFIX;
pub use model::{Action, Decision, Explanation, Request, RuleSpec, UnknownAction};
pub use policy::Policy;
pub use reload::{PolicyHandle, ReloadEvent};
pub use rule::Rule;

//! Check results and the one-line report format.

use std::fmt::Display;

/// The result of one check: did the restriction hold, and why we think so.
#[derive(Debug)]
pub struct Outcome {
    check: &'static str,
    held: bool,
    detail: String,
}

impl Outcome {
    pub fn held(&self) -> bool {
        self.held
    }

    /// Prints `PASS <check>: <detail>` or `FAIL <check>: <detail>` on stdout.
    pub fn print(&self) {
        let verdict = if self.held { "PASS" } else { "FAIL" };
        // One line per check, whatever the detail picked up (env names,
        // file names) — the test suite parses lines.
        let detail: String = self.detail.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        println!("{verdict} {}: {detail}", self.check);
    }
}

/// Collects the attempts a check makes; the check passes only if every
/// attempt was stopped.
#[derive(Debug, Default)]
pub struct Findings {
    parts: Vec<String>,
    escaped: bool,
}

impl Findings {
    pub fn new() -> Self {
        Self::default()
    }

    /// The restriction held for this attempt.
    pub fn held(&mut self, text: impl Display) {
        self.parts.push(text.to_string());
    }

    /// This attempt got through: the check fails.
    pub fn escaped(&mut self, text: impl Display) {
        self.escaped = true;
        self.parts.push(text.to_string());
    }

    pub fn record(&mut self, held: bool, text: impl Display) {
        if held {
            self.held(text);
        } else {
            self.escaped(text);
        }
    }

    pub fn finish(self, check: &'static str) -> Outcome {
        Outcome { check, held: !self.escaped, detail: self.parts.join("; ") }
    }
}

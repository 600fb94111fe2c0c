//! Progress for long operations, on stderr so stdout stays clean for
//! `--json`. Each step draws a bar of the steps done:
//!
//! ```text
//! image build [######..............] 3/10 writing the initramfs
//! ```
//!
//! On a terminal the bar line is redrawn in place and details print above
//! it; elsewhere (a log, CI) every step and detail is its own line.
//! Sub-steps with a known size (OCI layers) draw their own bar.

use std::io::{IsTerminal, Write};

/// Characters in a bar.
const WIDTH: usize = 20;

#[derive(Debug)]
pub struct Progress {
    label: String,
    step: usize,
    total: usize,
    quiet: bool,
    /// stderr is a terminal: redraw the bar line in place.
    tty: bool,
    /// The current bar line, drawn without a newline (terminal only).
    drawn: Option<String>,
}

impl Progress {
    /// Draws `label [bar] n/total ...` on stderr.
    pub fn stderr(label: &str, total: usize) -> Self {
        Progress { label: label.to_string(), step: 0, total, quiet: false, tty: std::io::stderr().is_terminal(), drawn: None }
    }

    /// Prints nothing (library tests).
    pub fn silent() -> Self {
        Progress { label: String::new(), step: 0, total: 0, quiet: true, tty: false, drawn: None }
    }

    /// Starts the next step.
    pub fn step(&mut self, what: &str) {
        self.step += 1;
        let line = format!("{} {}/{} {what}", bar(self.step as u64, self.total as u64), self.step, self.total);
        self.draw(line);
    }

    /// Part `done` of `total` of the current step (`what` names it).
    pub fn part(&mut self, what: &str, done: u64, total: u64) {
        let line = format!("{} {what}", bar(done, total));
        if self.tty {
            self.draw(line);
        } else {
            self.note(&line);
        }
    }

    /// A detail of the current step.
    pub fn note(&self, what: &str) {
        if self.quiet {
            return;
        }
        let mut e = std::io::stderr().lock();
        match &self.drawn {
            // Above the bar, which is drawn again below it.
            Some(bar) => {
                let _ = write!(e, "\r\x1b[K{}       {what}\n{} {bar}", self.label, self.label);
            }
            None => {
                let _ = writeln!(e, "{}       {what}", self.label);
            }
        }
    }

    /// A detail with a size: `      rootfs.img: 64.0 MiB`.
    pub fn bytes(&self, what: &str, n: u64) {
        self.note(&format!("{what}: {}", human(n)));
    }

    /// Ends the bar line (the last step is done).
    pub fn finish(&mut self) {
        if self.drawn.take().is_some() {
            let _ = writeln!(std::io::stderr().lock());
        }
    }

    fn draw(&mut self, line: String) {
        if self.quiet {
            return;
        }
        let mut e = std::io::stderr().lock();
        if self.tty {
            let _ = write!(e, "\r\x1b[K{} {line}", self.label);
            let _ = e.flush();
            self.drawn = Some(line);
        } else {
            let _ = writeln!(e, "{} {line}", self.label);
        }
    }
}

impl Drop for Progress {
    /// An error printed after a failed step starts on a line of its own.
    fn drop(&mut self) {
        self.finish();
    }
}

/// `[#####...............]`: `done` of `total` (a total of 0 is empty).
pub fn bar(done: u64, total: u64) -> String {
    let filled = (done.min(total) * WIDTH as u64).checked_div(total).unwrap_or(0) as usize;
    format!("[{}{}]", "#".repeat(filled), ".".repeat(WIDTH - filled))
}

/// `1536` → `1.5 KiB`.
pub fn human(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", UNITS[i])
}

#[cfg(test)]
mod tests {
    #[test]
    fn bars_fill_with_the_work_done() {
        assert_eq!(super::bar(0, 10), format!("[{}]", ".".repeat(20)));
        assert_eq!(super::bar(5, 10), format!("[{}{}]", "#".repeat(10), ".".repeat(10)));
        assert_eq!(super::bar(10, 10), format!("[{}]", "#".repeat(20)));
        assert_eq!(super::bar(12, 10), super::bar(10, 10));
        assert_eq!(super::bar(3, 0), super::bar(0, 1));
    }

    #[test]
    fn human_sizes() {
        assert_eq!(super::human(10), "10 B");
        assert_eq!(super::human(1536), "1.5 KiB");
        assert_eq!(super::human(64 << 20), "64.0 MiB");
    }
}

//! Progress lines for long operations, on stderr so stdout stays clean for
//! `--json`: `image build [3/8] writing the initramfs`.

use std::io::Write;

#[derive(Debug)]
pub struct Progress {
    label: String,
    step: usize,
    total: usize,
    quiet: bool,
}

impl Progress {
    /// Prints `label [n/total] ...` lines on stderr.
    pub fn stderr(label: &str, total: usize) -> Self {
        Progress { label: label.to_string(), step: 0, total, quiet: false }
    }

    /// Prints nothing (library tests).
    pub fn silent() -> Self {
        Progress { label: String::new(), step: 0, total: 0, quiet: true }
    }

    /// Starts the next step.
    pub fn step(&mut self, what: &str) {
        self.step += 1;
        self.line(&format!("[{}/{}] {what}", self.step, self.total));
    }

    /// A detail of the current step.
    pub fn note(&self, what: &str) {
        self.line(&format!("      {what}"));
    }

    /// A detail with a size: `      rootfs.img: 64.0 MiB`.
    pub fn bytes(&self, what: &str, n: u64) {
        self.note(&format!("{what}: {}", human(n)));
    }

    fn line(&self, s: &str) {
        if !self.quiet {
            let mut e = std::io::stderr().lock();
            let _ = writeln!(e, "{} {s}", self.label);
        }
    }
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
    fn human_sizes() {
        assert_eq!(super::human(10), "10 B");
        assert_eq!(super::human(1536), "1.5 KiB");
        assert_eq!(super::human(64 << 20), "64.0 MiB");
    }
}

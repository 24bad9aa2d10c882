//! Running `sealpost bench ...` and reading the report it prints.

use std::process::Command;

/// What a bench printed on standard output; it exited with success.
pub struct Report {
    pub stdout: String,
}

/// Runs `sealpost` with `args`; fails the test (with both outputs) unless it succeeds.
pub fn run(args: &[&str]) -> Report {
    let out = Command::new(env!("CARGO_BIN_EXE_sealpost"))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    Report { stdout }
}

impl Report {
    /// The first line that starts (after indentation) with `start`.
    pub fn line(&self, start: &str) -> String {
        self.stdout
            .lines()
            .find(|l| l.trim_start().starts_with(start))
            .unwrap_or_else(|| panic!("no line {start:?}: {}", self.stdout))
            .to_string()
    }
}

/// The number right after `marker` in `line` (a trailing `,`, `;`, `%` or `/msg` dropped).
pub fn number_after(line: &str, marker: &str) -> f64 {
    let rest = line
        .split(marker)
        .nth(1)
        .unwrap_or_else(|| panic!("no {marker:?} in {line:?}"));
    rest.split_whitespace()
        .next()
        .and_then(|n| {
            n.trim_end_matches("/msg")
                .trim_end_matches([',', ';', '%'])
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no number after {marker:?} in {line:?}"))
}

//! `sealpost bench compare` runs Postfix and sealpost side by side through the counting sink
//! and prints its stable report (a small load: this checks the harness, it measures nothing).

use std::process::Command;

#[test]
fn compare_runs_postfix_and_sealpost_through_the_sink_and_prints_the_report() {
    if !std::path::Path::new("/usr/sbin/postfix").exists() && std::env::var_os("CI").is_none() {
        let root = std::fs::metadata("/proc/self")
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
            .unwrap_or(false);
        if !root {
            eprintln!("skipped: postfix is not installed and installing it needs root");
            return;
        }
    }
    // Postfix master processes still running (zombies this machine's init has not reaped yet
    // do not count).
    let masters = || {
        let out = Command::new("ps")
            .args(["-C", "master", "-o", "stat="])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|s| !s.trim_start().starts_with('Z'))
            .count()
    };
    let before = masters();
    let out = Command::new(env!("CARGO_BIN_EXE_sealpost"))
        .args([
            "bench",
            "compare",
            "--messages",
            "30",
            "--sessions",
            "3",
            "--rounds",
            "2",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("compare: 30 messages of "), "{text}");
    assert!(
        lines[0].contains("STARTTLS both hops, Postfix 3."),
        "{text}"
    );
    let rounds: Vec<&&str> = lines.iter().filter(|l| l.starts_with("round ")).collect();
    assert_eq!(rounds.len(), 4, "{text}");
    assert!(
        rounds[0].contains("postfix") && rounds[1].contains("sealpost"),
        "{text}"
    );
    // The load client keeps each MTA's sessions for the whole run: in the second round every
    // handshake to sealpost (whose tickets it holds) can resume, and some do.
    let resumed = |line: &str| -> (u32, u32) {
        let counts = line
            .split("resumed ")
            .nth(1)
            .unwrap_or_else(|| panic!("{line}"));
        let (n, m) = counts.split_once('/').unwrap_or_else(|| panic!("{line}"));
        (n.parse().unwrap(), m.trim().parse().unwrap())
    };
    let (n, m) = resumed(rounds[3]);
    assert!(n >= 1 && m == 30, "{text}");
    for mta in ["postfix", "sealpost"] {
        let summary = lines
            .iter()
            .find(|l| l.starts_with(&format!("summary {mta}")))
            .unwrap_or_else(|| panic!("{text}"));
        let cpu: f64 = summary
            .split("cpu ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{summary}"));
        assert!(cpu > 0.0, "{mta} used no CPU? {summary}");
    }
    let ratio: f64 = lines
        .iter()
        .find_map(|l| l.strip_prefix("ratio e2e sealpost/postfix "))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(ratio > 0.0, "{text}");
    // No Postfix instance is left behind.
    assert_eq!(
        masters(),
        before,
        "a Postfix master process is left running"
    );
}

//! `sealpost bench imap` runs end to end against a `serve` child: the mailbox is filled, the
//! headers and the big message come back whole over TLS, the idle connections are counted, and
//! every figure it prints is there.

use std::process::Command;

fn number_after(line: &str, marker: &str) -> f64 {
    let rest = line
        .split(marker)
        .nth(1)
        .unwrap_or_else(|| panic!("no {marker:?} in {line:?}"));
    rest.split_whitespace()
        .next()
        .and_then(|n| n.trim_end_matches(',').parse().ok())
        .unwrap_or_else(|| panic!("no number after {marker:?} in {line:?}"))
}

#[test]
fn bench_imap_fetches_headers_and_a_big_message_and_counts_idle_connections() {
    let out = Command::new(env!("CARGO_BIN_EXE_sealpost"))
        .args(["bench", "imap", "--messages", "30", "--big", "300000"])
        .args(["--connections", "4"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    let line = |start: &str| {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(start))
            .unwrap_or_else(|| panic!("no line {start:?}: {stdout}"))
            .to_string()
    };
    let headers = line("FETCH headers of");
    assert!(headers.contains("30 messages"), "{headers}");
    // Every header block holds the From, To, Subject, Date and Message-ID lines.
    let bytes = number_after(&headers, "s (");
    assert!(bytes > 30.0 * 150.0, "{headers}");
    let big = line("FETCH one");
    // The literal is the whole message: at most one line of padding short of 300000 bytes.
    let big_bytes = number_after(&big, "s (");
    assert!((299_900.0..=300_000.0).contains(&big_bytes), "{big}");
    assert!(number_after(&big, "peak") > 0.0, "{big}");
    let idle = line("4 idle connections");
    assert!(idle.contains("KiB per connection"), "{idle}");
    line("5 s after they closed");
}

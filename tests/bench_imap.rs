//! `sealpost bench imap` runs end to end against a `serve` child: the mailbox is filled, the
//! headers and the big message come back whole over TLS, the idle connections are counted, and
//! every figure it prints is there.

mod support;

use support::bench_report::{number_after, run};

#[test]
fn bench_imap_fetches_headers_and_a_big_message_and_counts_idle_connections() {
    let report = run(&[
        "bench",
        "imap",
        "--messages",
        "30",
        "--big",
        "300000",
        "--connections",
        "4",
    ]);
    let line = |start: &str| report.line(start);
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

//! `sealpost bench smime` runs the `smime_encrypt` rule through the cleanup stage (its first
//! message opened again with the recipient's key, or the bench fails) and prints its rate per
//! thread count next to the bound `openssl speed` sets; every figure it prints is there.

mod support;

use std::process::Command;

use support::bench_report::{number_after, run};

fn openssl_present() -> bool {
    let present = Command::new("openssl").arg("version").output().is_ok();
    if !present {
        assert!(
            std::env::var_os("CI").is_none(),
            "openssl is missing (CI is set: the bench's bound must be checked)"
        );
        eprintln!("openssl not found: the bound lines are not checked");
    }
    present
}

#[test]
fn bench_smime_prints_rates_and_the_openssl_bound() {
    let report = run(&[
        "bench",
        "smime",
        "--messages",
        "20",
        "--size",
        "4096",
        "--threads",
        "1,2",
    ]);
    let line = |start: &str| report.line(start);
    let head = line("smime bench:");
    assert!(head.contains("20 messages"), "{head}");
    assert!(number_after(&head, "cores, load") >= 0.0, "{head}");
    let mut rates = Vec::new();
    for threads in [1, 2] {
        let l = line(&format!("{threads} thread(s):"));
        let rate = number_after(&l, "thread(s):");
        assert!(rate > 0.0, "{l}");
        rates.push((l, rate));
    }
    if openssl_present() {
        let speed = line("openssl speed:");
        assert!(number_after(&speed, "rsa2048") > 0.0, "{speed}");
        assert!(number_after(&speed, "aes-256-cbc") > 0.0, "{speed}");
        assert!(number_after(&speed, "aes-256-gcm") > 0.0, "{speed}");
        let bound = line("per-core bound");
        let per_core = number_after(&bound, "bytes):");
        assert!(per_core > 0.0, "{bound}");
        for (l, rate) in &rates {
            let pct = number_after(l, "msg/s");
            assert!(pct > 0.0, "{l}");
            let threads = if l.contains("2 thread") { 2.0 } else { 1.0 };
            let expected = 100.0 * rate / (per_core * threads);
            assert!(
                (pct - expected).abs() <= 1.0 + expected * 0.01,
                "{l}: {pct}% printed, {expected:.1}% from the printed figures"
            );
        }
    }
}

#[test]
fn bench_smime_refuses_a_fixtures_directory_without_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sealpost"))
        .args(["bench", "smime", "--messages", "2", "--threads", "1"])
        .arg("--fixtures")
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("not encrypted") || stderr.contains("certificate"),
        "{stderr}"
    );
}

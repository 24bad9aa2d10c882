//! Audit events recorded from many threads at once (as the licensing service records its
//! concurrent requests) form one chain, written in groups, whose anchor in the index is its newest
//! line, so dropping the newest line is detected.

use crate::support;

use std::sync::Arc;

use sealpost::store::ops::{record_event, verify_audit};
use support::domains::{free_port, load, open_store, DomainSpec};

#[test]
fn concurrent_events_anchor_the_newest_line() {
    let dir = tempfile::tempdir().unwrap();
    let spec = DomainSpec::new("contoso", &["alice@contoso.test"], free_port());
    let config = load(&spec.write(dir.path()));
    let store = Arc::new(open_store(&dir.path().join("contoso-data"), "test"));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    record_event(&store, "rms-access", "", "", &format!("request {t}.{i}"))
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let report = verify_audit(&store).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let log = config.store.keystore_dir.join("audit.log");
    let text = std::fs::read_to_string(&log).unwrap();
    let lines = text.lines().count() as u64;
    assert_eq!(report.lines, lines);
    assert!(lines >= 200, "{lines}");
    // Drop the newest line: the anchor covers it, so the truncation shows.
    let kept: String = text
        .lines()
        .take(lines as usize - 1)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&log, kept).unwrap();
    let report = verify_audit(&store).unwrap();
    assert!(
        report.problems.iter().any(|p| p.contains("truncated")),
        "{:?}",
        report.problems
    );
}

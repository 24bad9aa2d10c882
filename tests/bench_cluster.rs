//! `sealpost bench cluster` against a real PostgreSQL: one node on the local spool, then one and
//! two nodes queueing in the database, all relaying through the counting sink, each run printed
//! with its rates, CPU per message and the database's commits and WAL flushes per message (a
//! small load: this checks the harness and its counters, it measures nothing).

mod support;

use support::bench_report::{number_after as figure, run};
use support::postgres::shared;

#[test]
fn cluster_bench_runs_the_local_spool_then_one_and_two_database_nodes() {
    let Some(cluster) = shared() else { return };
    let database = cluster.create_database();
    let dir = tempfile::tempdir().unwrap();
    let password = cluster.password_file(dir.path());
    let url = cluster.url(&database);
    let password = password.to_str().unwrap();
    let report = run(&[
        "bench",
        "cluster",
        "--url",
        &url,
        "--password-file",
        password,
        "--tls",
        "disable",
        "--nodes",
        "1,2",
        "--messages",
        "41",
        "--sessions",
        "4",
    ]);
    let text = &report.stdout;
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("cluster: 41 messages of ")
            && lines[0].contains("STARTTLS both hops, PostgreSQL 15"),
        "{text}"
    );
    let runs: Vec<&str> = lines[1..].to_vec();
    assert_eq!(runs.len(), 3, "{text}");
    for (line, start) in
        runs.iter()
            .zip(["local    1 node ", "postgres 1 node ", "postgres 2 nodes"])
    {
        assert!(line.starts_with(start), "{text}");
        assert!(figure(line, "e2e") > 0.0, "{line}");
        assert!(figure(line, "cpu sealpost") > 0.0, "{line}");
    }
    assert!(!runs[0].contains("commits"), "{text}");
    for line in &runs[1..] {
        // Every message at least commits its insert and its completion; each commit flushes
        // the WAL unless it shared a flush with another.
        assert!(figure(line, "commits") >= 2.0, "{line}");
        // Of them, the insert, the claim and the completion write: a row in, one changed, one
        // out per message at least.
        let (writing, read_only) = (figure(line, "writing"), figure(line, "read-only"));
        assert!(writing >= 2.0 && read_only >= 0.0, "{line}");
        // The two parts make the whole (each printed to one decimal).
        assert!(
            (writing + read_only - figure(line, "commits")).abs() <= 0.15,
            "{line}"
        );
        assert!(figure(line, "rows +") >= 1.0, "{line}");
        assert!(figure(line, "wal flushes") > 0.0, "{line}");
        // The test's server runs on this machine, so its CPU is counted too.
        assert!(figure(line, "database") > 0.0, "{line}");
    }
    // Every message went through: nothing is left queued in the database.
    let left = cluster.psql(&database, "SELECT count(*) FROM queue_message");
    assert_eq!(left.trim(), "0", "{text}");
}

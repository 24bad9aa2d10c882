//! The audit chain in PostgreSQL that the nodes of one database share: two nodes appending from
//! several threads each make one chain without gaps that verifies; `sealpost store audit verify`
//! run with either node's configuration reads all of it; a line edited in the database, a line
//! deleted from its middle, a line forged with its hash chain recomputed (but no valid MAC), and
//! lines cut off its end are each reported, by sequence number.

use crate::support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sealpost::licensing::access::{message_hash, Access, EVENT};
use sealpost::store::audit::{line_hash, AuditEvent, AuditRecord};
use sealpost::store::ops::{record_event, verify_audit};
use sealpost::store::EncryptedStore;
use support::domains::{free_port, load, sealpost, DomainSpec};
use support::pg_nodes::storage_toml;
use support::postgres::Cluster;

/// Node `name` of contoso under `dir/name` on `database`: its configuration. Every node gets the
/// root keys and the service key of the first.
fn node(cluster: &Cluster, dir: &Path, database: &str, name: &str) -> PathBuf {
    let home = dir.join(name);
    std::fs::create_dir_all(&home).expect("node dir");
    let password = cluster.password_file(dir);
    let toml = storage_toml(cluster, database, &password, &format!("node-{name}"), "4s");
    let config = DomainSpec::new("contoso", &["alice@contoso.test"], free_port())
        .toml(&toml)
        .write(&home);
    let keystore = home.join("contoso-data.keystore");
    let first = dir.join("a");
    if name == "a" {
        sealpost::crypto::keyfile::ServiceKey::load_or_create(&keystore).expect("service key");
    } else {
        use std::os::unix::fs::DirBuilderExt;
        let (from, to) = (first.join("contoso-keys"), home.join("contoso-keys"));
        std::fs::create_dir_all(&to).expect("key dir");
        for k in ["a", "b", "availability"] {
            let file = format!("{k}.key");
            std::fs::copy(from.join(&file), to.join(&file)).expect("copy root key");
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&keystore)
            .expect("keystore");
        let theirs = first.join("contoso-data.keystore/service.key");
        std::fs::copy(theirs, keystore.join("service.key")).expect("copy service key");
    }
    config
}

/// Nodes "a" and "b" on a new database: their directory, the database, and their configs.
fn two_nodes(cluster: &Cluster) -> (tempfile::TempDir, String, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let database = cluster.create_database();
    let a = node(cluster, dir.path(), &database, "a");
    let b = node(cluster, dir.path(), &database, "b");
    (dir, database, a, b)
}

fn open(config: &Path, actor: &str) -> Arc<EncryptedStore> {
    let store = EncryptedStore::open(&load(config), actor).unwrap_or_else(|e| panic!("{e}"));
    Arc::new(store)
}

/// `sealpost store audit verify` with a configuration: exit code and stdout.
fn verify(config: &Path) -> (i32, String) {
    let config = config.display().to_string();
    let (code, out, err) = sealpost(&["store", "audit", "verify", "--config", &config]);
    assert!(code == 0 || code == 1, "store audit verify: {out}{err}");
    (code, out)
}

/// The lines of the chain in the database, by ascending seq.
fn rows(cluster: &Cluster, database: &str) -> Vec<(u64, String)> {
    cluster
        .psql(
            database,
            "SELECT seq || ' ' || line FROM audit_line ORDER BY seq",
        )
        .lines()
        .map(|l| {
            let (seq, line) = l.split_once(' ').expect("seq and line");
            (seq.parse().expect("seq"), line.to_string())
        })
        .collect()
}

#[test]
fn two_nodes_write_one_chain_that_every_node_verifies() {
    let Some(cluster) = support::postgres::shared() else {
        return;
    };
    let (_dir, database, config_a, config_b) = two_nodes(cluster);
    let (store_a, store_b) = (open(&config_a, "test a"), open(&config_b, "test b"));
    let before = rows(cluster, &database).len();

    // Four threads on each node, 25 events each, at the same time.
    let started = std::time::Instant::now();
    let threads: Vec<_> = [(&store_a, &store_b, "a"), (&store_b, &store_a, "b")]
        .into_iter()
        .flat_map(|(store, other, name)| {
            (0..4).map(move |t| {
                let (store, other) = ((*store).clone(), (*other).clone());
                std::thread::spawn(move || {
                    for i in 0..25 {
                        // What the licensing service records, so that `rms access-log` lists it.
                        let access = Access::granted(
                            &format!("{name}{t}.{i}@contoso.test"),
                            &message_hash("<m@contoso.test>"),
                            ([127, 0, 0, 1], 4000).into(),
                            "VIEW",
                        );
                        let reason = serde_json::to_string(&access).expect("json");
                        let log = store.audit_log();
                        let event = AuditEvent {
                            event: EVENT,
                            policy: "",
                            key: "",
                            actor: &format!("test {name}"),
                            reason: &reason,
                        };
                        let anchor = log
                            .append(&event)
                            .unwrap_or_else(|e| panic!("node {name}: {e}"));
                        if i % 5 == 0 {
                            // Committed when append returned: the other node reads it.
                            let lines = other.audit_log().lines().expect("lines");
                            let line = lines
                                .iter()
                                .find(|(s, _)| *s == anchor.seq)
                                .map(|(_, l)| l)
                                .unwrap_or_else(|| panic!("seq {} not committed", anchor.seq));
                            assert_eq!(line_hash(line.as_bytes()), anchor.hash);
                        }
                    }
                })
            })
        })
        .collect();
    for t in threads {
        t.join().expect("appending thread");
    }
    let commits = [&store_a, &store_b].map(|s| s.audit_log().commits());
    eprintln!(
        "200 appends from 2 nodes x 4 threads in {:?}: {commits:?} transactions",
        started.elapsed()
    );
    assert!(commits.iter().all(|c| (1..=100).contains(c)), "{commits:?}");

    let chain = rows(cluster, &database);
    let seqs: Vec<u64> = chain.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=(before as u64 + 200)).collect::<Vec<_>>());
    let mut prev = sealpost::store::audit::GENESIS.to_string();
    let mut by_node = std::collections::HashMap::<String, usize>::new();
    for (seq, line) in &chain {
        let rec: AuditRecord = serde_json::from_str(line).expect("a record");
        assert_eq!(rec.seq, *seq);
        assert_eq!(rec.prev, prev, "seq {seq} chains onto the line before it");
        prev = line_hash(line.as_bytes());
        *by_node.entry(rec.node).or_default() += 1;
    }
    assert!(
        by_node["node-a"] >= 100 && by_node["node-b"] >= 100,
        "{by_node:?}"
    );
    let head = cluster.psql(&database, "SELECT seq || ' ' || hash FROM audit_head");
    assert_eq!(head.trim(), format!("{} {prev}", chain.len()));
    // Nothing is anchored per node any more: the head commits with the lines.
    let anchors = cluster.psql(&database, "SELECT count(*) FROM audit_anchor");
    assert_eq!(anchors.trim(), "0");
    for store in [&store_a, &store_b] {
        let r = verify_audit(store).expect("verify");
        assert_eq!(r.lines, chain.len() as u64);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
    }
    drop((store_a, store_b));

    // Node B's command sees node A's lines, and so on.
    for config in [&config_a, &config_b] {
        let (code, out) = verify(config);
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains("audit chain in postgresql://") && out.contains("chain intact"),
            "{out}"
        );
        assert!(out.contains(&format!("{} line(s)", chain.len())), "{out}");
    }
    let (code, out, err) = sealpost(&[
        "rms",
        "access-log",
        "--config",
        &config_b.display().to_string(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 200, "{out}");
    assert!(
        out.contains("a3.24@contoso.test") && out.contains("b0.0@contoso.test"),
        "both nodes' accesses: {out}"
    );
}

#[test]
fn alterations_in_the_database_are_named_by_seq() {
    let Some(cluster) = support::postgres::shared() else {
        return;
    };
    let (_dir, database, config_a, config_b) = two_nodes(cluster);
    let store_b = open(&config_b, "test b");
    for i in 0..3 {
        record_event(&store_b, "rms-access", "", "", &format!("b {i}")).expect("append");
    }
    drop(store_b);
    let store_a = open(&config_a, "test a");
    for i in 0..5 {
        record_event(&store_a, "rms-access", "", "", &format!("access a{i}")).expect("append");
    }
    drop(store_a);
    let psql = |sql: &str| cluster.psql(&database, sql);
    let chain = rows(cluster, &database);
    let n = chain.len() as u64;
    assert!(n >= 8, "{chain:?}");
    assert_eq!(verify(&config_b).0, 0);
    psql(
        "CREATE TABLE saved_line AS SELECT * FROM audit_line; \
          CREATE TABLE saved_head AS SELECT * FROM audit_head",
    );
    let restore = || {
        psql(
            "DELETE FROM audit_line; INSERT INTO audit_line SELECT * FROM saved_line; \
              UPDATE audit_head SET seq = s.seq, hash = s.hash FROM saved_head s",
        );
        let (code, out) = verify(&config_b);
        assert_eq!(code, 0, "restored: {out}");
    };
    // The seq of node A's line "access a1".
    let target = chain
        .iter()
        .find(|(_, l)| l.contains("access a1"))
        .map(|(s, _)| *s)
        .expect("a1");

    // A line edited in place.
    psql(&format!(
        "UPDATE audit_line SET line = replace(line, 'access a1', 'access zz') WHERE seq = {target}"
    ));
    let (code, out) = verify(&config_b);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("seq {target}: its MAC does not verify")),
        "{out}"
    );
    assert!(out.contains("chain BROKEN"), "{out}");
    restore();

    // A line deleted from the middle.
    psql(&format!("DELETE FROM audit_line WHERE seq = {target}"));
    let (code, out) = verify(&config_b);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("seq {target}: missing")), "{out}");
    restore();

    // A line forged, with the hash chain after it and the head recomputed: only its MAC (and
    // those of the lines after it, whose prev changed) can tell.
    let mut prev = chain[target as usize - 2].1.clone();
    prev = line_hash(prev.as_bytes());
    let mut sql = String::new();
    for (seq, line) in &chain[target as usize - 1..] {
        let mut rec: AuditRecord = serde_json::from_str(line).expect("record");
        rec.prev = prev.clone();
        if *seq == target {
            rec.reason = "nothing happened".into();
        }
        let forged = serde_json::to_string(&rec).expect("json");
        prev = line_hash(forged.as_bytes());
        sql.push_str(&format!(
            "UPDATE audit_line SET line = $f${forged}$f$, mac = '{}' WHERE seq = {seq};",
            line_hash(b"a guess")
        ));
    }
    sql.push_str(&format!("UPDATE audit_head SET hash = '{prev}';"));
    psql(&sql);
    let (code, out) = verify(&config_b);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("seq {target}: its MAC does not verify")),
        "{out}"
    );
    assert!(
        !out.contains("does not carry the hash"),
        "the forged chain is consistent: {out}"
    );
    restore();

    // The newest lines (node A's) cut off with the head set back: the database alone cannot
    // tell, node A knows it wrote them.
    psql(&format!(
        "DELETE FROM audit_line WHERE seq > {m}; \
         UPDATE audit_head SET seq = {m}, hash = '{}'",
        line_hash(chain[n as usize - 3].1.as_bytes()),
        m = n - 2
    ));
    let (code, out) = verify(&config_a);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("this node wrote up to seq {n}"))
            && out.contains(&format!("chain ends at seq {}", n - 2)),
        "{out}"
    );
    let (code, out) = verify(&config_b);
    assert_eq!(code, 0, "node B wrote none of the lines cut off: {out}");
    restore();
}

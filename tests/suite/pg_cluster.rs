//! Several `sealpost serve` nodes on one PostgreSQL queue: the database restarted while clients
//! send through two nodes (4xx during the outage, never a 5xx or a hang, nothing acknowledged
//! lost), and `sealpost queue` run with one node's configuration acting on what another node
//! accepted.

use crate::support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::domains::{free_port, message, queue_list_json, sealpost, DomainSpec, ServeProcess};
use support::pg_nodes::{
    lock, mailbox_copies, queue_rows, run_client, share_service_key, storage_toml, to_stderr,
    wait_drained, write_report, Record, Tally, FROM,
};
use support::plain_smtp::PlainClient;
use support::postgres::Cluster;

/// `[limits] command_timeout` of the nodes (see `storage_toml`).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

#[test]
fn a_database_restart_under_load_loses_nothing_acknowledged() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60);
    // Kept when the test fails (logs and data), removed when it passes.
    let dir = tempfile::tempdir().expect("tempdir").keep();
    let mut setup = support::pg_nodes::start(&cluster, &dir, 2, "4s", 4);
    let database = setup.database.clone();

    let record = Arc::new(Mutex::new(Record::default()));
    let sending = Arc::new(AtomicBool::new(true));
    let addrs = setup.addrs();
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (record, sending, addrs) = (record.clone(), sending.clone(), addrs.clone());
            std::thread::spawn(move || run_client(c, &addrs, 10, &record, &sending, deadline))
        })
        .collect();

    // Until some mail is acknowledged (on a loaded machine the first seconds may see none).
    let acknowledged_at_least = |n: usize, what: &str| {
        let until = Instant::now() + Duration::from_secs(20);
        while lock(&record).acknowledged.len() < n {
            assert!(Instant::now() < until, "nothing acknowledged {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    std::thread::sleep(Duration::from_secs(2));
    acknowledged_at_least(5, "before the outage");
    let before = lock(&record).acknowledged.len();
    cluster.stop_server();
    let outage = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let (during, refused_during) = {
        let r = lock(&record);
        (r.acknowledged.len(), r.refused)
    };
    cluster.start_server();
    let outage = outage.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    acknowledged_at_least(during + 1, "after the outage");
    sending.store(false, Ordering::SeqCst);
    for c in clients {
        c.join()
            .expect("a client failed (a 5xx, or no reply in time)");
    }
    for node in &mut setup.nodes {
        let process = node.process.as_mut().expect("running");
        assert!(
            process.child.try_wait().expect("status").is_none(),
            "{} exited while the database was away",
            node.name
        );
    }

    wait_drained(&cluster, &database, &setup.fabrikam.data, deadline, &dir);
    let (copies, unreadable) = mailbox_copies(&setup.fabrikam.data);
    let record = lock(&record);
    let tally = Tally::of(&record, &copies);
    let summary = format!(
        "pg_database_restart: {} attempts={} refused_4xx={} (during the outage {refused_during}) \
         acknowledged before the outage {before}, during it {} broken_connections={} \
         slowest_reply={:.1}s unreadable={unreadable}; database down {:.1}s, drained at {:.1}s",
        tally.line(),
        record.attempted.len(),
        record.refused,
        during - before,
        record.broken,
        record.slowest.as_secs_f64(),
        outage.as_secs_f64(),
        started.elapsed().as_secs_f64(),
    );
    to_stderr(&summary);
    write_report("pg_database_restart.txt", &summary);
    if !tally.missing.is_empty() || unreadable > 0 || !tally.never_sent.is_empty() {
        panic!(
            "{summary}\nmissing: {:?}\nlogs in {}",
            tally.missing,
            dir.display()
        );
    }
    assert!(
        refused_during > 0,
        "no 4xx while the database was down: {summary}"
    );
    assert!(before > 0 && tally.acknowledged > during, "{summary}");
    assert!(
        record.slowest < COMMAND_TIMEOUT,
        "a reply took longer than the command timeout: {summary}"
    );
    assert_eq!(record.broken, 0, "connections broke: {summary}");
    assert!(
        tally.duplicates() * 1000 <= tally.acknowledged,
        "more than 0.1% duplicates: {summary}"
    );
    drop(setup);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_queue_commands_of_one_node_see_what_another_accepted() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (database, [(a, a_port), (b, _)]) = two_nodes(&cluster, dir.path());

    // Node A accepts a message for a domain that does not answer; it is deferred.
    let server = ServeProcess::start(&a, a_port);
    let to = "bob@fabrikam.test";
    let id = send_to(a_port, &message(FROM, to, "CLUSTER-CLI-1"));
    let until = Instant::now() + Duration::from_secs(20);
    while !queue_rows(&cluster, &database)
        .iter()
        .any(|(r, state, _)| r == &id && state == "deferred")
    {
        assert!(Instant::now() < until, "{id} never deferred");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A stops (as a node that went away), leaving the message deferred in the database.
    server.kill9();

    // B, which never saw the message, lists it ...
    let out = queue_list_json(&b);
    assert!(
        out.contains(&id) && out.contains(to) && out.contains("\"deferred\""),
        "{out}"
    );
    // ... makes it due ...
    let b_arg = b.display().to_string();
    let (code, out, err) = sealpost(&["queue", "flush", "--config", &b_arg]);
    assert_eq!(code, 0, "queue flush: {err}");
    assert!(out.contains("1 deferred message(s) made due"), "{out}");
    let rows = queue_rows(&cluster, &database);
    assert_eq!(rows, [(id.clone(), "incoming".into(), String::new())]);
    // ... and deletes it; A's configuration then finds the queue empty.
    let (code, out, err) = sealpost(&["queue", "delete", "--config", &b_arg, &id]);
    assert_eq!(code, 0, "queue delete: {err}");
    assert!(out.contains(&format!("{id}: deleted")), "{out}");
    assert_eq!(queue_list_json(&a), "", "A sees the queue empty");
    let (code, out, _) = sealpost(&["queue", "list", "--config", &a.display().to_string()]);
    assert_eq!((code, out.as_str()), (0, "Mail queue is empty\n"));
    let (code, _, err) = sealpost(&["queue", "delete", "--config", &b_arg, &id]);
    assert_ne!(code, 0);
    assert!(err.contains("no such message"), "{err}");
}

/// Two contoso nodes on one new database (`dir/a`, `dir/b`) with one service key, routing fabrikam.test to a port
/// where nothing answers (its mail stays deferred): the database, and each node's configuration
/// and port.
fn two_nodes(cluster: &Cluster, dir: &std::path::Path) -> (String, [(std::path::PathBuf, u16); 2]) {
    let database = cluster.create_database();
    let password = cluster.password_file(dir);
    let closed = free_port();
    let node = |name: &str| {
        let home = dir.join(name);
        std::fs::create_dir_all(&home).expect("node dir");
        let port = free_port();
        let storage = storage_toml(cluster, &database, &password, &format!("node-{name}"), "4s");
        let config = DomainSpec::new("contoso", &[FROM], port)
            .route("fabrikam.test", closed)
            .toml(&storage)
            .write(&home);
        (config, port)
    };
    let nodes = [node("a"), node("b")];
    share_service_key(nodes.iter().map(|(config, _)| config.as_path()));
    (database, nodes)
}

/// Sends `message` from FROM to bob@fabrikam.test through the node on `port`; the queue id of
/// its 250.
fn send_to(port: u16, message: &[u8]) -> String {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut client = PlainClient::connect(addr, COMMAND_TIMEOUT).expect("connect");
    let reply = client
        .send_mail(FROM, "bob@fabrikam.test", message)
        .expect("reply");
    assert_eq!(reply.code, 250, "{reply}");
    client.quit();
    reply
        .text
        .split_whitespace()
        .last()
        .expect("id")
        .to_string()
}

/// A client that missed node A's 250 sends the message again to node B: B answers with A's
/// queue id and queues nothing (the fingerprint is in the database with the message), also
/// after A has gone; another message is queued as new.
#[test]
fn a_retransmission_to_another_node_is_recognised() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (database, [(a, a_port), (b, b_port)]) = two_nodes(&cluster, dir.path());
    let a_node = ServeProcess::start(&a, a_port);
    let b_node = ServeProcess::start(&b, b_port);
    let to = "bob@fabrikam.test";
    let first = message(FROM, to, "CLUSTER-AGAIN-1");
    let id = send_to(a_port, &first);
    assert_eq!(send_to(b_port, &first), id, "B names A's copy");
    assert_eq!(send_to(a_port, &first), id, "and so does A");
    a_node.kill9();
    assert_eq!(send_to(b_port, &first), id, "and still does with A gone");
    let other = send_to(b_port, &message(FROM, to, "CLUSTER-AGAIN-2"));
    assert_ne!(other, id);
    let mut ids: Vec<String> = queue_rows(&cluster, &database)
        .into_iter()
        .map(|(id, _, _)| id)
        .collect();
    ids.sort();
    let mut expected = vec![id, other];
    expected.sort();
    assert_eq!(ids, expected, "each message queued once");
    let fingerprints = cluster.psql(&database, "SELECT count(*) FROM queue_transmission");
    assert_eq!(fingerprints.trim(), "2", "one fingerprint per message");
    drop(b_node);
}

/// docker/fabrikam.toml as both compose nodes run it, pointed at a real PostgreSQL instead of the
/// compose service (and at loopback ports): both nodes start on one queue, each with a node id of
/// its own, and mail accepted by either is delivered once.
#[test]
fn the_compose_fabrikam_configuration_runs_two_nodes_on_one_database() {
    use sealpost::store::MailStore;
    use std::os::unix::fs::PermissionsExt;
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let database = cluster.create_database();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for linked in ["fixtures", "rules"] {
        std::os::unix::fs::symlink(repo.join(linked), root.join(linked)).expect("symlink");
    }
    std::fs::create_dir(root.join("db")).expect("db dir");
    let password = root.join("db/fabrikam.password");
    std::fs::rename(cluster.password_file(&root.join("db")), &password).expect("password");
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let text = std::fs::read_to_string(repo.join("docker/fabrikam.toml")).expect("fabrikam.toml");
    let bob = "bob@fabrikam.test";
    let mut nodes = Vec::new();
    for n in 1..=2 {
        let (port, admin) = (free_port(), free_port());
        let mut config = text.clone();
        for (from, to) in [
            (
                "postgresql://sealpost@postgres:5432/fabrikam".to_string(),
                cluster.url(&database),
            ),
            ("0.0.0.0:25".into(), format!("127.0.0.1:{port}")),
            ("127.0.0.1:9025".into(), format!("127.0.0.1:{admin}")),
            (
                "/var/lib/sealpost-keystore".into(),
                root.join("keystore").display().to_string(),
            ),
        ] {
            assert!(config.contains(&from), "docker/fabrikam.toml: {from}");
            config = config.replace(&from, &to);
        }
        let path = root.join(format!("fabrikam-{n}.toml"));
        std::fs::write(&path, config).expect("config");
        let data = root.join(format!("data-{n}"));
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_sealpost"));
        command
            .args(["serve", "--config"])
            .arg(&path)
            .arg("--data-dir")
            .arg(&data)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        nodes.push((ServeProcess::spawn(command, port), path, data, port));
    }
    for m in 0..4 {
        let port = nodes[m % 2].3;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let mut client = PlainClient::connect(addr, COMMAND_TIMEOUT).expect("connect");
        let from = "carol@outside.test";
        let marker = format!("COMPOSE-NODE-{m}");
        let reply = client
            .send_mail(from, bob, &message(from, bob, &marker))
            .expect("reply");
        assert_eq!(reply.code, 250, "node {}: {reply}", m % 2 + 1);
        client.quit();
    }
    let stores: Vec<_> = nodes
        .iter()
        .map(|(_, path, data, _)| {
            let config =
                sealpost::config::Config::load(path, Some(data)).unwrap_or_else(|e| panic!("{e}"));
            sealpost::store::EncryptedStore::open(&config, "test").expect("store")
        })
        .collect();
    let until = Instant::now() + Duration::from_secs(30);
    let counts = loop {
        let counts: Vec<usize> = stores
            .iter()
            .map(|s| s.count(bob).expect("count"))
            .collect();
        if counts.iter().all(|&n| n >= 4) && queue_rows(&cluster, &database).is_empty() {
            break counts;
        }
        assert!(Instant::now() < until, "delivered {counts:?} of 4");
        std::thread::sleep(Duration::from_millis(100));
    };
    // One mailbox store in the database: each node sees the four messages, stored once.
    assert_eq!(counts, [4, 4], "{counts:?}");
    let ids: Vec<String> = nodes
        .iter()
        .map(|(_, _, data, _)| std::fs::read_to_string(data.join("node-id")).expect("node id"))
        .collect();
    assert_ne!(ids[0], ids[1], "each node has an id of its own");
    eprintln!("compose fabrikam nodes {ids:?} delivered {counts:?}");
}

fn tlsa(domain: &str) -> sealpost::report::tlsrpt::Policy {
    sealpost::report::tlsrpt::Policy {
        kind: sealpost::report::tlsrpt::PolicyType::Tlsa,
        domain: domain.into(),
        strings: vec!["3 1 1 00ff".into()],
        mx: vec![format!("mx.{domain}")],
    }
}

#[test]
fn the_tls_report_journal_counts_every_node_and_survives_the_database_going_away() {
    use sealpost::report::tlsrpt::pg::PgJournal;
    use sealpost::report::tlsrpt::{Failure, SessionJournal};
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let database = cluster.create_database();
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = cluster.settings(&database, &cluster.password_file(dir.path()));
    let open = |node: &str| {
        let db = sealpost::pg::Database::open(&settings).expect("database");
        PgJournal::new(db, node)
    };
    let (a, b) = (open("node-a"), open("node-b"));
    let day = sealpost::report::tlsrpt::journal::day_start(chrono::Utc::now().timestamp()) - 86_400;
    let failure = Failure {
        result: "certificate-expired".into(),
        mx: Some("mx.b.test".into()),
        ip: Some("127.0.0.7".parse().expect("ip")),
        info: None,
    };
    a.record_at(day + 10, &tlsa("b.test"), None);
    a.record_at(day + 20, &tlsa("b.test"), None);
    b.record_at(day + 30, &tlsa("b.test"), Some(failure.clone()));
    b.record_at(day + 40, &tlsa("b.test"), Some(failure.clone()));
    b.record_at(day + 50, &tlsa("c.test"), None);
    // After the end of the period: not in its report.
    b.record_at(day + 86_400 + 5, &tlsa("b.test"), None);
    a.sync();
    b.sync();
    assert_eq!((a.buffered(), b.buffered()), (0, 0));
    let nodes = cluster.psql(
        &database,
        "SELECT string_agg(node || '=' || n, ',' ORDER BY node) FROM \
         (SELECT node, count(*) n FROM tls_report_session GROUP BY node) x",
    );
    assert_eq!(nodes.trim(), "node-a=2,node-b=4");

    // Either node sees both nodes' sessions.
    let until = day + 86_400;
    for journal in [&a, &b] {
        let pending = journal.pending(until).expect("pending");
        let p = &pending["b.test"];
        assert_eq!((p.start, p.end, p.sessions()), (day, until, (2, 2)));
        assert_eq!(pending["c.test"].sessions(), (1, 0));
    }

    // One run at a time across the nodes: B waits while A holds the send lock.
    let mut run = a.lock().expect("lock");
    assert_eq!(
        run.pending(until).expect("pending")["b.test"].sessions(),
        (2, 2)
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let waiting = std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let mut second = b.lock().expect("second lock");
            tx.send(()).expect("send");
            second.pending(until).expect("pending under the lock")
        });
        std::thread::sleep(Duration::from_millis(1500));
        assert!(rx.try_recv().is_err(), "B took the lock A holds");
        run.mark("b.test", until).expect("mark");
        run.finish(until, true, false).expect("finish");
        waiter.join().expect("waiter")
    });
    // Marked by A: B's run builds nothing for b.test, only c.test (not marked) is left.
    assert!(!waiting.contains_key("b.test"), "{waiting:?}");
    assert_eq!(waiting["c.test"].sessions(), (1, 0));
    assert_eq!(a.daily_until().expect("daily"), Some(until));
    assert_eq!(b.daily_until().expect("daily"), Some(until));
    let later = b.pending(until + 86_400).expect("pending");
    assert_eq!(later["b.test"].sessions(), (1, 0));
    assert_eq!(later["b.test"].start, until);

    // The database goes away: recording neither blocks nor fails; the sessions wait in memory
    // and reach the database once it is back.
    cluster.stop_server();
    let started = Instant::now();
    for i in 0..50 {
        a.record_at(until + 100 + i, &tlsa("d.test"), None);
    }
    assert!(started.elapsed() < Duration::from_millis(200));
    a.sync();
    assert_eq!(a.buffered(), 50, "kept while the database is away");
    cluster.start_server();
    let deadline = Instant::now() + Duration::from_secs(20);
    while a.buffered() > 0 {
        assert!(
            Instant::now() < deadline,
            "never inserted once the database was back"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(a.buffered(), 0);
    let pending = b.pending(until + 86_400).expect("pending");
    assert_eq!(pending["d.test"].sessions(), (50, 0));
}

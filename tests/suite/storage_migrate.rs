//! `sealpost storage migrate` moves a node's queue from its spool into a real PostgreSQL: mail
//! queued by an embedded node (its next hop down) goes into the database byte for byte, sealed,
//! the spool empties, its mailbox store is copied (sealed) and read from the database, a second
//! run copies nothing, `queue list` shows the messages from the database (a held one still
//! held), and the node restarted on PostgreSQL delivers them once the next hop is up (the held
//! one once released). The fingerprints of transmissions of the last 24 hours and the TLS-RPT
//! sessions not reported yet go too (with how far each domain was reported), once.

use crate::support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use support::domains::{
    free_port, message, queue_list_json, sealpost, wait_for_mailbox, DomainSpec, ServeProcess,
};
use support::plain_smtp::PlainClient;
use support::postgres::Cluster;

const ALICE: &str = "alice@contoso.test";
const BOB: &str = "bob@fabrikam.test";

/// The queue files of a spool (any state), with their bytes.
fn spool_files(data: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for state in ["incoming", "active", "deferred", "hold"] {
        let Ok(dir) = std::fs::read_dir(data.join("queue").join(state)) else {
            continue;
        };
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            files.push((name, std::fs::read(e.path()).unwrap()));
        }
    }
    files.sort();
    files
}

fn migrate(config: &Path) -> String {
    let (code, out, err) = sealpost(&[
        "storage",
        "migrate",
        "--config",
        &config.display().to_string(),
    ]);
    assert_eq!(code, 0, "storage migrate: {out}{err}");
    out
}

#[test]
fn a_spool_moves_into_postgres_sealed_and_is_delivered_from_there() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let database = cluster.create_database();
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, next_hop) = (free_port(), free_port());
    let config = DomainSpec::new("contoso", &[ALICE], port)
        .route("fabrikam.test", next_hop)
        .write(dir.path());
    let data = dir.path().join("contoso-data");

    // An embedded node queues three messages for a next hop that is down.
    let server = ServeProcess::start(&config, port);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut client = PlainClient::connect(addr, Duration::from_secs(20)).expect("connect");
    for i in 0..3 {
        let reply = client
            .send_mail(ALICE, BOB, &message(ALICE, BOB, &format!("MIGRATE-{i}")))
            .expect("reply");
        assert_eq!(reply.code, 250, "{reply}");
    }
    // ... and delivers one to its own mailbox.
    let reply = client
        .send_mail(BOB, ALICE, &message(BOB, ALICE, "MIGRATE-LOCAL"))
        .expect("reply");
    assert_eq!(reply.code, 250, "{reply}");
    drop(client);
    wait_for_mailbox(&data, ALICE, 1, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));
    server.kill9();
    let before = spool_files(&data);
    assert_eq!(before.len(), 3, "three queue files in the spool");
    // One of them held: it stays held in the database.
    let held = before[0].0.clone();
    let c = config.display().to_string();
    let (code, out, err) = sealpost(&["queue", "hold", "--config", &c, &held]);
    assert_eq!((code, out), (0, format!("{held}: held\n")), "{err}");

    // The same node, its queue now in PostgreSQL.
    let password = cluster.password_file(dir.path());
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[storage]\nbackend = \"postgres\"\nurl = \"{}\"\npassword_file = \"{}\"\n\
         tls = \"disable\"\nconnect_timeout = \"2s\"\nstatement_timeout = \"5s\"\n",
        cluster.url(&database),
        password.display()
    ));
    std::fs::write(&config, text).unwrap();

    let audit_file = dir.path().join("contoso-data.keystore/audit.log");
    let audit_lines = std::fs::read_to_string(&audit_file).expect("the node's audit log");
    let out = migrate(&config);
    // The node's audit log starts the database's chain, line for line.
    let n = audit_lines.lines().count();
    assert!(n > 0);
    assert!(out.contains(&format!("audit: {n} line(s) of")), "{out}");
    let chain = cluster.psql(&database, "SELECT line FROM audit_line ORDER BY seq");
    assert_eq!(chain, audit_lines, "the chain holds the file's lines");
    assert!(out.contains("queue: 3 messages copied"), "{out}");
    assert!(out.contains(", 1 held)"), "{out}");
    assert!(
        out.contains("mailboxes: 1 message(s) of 1 mailbox(es) copied"),
        "{out}"
    );
    // The mailbox is read from the database now, and its blob is there sealed.
    let (code, list, err) = sealpost(&["mailbox", "list", "--config", &c, "--mailbox", ALICE]);
    assert_eq!(code, 0, "{err}");
    let id = list
        .lines()
        .find(|l| l.contains("MIGRATE-LOCAL"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("not listed from the database: {list}"))
        .to_string();
    let (code, text, err) = sealpost(&[
        "mailbox",
        "read",
        "--config",
        &c,
        "--mailbox",
        ALICE,
        "--id",
        &id,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(text.contains("body MIGRATE-LOCAL"), "{text}");
    let (code, out, err) = sealpost(&["store", "verify", "--config", &c]);
    assert_eq!(code, 0, "store verify: {out}{err}");
    let (code, out, err) = sealpost(&["store", "audit", "verify", "--config", &c]);
    assert_eq!(code, 0, "store audit verify: {out}{err}");
    assert!(out.contains("audit chain in postgresql://"), "{out}");
    let row = cluster.psql(
        &database,
        "SELECT count(*), sum(position('MIGRATE-'::bytea in data)) FROM store_blob",
    );
    assert_eq!(row.trim(), "1|0", "one sealed blob: {row}");
    assert!(spool_files(&data).is_empty(), "the spool is empty");
    // Byte for byte what the spool held: sealed, no plaintext in the database.
    for (id, bytes) in &before {
        let row = cluster.psql(
            &database,
            &format!(
                "SELECT state IN ('incoming', 'deferred'), state = 'hold', \
                 body = '\\x{}'::bytea, \
                 position('MIGRATE-'::bytea in body) FROM queue_message WHERE id = '{id}'",
                hex(bytes)
            ),
        );
        let expect = if *id == held { "f|t|t|0" } else { "t|f|t|0" };
        assert_eq!(row.trim(), expect, "{id}: {row}");
    }
    let again = migrate(&config);
    assert!(again.contains("queue: 0 messages copied"), "{again}");
    assert!(
        again.contains("mailboxes: not copied: index: the database holds a mailbox store already"),
        "{again}"
    );
    assert!(
        again.contains("audit: not copied: index: the database's audit chain holds"),
        "{again}"
    );

    let list = queue_list_json(&config);
    for (id, _) in &before {
        assert!(
            list.contains(id.as_str()),
            "{id} listed from the database: {list}"
        );
    }

    // The next hop comes up, the node restarts on PostgreSQL and delivers all three.
    let fabrikam = DomainSpec::new("fabrikam", &[BOB], next_hop).write(dir.path());
    let _fabrikam = ServeProcess::start(&fabrikam, next_hop);
    let _contoso = ServeProcess::start(&config, port);
    let (code, _, err) = sealpost(&["queue", "flush", "--config", &c]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = sealpost(&["queue", "release", "--config", &c, &held]);
    assert_eq!((code, out), (0, format!("{held}: released\n")), "{err}");
    let got = wait_for_mailbox(
        &dir.path().join("fabrikam-data"),
        BOB,
        3,
        Duration::from_secs(60),
    );
    let text: Vec<String> = got
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect();
    for i in 0..3 {
        let marker = format!("MIGRATE-{i}");
        assert_eq!(
            text.iter().filter(|m| m.contains(&marker)).count(),
            1,
            "{marker} delivered once"
        );
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `[storage]` section of a node on `database`.
fn postgres_section(cluster: &Cluster, database: &str, dir: &Path) -> String {
    let password = cluster.password_file(dir);
    format!(
        "\n[storage]\nbackend = \"postgres\"\nurl = \"{}\"\npassword_file = \"{}\"\n\
         tls = \"disable\"\nconnect_timeout = \"2s\"\nstatement_timeout = \"5s\"\n",
        cluster.url(database),
        password.display()
    )
}

#[test]
fn recent_fingerprints_and_unreported_tls_sessions_move_once() {
    use sealpost::crypto::keyfile::ServiceKey;
    use sealpost::queue::retransmit::Retransmissions;
    use sealpost::queue::{new_queue_id, Clock, Spool, SystemClock};
    use sealpost::report::tlsrpt::{Failure, Policy, Recorder, SessionJournal};

    let Some(cluster) = Cluster::start() else {
        return;
    };
    let database = cluster.create_database();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = DomainSpec::new("contoso", &[ALICE], free_port()).write(dir.path());
    let data = dir.path().join("contoso-data");
    let now = SystemClock.now();

    // What an embedded node kept: fingerprints of messages that left its queue (one of them
    // more than 24 hours ago) in queue/transmissions.log ...
    let key = std::sync::Arc::new(
        ServiceKey::load_or_create(&dir.path().join("contoso-data.keystore")).unwrap(),
    );
    let spool = Spool::open(&data, key.clone()).unwrap();
    let log = Retransmissions::open(&spool, &key, now).unwrap();
    let to = [ALICE.to_string()];
    let fp = |n: u32| {
        log.fingerprint(
            BOB,
            &to,
            format!("Message-ID: <{n}@f>\r\n\r\n.\r\n").as_bytes(),
        )
    };
    let (recent, other, old) = (new_queue_id(), new_queue_id(), new_queue_id());
    log.left_queue(&fp(1), &recent, now - 3600);
    log.left_queue(&fp(2), &other, now - 23 * 3600);
    log.left_queue(&fp(3), &old, now - 25 * 3600);

    // ... and TLS-RPT sessions: a.test reported up to `reported` (two sessions before it, three
    // identical ones after), b.test never reported (one failure).
    let reported = now - 7200;
    let journal = Recorder::new(&data);
    let (a, b) = (Policy::none("a.test"), Policy::none("b.test"));
    for t in [reported - 100, reported - 50] {
        journal.record_at(t, &a, None);
    }
    for _ in 0..3 {
        journal.record_at(reported + 10, &a, None);
    }
    let failure = Failure {
        result: "starttls-not-supported".into(),
        mx: Some("mx.b.test".into()),
        ip: None,
        info: None,
    };
    journal.record_at(reported + 20, &b, Some(failure));
    SessionJournal::sync(&journal);
    let mut run = SessionJournal::lock(&journal).unwrap();
    run.mark("a.test", reported).unwrap();
    run.finish(reported, true, false).unwrap();
    drop(journal);

    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&postgres_section(&cluster, &database, dir.path()));
    std::fs::write(&config, text).unwrap();
    let out = migrate(&config);
    assert!(
        out.contains("transmissions: 2 fingerprint(s) of the last 24 hours copied to"),
        "{out}"
    );
    assert!(out.contains("(0 there already)"), "{out}");
    assert!(
        out.contains("tls-rpt: 4 session(s) not reported yet copied to"),
        "{out}"
    );
    assert!(out.contains("(2 reported or there already)"), "{out}");
    assert!(out.contains("report state of 1 domain(s)"), "{out}");

    let rows = cluster.psql(
        &database,
        "SELECT encode(fingerprint, 'hex'), id, accepted_at FROM queue_transmission \
         ORDER BY accepted_at",
    );
    assert_eq!(
        rows.trim(),
        format!(
            "{}|{other}|{}\n{}|{recent}|{}",
            fp(2),
            now - 23 * 3600,
            fp(1),
            now - 3600
        ),
        "the two fingerprints of the last 24 hours, not the older one"
    );
    let sessions = cluster.psql(
        &database,
        "SELECT domain, t, count(*), bool_and(failure IS NULL) FROM tls_report_session \
         GROUP BY domain, t ORDER BY domain, t",
    );
    assert_eq!(
        sessions.trim(),
        format!("a.test|{}|3|t\nb.test|{}|1|f", reported + 10, reported + 20),
        "the sessions not reported yet, each once"
    );
    let state = cluster.psql(
        &database,
        "SELECT domain, reported_until FROM tls_report_state ORDER BY domain",
    );
    assert_eq!(state.trim(), format!("a.test|{reported}"));
    let daily = cluster.psql(&database, "SELECT daily_until FROM tls_report_daily");
    assert_eq!(daily.trim(), reported.to_string());

    // A second run adds nothing.
    let again = migrate(&config);
    assert!(
        again.contains("transmissions: 0 fingerprint(s) of the last 24 hours copied to"),
        "{again}"
    );
    assert!(again.contains("(2 there already)"), "{again}");
    assert!(
        again.contains("tls-rpt: 0 session(s) not reported yet copied to"),
        "{again}"
    );
    let count = cluster.psql(
        &database,
        "SELECT (SELECT count(*) FROM queue_transmission), (SELECT count(*) FROM tls_report_session)",
    );
    assert_eq!(count.trim(), "2|4");

    // What a report run on PostgreSQL would send now: a.test's three sessions after its
    // reported time and b.test's one, nothing reported twice.
    let c = config.display().to_string();
    let (code, shown, err) = sealpost(&["tls-report", "show", "--json", "--config", &c]);
    assert_eq!(code, 0, "tls-report show: {shown}{err}");
    let summaries: Vec<(String, u64, u64)> = shown
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a report");
            let p = &v["policies"][0];
            (
                p["policy"]["policy-domain"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                p["summary"]["total-successful-session-count"]
                    .as_u64()
                    .unwrap_or(99),
                p["summary"]["total-failure-session-count"]
                    .as_u64()
                    .unwrap_or(99),
            )
        })
        .collect();
    assert_eq!(
        summaries,
        [("a.test".to_string(), 3, 0), ("b.test".to_string(), 0, 1)],
        "{shown}"
    );
}

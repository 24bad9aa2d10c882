//! `sealpost storage migrate` moves a node's queue from its spool into a real PostgreSQL: mail
//! queued by an embedded node (its next hop down) goes into the database byte for byte, sealed,
//! the spool empties, its mailbox store is copied (sealed) and read from the database, a second
//! run copies nothing, `queue list` shows the messages from the database (a held one still
//! held), and the node restarted on PostgreSQL delivers them once the next hop is up (the held
//! one once released).

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

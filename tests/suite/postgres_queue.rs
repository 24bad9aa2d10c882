//! `sealpost serve` with the queue in a real PostgreSQL (`[storage] backend = "postgres"`):
//! mail is accepted over SMTP (250 only once the row is committed), delivered to a local
//! mailbox, and `sealpost queue list` shows what waits, read from the database. With the
//! database stopped, DATA gets 451 4.3.0 within the command timeout and nothing is lost; once
//! it is back, a resend is accepted. And `check-config` (and `serve`) refuse a bad `[storage]`,
//! naming the file, the key and the problem.

use crate::support;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sealpost::crypto::keyfile::ServiceKey;
use sealpost::pg::{Database, PgTls};
use sealpost::queue::{new_queue_id, Envelope, PgQueue, QueueError, QueueStore, Spool};

use support::domains::{
    free_port, message, pki, queue_list_json, sealpost, wait_for_mailbox, DomainSpec, ServeProcess,
};
use support::plain_smtp::PlainClient;
use support::postgres::Cluster;

const ALICE: &str = "alice@contoso.test";
const BOB: &str = "bob@fabrikam.test";
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

fn storage_toml(cluster: &Cluster, database: &str, password_file: &Path) -> String {
    format!(
        "[storage]\nbackend = \"postgres\"\nurl = \"{}\"\npassword_file = \"{}\"\n\
         tls = \"disable\"\nconnect_timeout = \"2s\"\nstatement_timeout = \"5s\"\n\n\
         [limits]\ncommand_timeout = \"{}s\"\n",
        cluster.url(database),
        password_file.display(),
        COMMAND_TIMEOUT.as_secs()
    )
}

/// The queue id of a `250 2.0.0 Ok: queued as <id>` reply.
fn queued_id(reply: &support::plain_smtp::Reply) -> String {
    assert_eq!(reply.code, 250, "{reply}");
    reply
        .text
        .split_whitespace()
        .last()
        .expect("an id")
        .to_string()
}

#[test]
fn serve_queues_in_postgres_and_answers_451_while_the_database_is_down() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let database = cluster.create_database();
    let dir = tempfile::tempdir().expect("tempdir");
    let password = cluster.password_file(dir.path());
    let (port, closed) = (free_port(), free_port());
    let config = DomainSpec::new("contoso", &[ALICE], port)
        .route("fabrikam.test", closed)
        .toml(&storage_toml(&cluster, &database, &password))
        .write(dir.path());
    let data = dir.path().join("contoso-data");
    let _server = ServeProcess::start(&config, port);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut client = PlainClient::connect(addr, COMMAND_TIMEOUT * 2).expect("connect");

    // Local mail: accepted, committed, delivered.
    let reply = client
        .send_mail(ALICE, ALICE, &message(ALICE, ALICE, "PG-LOCAL-1"))
        .expect("reply");
    queued_id(&reply);
    let got = wait_for_mailbox(&data, ALICE, 1, Duration::from_secs(30));
    assert!(String::from_utf8_lossy(&got[0]).contains("PG-LOCAL-1"));

    // Remote mail to a closed port: it waits in the database, sealed.
    let reply = client
        .send_mail(ALICE, BOB, &message(ALICE, BOB, "PG-WAITS-2"))
        .expect("reply");
    let waiting = queued_id(&reply);
    let row = cluster.psql(
        &database,
        &format!(
            "SELECT state IN ('incoming', 'active', 'deferred'), \
             position('PG-WAITS-2'::bytea in body) FROM queue_message WHERE id = '{waiting}'"
        ),
    );
    assert_eq!(
        row.trim(),
        "t|0",
        "committed before the 250, and sealed: {row}"
    );
    let out = queue_list_json(&config);
    assert!(out.contains(&waiting) && out.contains(BOB), "{out}");
    assert!(
        !data
            .join("queue/incoming")
            .read_dir()
            .expect("spool")
            .any(|_| true),
        "nothing queued in the spool"
    );

    // The database goes away: DATA gets 451 4.3.0 in time, the session goes on.
    cluster.stop_server();
    let started = Instant::now();
    let down = message(ALICE, ALICE, "PG-RESENT-3");
    let reply = client.send_mail(ALICE, ALICE, &down).expect("reply");
    let took = started.elapsed();
    assert_eq!((reply.code, reply.enhanced()), (451, "4.3.0"), "{reply}");
    assert!(took < COMMAND_TIMEOUT, "451 after {took:?}");
    eprintln!("database stopped: DATA answered 451 4.3.0 after {took:?}");
    let (code, _, err) = sealpost(&["queue", "list", "--config", &config.display().to_string()]);
    assert_ne!(code, 0, "queue list with the database down");
    assert!(err.contains("postgresql://postgres@127.0.0.1"), "{err}");
    assert!(!err.contains("s3cret"), "no password in messages: {err}");
    let rset = client.command("RSET").expect("RSET");
    assert_eq!(rset.code, 250, "{rset}");

    // Back: the resend is accepted and delivered; nothing was lost.
    cluster.start_server();
    let started = Instant::now();
    let reply = client.send_mail(ALICE, ALICE, &down).expect("reply");
    queued_id(&reply);
    eprintln!(
        "database back: the resend got 250 after {:?}",
        started.elapsed()
    );
    client.quit();
    let got = wait_for_mailbox(&data, ALICE, 2, Duration::from_secs(30));
    let texts: Vec<String> = got
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect();
    assert!(texts.iter().any(|t| t.contains("PG-RESENT-3")), "{texts:?}");
    assert_eq!(
        texts.iter().filter(|t| t.contains("PG-RESENT-3")).count(),
        1,
        "the refused attempt was not queued"
    );
    let out = queue_list_json(&config);
    assert!(
        out.contains(&waiting),
        "the waiting message survived: {out}"
    );
    assert_eq!(out.lines().count(), 1, "{out}");
}

#[test]
fn the_queue_reaches_the_database_over_verified_tls_only() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    cluster.require_tls(&pki().join("ca.crt"), &pki().join("ca.key"));
    let database = cluster.create_database();
    let dir = tempfile::tempdir().expect("tempdir");
    let key = Arc::new(ServiceKey::load_or_create(&dir.path().join("keys")).expect("key"));
    let mut settings = cluster.settings(&database, &cluster.password_file(dir.path()));
    settings.tls = PgTls::Require;
    settings.ca_file = Some(pki().join("ca.crt"));
    let db = Database::open(&settings).expect("a TLS connection");
    let spool = Spool::open(&dir.path().join("data"), key.clone()).expect("staging");
    let queue = PgQueue::new(db, spool, key, "node-tls", Duration::from_secs(60));
    let env = Envelope::new(
        new_queue_id(),
        ALICE,
        vec![BOB.into()],
        "client.test",
        "127.0.0.1:1",
        0,
    );
    queue
        .enqueue(&env, b"Subject: over TLS\r\n\r\nhi\r\n")
        .expect("enqueue");
    assert_eq!(queue.claim(&env.id).expect("claim").expect("queued").0, env);
    let over_tls = cluster.psql(
        "postgres",
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE s.ssl AND a.application_name = 'sealpost'",
    );
    assert_ne!(over_tls.trim(), "0", "sealpost's connections use TLS");
    let plain = cluster.psql(
        "postgres",
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE NOT s.ssl AND a.application_name = 'sealpost'",
    );
    assert_eq!(plain.trim(), "0", "no plain connection");

    // Plain TCP is refused by the server (hostssl only).
    let mut no_tls = settings.clone();
    no_tls.tls = PgTls::Disable;
    no_tls.ca_file = None;
    let e = Database::open(&no_tls)
        .err()
        .expect("refused without TLS")
        .to_string();
    assert!(
        e.contains("pg_hba.conf") || e.contains("no encryption"),
        "{e}"
    );
    // Against the public roots, a certificate from the test CA is not trusted.
    let mut public_roots = settings.clone();
    public_roots.ca_file = None;
    let e = Database::open(&public_roots)
        .err()
        .expect("untrusted")
        .to_string();
    eprintln!("untrusted server certificate: {e}");
    assert!(e.contains("invalid peer certificate"), "{e}");
}

#[test]
fn a_database_that_never_answers_fails_within_the_timeouts() {
    // A listener that accepts and then says nothing, as a hung server or a black hole would.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let held = std::thread::spawn(move || {
        let conns: Vec<_> = silent.incoming().take(1).collect();
        std::thread::sleep(Duration::from_secs(10));
        drop(conns);
    });
    let settings = sealpost::pg::PgSettings {
        url: format!("postgresql://sealpost@127.0.0.1:{port}/sealpost"),
        password: sealpost::pg::PasswordSource::None,
        tls: PgTls::Disable,
        ca_file: None,
        connect_timeout: Duration::from_secs(2),
        statement_timeout: Duration::from_secs(2),
        lease: Duration::from_secs(60),
        node_id: None,
    };
    let started = Instant::now();
    let e = Database::open(&settings).err().expect("no database there");
    let took = started.elapsed();
    eprintln!("silent database: {e} after {took:?}");
    assert!(took < Duration::from_secs(5), "gave up after {took:?}");
    assert!(took >= Duration::from_secs(1), "{e} after {took:?}");
    drop(held);
}

/// A TCP proxy to the database that can stop passing bytes on (a server that hangs, a network
/// that drops everything) and start again.
struct Freezer {
    port: u16,
    frozen: Arc<AtomicBool>,
}

impl Freezer {
    fn start(upstream: u16) -> Freezer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let frozen = Arc::new(AtomicBool::new(false));
        let flag = frozen.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                for (from, to) in [
                    (
                        client.try_clone().expect("clone"),
                        server.try_clone().expect("clone"),
                    ),
                    (server, client),
                ] {
                    let flag = flag.clone();
                    std::thread::spawn(move || pass(from, to, &flag));
                }
            }
        });
        Freezer { port, frozen }
    }
}

fn pass(mut from: std::net::TcpStream, mut to: std::net::TcpStream, frozen: &AtomicBool) {
    use std::io::{Read, Write};
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while frozen.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(10));
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

#[test]
fn a_database_that_stops_answering_mid_run_fails_enqueue_within_the_timeouts() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let database = cluster.create_database();
    let dir = tempfile::tempdir().expect("tempdir");
    let key = Arc::new(ServiceKey::load_or_create(&dir.path().join("keys")).expect("key"));
    let proxy = Freezer::start(cluster.port());
    let mut settings = cluster.settings(&database, &cluster.password_file(dir.path()));
    settings.url = settings.url.replace(
        &format!(":{}/", cluster.port()),
        &format!(":{}/", proxy.port),
    );
    settings.connect_timeout = Duration::from_secs(2);
    settings.statement_timeout = Duration::from_secs(2);
    let db = Database::open(&settings).expect("through the proxy");
    let spool = Spool::open(&dir.path().join("data"), key.clone()).expect("staging");
    let queue = PgQueue::new(db, spool, key, "node-f", Duration::from_secs(60));
    let envelope = || {
        Envelope::new(
            new_queue_id(),
            ALICE,
            vec![BOB.into()],
            "client.test",
            "127.0.0.1:1",
            0,
        )
    };
    let first = envelope();
    queue
        .enqueue(&first, b"Subject: one\r\n\r\n1\r\n")
        .expect("enqueue");

    proxy.frozen.store(true, Ordering::SeqCst);
    let stuck = envelope();
    let started = Instant::now();
    let e = queue
        .enqueue(&stuck, b"Subject: two\r\n\r\n2\r\n")
        .expect_err("no answer");
    let took = started.elapsed();
    eprintln!("database stopped answering: {e} after {took:?}");
    assert!(matches!(e, QueueError::Unavailable { .. }), "{e}");
    assert!(took < Duration::from_secs(6), "gave up after {took:?}");
    assert!(
        e.to_string().contains("postgresql://postgres@127.0.0.1"),
        "{e}"
    );
    let probe_started = Instant::now();
    assert!(queue.probe_write().is_err(), "health probe while frozen");
    assert!(probe_started.elapsed() < Duration::from_secs(6));

    proxy.frozen.store(false, Ordering::SeqCst);
    let again = envelope();
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Err(e) = queue.enqueue(&again, b"Subject: three\r\n\r\n3\r\n") {
        assert!(Instant::now() < deadline, "never recovered: {e}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let ids: Vec<String> = queue
        .list()
        .expect("list")
        .into_iter()
        .map(|e| e.envelope.id)
        .collect();
    assert!(
        ids.contains(&first.id) && ids.contains(&again.id),
        "{ids:?}"
    );
    // The timed-out enqueue either committed or not at all; never half.
    if ids.contains(&stuck.id) {
        assert_eq!(
            queue.claim(&stuck.id).expect("claim").expect("whole").1,
            b"Subject: two\r\n\r\n2\r\n"
        );
    }
}

#[test]
fn check_config_names_the_file_key_and_problem_of_a_bad_storage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let open_pw = dir.path().join("open.pw");
    std::fs::write(&open_pw, "pw\n").expect("write");
    std::fs::set_permissions(&open_pw, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let url = "url = \"postgresql://mta@127.0.0.1:1/mail\"";
    let cases = [
        (
            "backend = \"oracle\"".to_string(),
            "storage.backend",
            "unknown backend",
        ),
        (
            "backend = \"postgres\"".to_string(),
            "storage.url",
            "missing",
        ),
        (
            format!("backend = \"postgres\"\n{url}\npassword_file = \"missing.pw\""),
            "storage.password_file",
            "file not found: missing.pw",
        ),
        (
            format!("backend = \"postgres\"\n{url}\npassword_file = \"open.pw\""),
            "storage.password_file",
            "chmod 600",
        ),
    ];
    for (i, (storage, key, problem)) in cases.iter().enumerate() {
        let port = free_port();
        let config = DomainSpec::new("contoso", &[ALICE], port)
            .toml(&format!("[storage]\n{storage}\n"))
            .write(dir.path());
        let shown = config.display().to_string();
        let (code, _, err) = sealpost(&["check-config", "--config", &shown]);
        assert_ne!(code, 0, "case {i}: accepted");
        assert!(
            err.contains(&shown) && err.contains(key) && err.contains(problem),
            "case {i}: {err}"
        );
        // The server does not start either.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sealpost"))
            .args(["serve", "--config", &shown])
            .output()
            .expect("serve");
        assert!(!out.status.success(), "case {i}: serve started");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "case {i}: {err}");
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    }
}

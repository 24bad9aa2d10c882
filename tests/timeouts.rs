//! Command and DATA timeouts (RFC 5321 §4.5.3.2) over real sockets, against in-process servers
//! with one-second limits.

mod support;

use std::time::{Duration, Instant};

use sealpost::app::Server;
use support::domains::{free_port, load, sealpost, DomainSpec};
use support::raw::RawClient;

const ALICE: &str = "alice@contoso.test";

/// contoso.test (mailbox alice, STARTTLS offered) with the given `[limits]` timeouts.
async fn start(dir: &std::path::Path, command: &str, data: &str) -> Server {
    let spec = DomainSpec::new("contoso", &[ALICE], free_port()).toml(&format!(
        "[limits]\ncommand_timeout = \"{command}\"\ndata_timeout = \"{data}\"\n"
    ));
    let server = sealpost::app::start(load(&spec.write(dir))).await;
    server.unwrap_or_else(|e| panic!("start: {e}"))
}

fn mailbox(server: &Server) -> Vec<String> {
    let store = server.store();
    let list = store.list(ALICE).expect("mailbox list");
    list.iter()
        .map(|m| String::from_utf8_lossy(&store.read(ALICE, &m.id).expect("read")).into_owned())
        .collect()
}

async fn wait_for_mail(server: &Server, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = mailbox(server);
        if got.len() >= n {
            return got;
        }
        assert!(Instant::now() < deadline, "{} of {n} messages", got.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_gets_421_after_the_command_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), "1s", "30s").await;
    let addr = server.local_addrs()[0];

    let mut c = RawClient::connect(addr).await;
    assert!(c.command("EHLO client.test").await.starts_with("250"));
    let (reply, waited) = c.timed_reply().await;
    assert_eq!(reply, "421 4.4.2 mx.contoso.test Error: timeout exceeded");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    assert!(c.closed().await, "the connection is closed after the 421");

    // The TLS handshake is bounded by the command timeout too: a client that asks for
    // STARTTLS and then sends nothing is dropped.
    let mut c = RawClient::connect(addr).await;
    assert!(c.command("EHLO client.test").await.starts_with("250"));
    assert!(c.command("STARTTLS").await.starts_with("220 "));
    let start = Instant::now();
    assert!(c.closed().await, "a stalled handshake is given up");
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_data_is_bounded_by_the_data_timeout_not_the_command_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), "1s", "30s").await;
    let mut c = RawClient::connect(server.local_addrs()[0]).await;
    c.start_data("carol@fabrikam.test", ALICE).await;
    c.send(b"Subject: patient\r\n\r\nfirst half\r\n").await;
    // Three times the command timeout, well within the data timeout.
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.send(b"second half\r\n.\r\n").await;
    let reply = c.reply().await;
    assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
    let got = wait_for_mail(&server, 1).await;
    assert!(got[0].contains("first half\r\nsecond half"), "{}", got[0]);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stalling_in_data_gets_421_and_nothing_is_queued() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), "30s", "1s").await;
    let addr = server.local_addrs()[0];

    let mut c = RawClient::connect(addr).await;
    c.start_data("carol@fabrikam.test", ALICE).await;
    c.send(b"Subject: stalled\r\n\r\nthis message never ends\r\n")
        .await;
    let (reply, waited) = c.timed_reply().await;
    assert_eq!(reply, "421 4.4.2 mx.contoso.test Error: timeout exceeded");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(10),
        "{waited:?}, far below the 30 s command timeout"
    );
    assert!(c.closed().await);
    assert!(
        server.spool().list().expect("spool").is_empty(),
        "nothing queued"
    );

    // A message sent after it is delivered, and it is the only one.
    let mut c = RawClient::connect(addr).await;
    c.start_data("carol@fabrikam.test", ALICE).await;
    c.send(b"Subject: complete\r\n\r\ndone\r\n.\r\n").await;
    assert!(c.reply().await.starts_with("250 2.0.0 Ok: queued as "));
    let got = wait_for_mail(&server, 1).await;
    assert_eq!(got.len(), 1);
    assert!(got[0].contains("Subject: complete"), "{}", got[0]);
    assert!(!got.iter().any(|m| m.contains("never ends")));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_but_steady_data_longer_than_the_data_timeout_is_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), "30s", "1s").await;
    let mut c = RawClient::connect(server.local_addrs()[0]).await;
    c.start_data("carol@fabrikam.test", ALICE).await;
    c.send(b"Subject: slow\r\n\r\n").await;
    let start = Instant::now();
    for i in 0..8 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        c.send(format!("line {i}\r\n").as_bytes()).await;
    }
    c.send(b".\r\n").await;
    let reply = c.reply().await;
    assert!(
        start.elapsed() > Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
    let got = wait_for_mail(&server, 1).await;
    assert!(got[0].contains("line 0\r\n") && got[0].contains("line 7\r\n"));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_idle_timeout_name_still_sets_the_command_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec =
        DomainSpec::new("contoso", &[ALICE], free_port()).toml("[limits]\nidle_timeout = \"1s\"\n");
    let config = spec.write(dir.path());
    let (code, _, stderr) = sealpost(&["check-config", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("limits.idle_timeout is deprecated"),
        "{stderr}"
    );
    let server = sealpost::app::start(load(&config)).await.expect("start");
    let mut c = RawClient::connect(server.local_addrs()[0]).await;
    let (reply, waited) = c.timed_reply().await;
    assert_eq!(reply, "421 4.4.2 mx.contoso.test Error: timeout exceeded");
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    assert!(c.closed().await);
    server.shutdown().await;
}

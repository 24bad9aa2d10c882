//! Graceful shutdown of the real `sealpost serve` on SIGTERM: listeners close at once, idle
//! sessions are told 421 4.3.2, transactions in flight finish (and are queued durably) within
//! `server.shutdown_timeout`, what is left after it is cut, and the process exits 0.

use crate::support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::domains::{free_port, load, wait_for_mailbox_async, DomainSpec, ServeProcess};
use support::raw::RawClient;

const ALICE: &str = "alice@contoso.test";
const BYE: &str = "421 4.3.2 mx.contoso.test Service shutting down";

struct Domain {
    config: PathBuf,
    data: PathBuf,
    port: u16,
}

impl Domain {
    /// contoso.test with mailbox alice and the given grace period.
    fn write(dir: &Path, shutdown_timeout: &str) -> Domain {
        let port = free_port();
        let config = DomainSpec::new("contoso", &[ALICE], port).write(dir);
        let text = std::fs::read_to_string(&config).expect("read config");
        let text = text.replacen(
            "[server]\n",
            &format!("[server]\nshutdown_timeout = \"{shutdown_timeout}\"\n"),
            1,
        );
        std::fs::write(&config, text).expect("write config");
        let data = load(&config).data_dir;
        Domain { config, data, port }
    }

    fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    /// What the server logged (ServeProcess appends stderr to `<config>.<test pid>.log`).
    fn log(&self) -> String {
        let log = self
            .config
            .with_extension(format!("{}.log", std::process::id()));
        std::fs::read_to_string(log).unwrap_or_default()
    }
}

fn sigterm(server: &ServeProcess) {
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Waits for the process to exit; its exit code.
async fn exit_code(server: &mut ServeProcess, within: Duration) -> i32 {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = server.child.try_wait().expect("try_wait") {
            return status.code().unwrap_or(-1);
        }
        assert!(Instant::now() < deadline, "still running after {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn running(server: &mut ServeProcess) -> bool {
    server.child.try_wait().expect("try_wait").is_none()
}

/// Waits until the port refuses connections.
async fn refused(addr: SocketAddr) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match tokio::net::TcpStream::connect(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return true,
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_in_flight_finishes_while_new_connections_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let domain = Domain::write(dir.path(), "30s");
    let mut server = ServeProcess::start(&domain.config, domain.port);

    let mut c = RawClient::connect(domain.addr()).await;
    c.start_data("carol@fabrikam.test", ALICE).await;
    c.send(b"Subject: in flight\r\n\r\nfirst part\r\n").await;
    sigterm(&server);

    // The listener closes at once; the session in DATA keeps the process alive meanwhile.
    assert!(refused(domain.addr()).await, "new connections are refused");
    assert!(
        running(&mut server),
        "the transaction in flight holds the exit"
    );

    c.send(b"second part\r\n.\r\n").await;
    let reply = c.reply().await;
    assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
    // The transaction is over: the 421 follows without waiting for another command.
    assert_eq!(c.reply().await, BYE);
    assert!(c.closed().await);
    assert_eq!(exit_code(&mut server, Duration::from_secs(20)).await, 0);
    let log = domain.log();
    assert!(
        log.contains("letting the transaction in progress finish"),
        "{log}"
    );
    assert!(log.contains("stopped"), "{log}");

    // The message was queued durably: the next start delivers it.
    let _server = ServeProcess::start(&domain.config, domain.port);
    let got = wait_for_mailbox_async(&domain.data, ALICE, 1, Duration::from_secs(20)).await;
    let text = String::from_utf8_lossy(&got[0]).into_owned();
    assert!(text.contains("first part\r\nsecond part"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_is_told_421_at_once_and_the_process_exits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let domain = Domain::write(dir.path(), "30s");
    let mut server = ServeProcess::start(&domain.config, domain.port);

    let mut c = RawClient::connect(domain.addr()).await;
    assert!(c.command("EHLO client.test").await.starts_with("250"));
    sigterm(&server);
    let (reply, waited) = c.timed_reply().await;
    assert_eq!(reply, BYE);
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    assert!(c.closed().await);
    // Well before the 30 s grace period: nothing was in flight.
    assert_eq!(exit_code(&mut server, Duration::from_secs(10)).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stalling_in_data_is_cut_after_the_grace_period() {
    let dir = tempfile::tempdir().expect("tempdir");
    let domain = Domain::write(dir.path(), "2s");
    let mut server = ServeProcess::start(&domain.config, domain.port);

    let mut c = RawClient::connect(domain.addr()).await;
    c.start_data("carol@fabrikam.test", ALICE).await;
    c.send(b"Subject: stalled\r\n\r\nnever finished\r\n").await;
    let start = Instant::now();
    sigterm(&server);
    let reply = c.reply().await;
    assert_eq!(reply, BYE);
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(1800) && waited < Duration::from_secs(10),
        "cut after the 2 s grace period (the data timeout is 3 min): {waited:?}"
    );
    assert!(c.closed().await);
    assert_eq!(exit_code(&mut server, Duration::from_secs(10)).await, 0);
    let log = domain.log();
    assert!(log.contains("shutdown_timeout reached"), "{log}");

    // Nothing of the unfinished message reached the queue.
    let config = load(&domain.config);
    let key = sealpost::app::service_key(&config).expect("service key");
    let spool = sealpost::queue::Spool::open(&domain.data, key).expect("spool");
    assert!(spool.list().expect("list").is_empty());
    // (`free.*` files are delivered messages' files kept to be written again.)
    let tmp = std::fs::read_dir(domain.data.join("queue/tmp")).map(|d| {
        d.flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with("free."))
            .count()
    });
    assert_eq!(tmp.unwrap_or(0), 0, "no half-written file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_ends_the_grace_period_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let domain = Domain::write(dir.path(), "5m");
    let mut server = ServeProcess::start(&domain.config, domain.port);

    let mut c = RawClient::connect(domain.addr()).await;
    c.start_data("carol@fabrikam.test", ALICE).await;
    c.send(b"Subject: slow\r\n\r\nstill typing\r\n").await;
    sigterm(&server);
    assert!(refused(domain.addr()).await, "the shutdown has begun");
    assert!(running(&mut server), "waiting for the transaction");
    let start = Instant::now();
    sigterm(&server);
    assert_eq!(c.reply().await, BYE);
    assert!(c.closed().await);
    assert_eq!(exit_code(&mut server, Duration::from_secs(10)).await, 0);
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    let log = domain.log();
    assert!(log.contains("second signal"), "{log}");
}

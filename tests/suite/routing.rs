//! Routing over real sockets: MX lookups against a loopback DNS server, relay refusals, unknown
//! users, and the opportunistic STARTTLS fallback to plaintext.

use crate::support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sealpost::queue::RecipientStatus;
use support::dns::{Record, TestDnsServer};
use support::domains::{free_port, load, message, send, wait_for_mailbox_async, DomainSpec};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mx_lookup_routes_to_the_preferred_exchanger() {
    let dir = tempfile::tempdir().unwrap();
    let (cport, fport) = (free_port(), free_port());
    // example.test's MX points at mx.example.test (127.0.0.1); the server behind it is "fabrikam"
    // with example.test as an extra local domain. A less preferred MX has no address.
    let dns = TestDnsServer::start(vec![
        Record::mx("example.test", 10, "mx.example.test"),
        Record::mx("example.test", 20, "backup.example.test"),
        Record::a("mx.example.test", "127.0.0.1".parse().unwrap()),
        Record::null_mx("nomail.test"),
    ]);
    let mut c = DomainSpec::new("contoso", &["alice@contoso.test"], cport);
    c.nameservers = vec![dns.addr()];
    c.smtp_port = Some(fport);
    let contoso = c.write(dir.path());
    let mut f = DomainSpec::new("fabrikam", &["bob@example.test"], fport);
    f.extra_domains = vec!["example.test"];
    let fabrikam = f.write(dir.path());

    let f_cfg = load(&fabrikam);
    let f_data = f_cfg.data_dir.clone();
    let f_server = sealpost::app::start(f_cfg).await.unwrap();
    let c_server = sealpost::app::start(load(&contoso)).await.unwrap();
    let addr = c_server.local_addrs()[0];

    let (replies, _) = send(
        addr,
        "alice@contoso.test",
        &["bob@example.test"],
        &message("alice@contoso.test", "bob@example.test", "M-mx"),
    )
    .await;
    assert!(replies[0].is_ok());
    let got = wait_for_mailbox_async(&f_data, "bob@example.test", 1, WAIT).await;
    assert!(String::from_utf8_lossy(&got[0]).contains("body M-mx"));
    assert!(dns
        .queries()
        .iter()
        .any(|q| q.name.trim_end_matches('.') == "example.test"));

    // Null MX (RFC 7505): a permanent failure, the message leaves the queue, nothing is retried.
    let (replies, _) = send(
        addr,
        "alice@contoso.test",
        &["x@nomail.test"],
        &message("alice@contoso.test", "x@nomail.test", "M-null"),
    )
    .await;
    let id = replies[0]
        .as_ref()
        .unwrap()
        .text
        .trim_start_matches("Ok: queued as ")
        .to_string();
    let spool = c_server.spool();
    let deadline = std::time::Instant::now() + WAIT;
    while spool.list().unwrap().iter().any(|e| e.envelope.id == id) {
        assert!(
            std::time::Instant::now() < deadline,
            "null-MX message still queued"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c_server.shutdown().await;
    f_server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_open_relay_and_unknown_users_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut spec = DomainSpec::new("contoso", &["alice@contoso.test"], port);
    spec.relay_loopback = false;
    let server = sealpost::app::start(load(&spec.write(dir.path())))
        .await
        .unwrap();
    let addr = server.local_addrs()[0];

    let data = message("x@outside.test", "alice@contoso.test", "M-local");
    let (replies, _) = send(
        addr,
        "x@outside.test",
        &[
            "bob@fabrikam.test",
            "nobody@contoso.test",
            "alice@contoso.test",
        ],
        &data,
    )
    .await;
    let relay = replies[0].as_ref().unwrap_err();
    assert_eq!(
        (relay.code, relay.enhanced),
        (554, Some([5, 7, 1])),
        "{relay}"
    );
    assert!(relay.text.contains("Relay access denied"), "{relay}");
    let unknown = replies[1].as_ref().unwrap_err();
    assert_eq!(
        (unknown.code, unknown.enhanced),
        (550, Some([5, 1, 1])),
        "{unknown}"
    );
    // The local mailbox still gets the message.
    assert_eq!(replies[2].as_ref().map(|r| r.code), Ok(250));
    let data_dir = dir.path().join("contoso-data");
    let got = wait_for_mailbox_async(&data_dir, "alice@contoso.test", 1, WAIT).await;
    assert!(String::from_utf8_lossy(&got[0]).contains("M-local"));
    server.shutdown().await;
}

/// A peer that offers STARTTLS but breaks the handshake on the first connection, and accepts the
/// message in plaintext on the second. Records every line it received.
fn broken_tls_peer() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let _ = stream.write_all(b"220 broken.test ESMTP\r\n");
            let mut in_data = false;
            let mut line = String::new();
            while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                let cmd = line.trim_end().to_string();
                log.lock().unwrap().push(format!("conn{n}: {cmd}"));
                let reply: &[u8] = if in_data {
                    if cmd == "." {
                        in_data = false;
                        b"250 2.0.0 Ok: queued\r\n"
                    } else {
                        b""
                    }
                } else if cmd.starts_with("EHLO") {
                    b"250-broken.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n"
                } else if cmd == "STARTTLS" {
                    let _ = stream.write_all(b"220 2.0.0 go ahead\r\n");
                    let _ = stream.write_all(b"this is not a TLS server hello\r\n");
                    break;
                } else if cmd == "DATA" {
                    in_data = true;
                    b"354 go on\r\n"
                } else if cmd == "QUIT" {
                    let _ = stream.write_all(b"221 bye\r\n");
                    break;
                } else {
                    b"250 2.1.0 Ok\r\n"
                };
                let _ = stream.write_all(reply);
                line.clear();
            }
        }
    });
    (port, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_starttls_is_retried_in_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let (peer_port, seen) = broken_tls_peer();
    let port = free_port();
    let spec =
        DomainSpec::new("contoso", &["alice@contoso.test"], port).route("broken.test", peer_port);
    let server = sealpost::app::start(load(&spec.write(dir.path())))
        .await
        .unwrap();
    let data = message("alice@contoso.test", "x@broken.test", "M-fallback");
    let (replies, _) = send(
        server.local_addrs()[0],
        "alice@contoso.test",
        &["x@broken.test"],
        &data,
    )
    .await;
    assert!(replies[0].is_ok());

    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let lines = seen.lock().unwrap().clone();
        if lines.iter().any(|l| l == "conn1: .") {
            // First connection: STARTTLS, then nothing more in clear. Second: plaintext delivery.
            assert!(lines.contains(&"conn0: STARTTLS".to_string()), "{lines:?}");
            assert!(
                !lines.iter().any(|l| l.starts_with("conn0: MAIL")),
                "{lines:?}"
            );
            assert!(
                lines.contains(&"conn1: MAIL FROM:<alice@contoso.test>".to_string()),
                "{lines:?}"
            );
            assert!(
                lines.contains(&"conn1: body M-fallback".to_string()),
                "{lines:?}"
            );
            assert!(!lines.contains(&"conn1: STARTTLS".to_string()), "{lines:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no plaintext retry: {lines:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The message is finished, not deferred.
    let deadline = std::time::Instant::now() + WAIT;
    while !server.spool().list().unwrap().is_empty() {
        let statuses: Vec<_> = server
            .spool()
            .list()
            .unwrap()
            .iter()
            .flat_map(|e| e.envelope.recipients.iter().map(|r| r.status))
            .collect();
        assert!(
            std::time::Instant::now() < deadline,
            "still queued: {statuses:?}"
        );
        assert!(!statuses.contains(&RecipientStatus::Failed));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.shutdown().await;
}

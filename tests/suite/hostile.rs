//! Hostile clients over real sockets: SMTP smuggling, open-relay tricks and limits, against an
//! in-process server whose relay_networks does not include the client.

use crate::support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sealpost::app::Server;
use sealpost::smtp::client::wire::parse_reply;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::domains::{free_port, load, wait_for_mailbox_async, DomainSpec};

const WAIT: Duration = Duration::from_secs(20);

/// The message a smuggler hides after a fake end of data: a whole second transaction.
const SMUGGLED: &[u8] = b"MAIL FROM:<admin@contoso.test>\r\nRCPT TO:<bob@contoso.test>\r\nDATA\r\n\
Subject: smuggled\r\n\r\nevil\r\n";

/// contoso.test with mailboxes alice and bob, no TLS, loopback clients may NOT relay.
async fn start(dir: &std::path::Path) -> Server {
    let mut spec = DomainSpec::new(
        "contoso",
        &["alice@contoso.test", "bob@contoso.test"],
        free_port(),
    );
    spec.relay_loopback = false;
    spec.tls = false;
    let server = sealpost::app::start(load(&spec.write(dir))).await;
    server.unwrap_or_else(|e| panic!("start: {e}"))
}

/// A raw SMTP client that writes exactly the bytes given and reads replies one at a time.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let mut client = Client {
            stream,
            buf: Vec::new(),
        };
        let greeting = client.reply().await;
        assert!(greeting.starts_with("220 "), "{greeting}");
        client
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// The next reply as one line: `550 5.5.2 text`.
    async fn reply(&mut self) -> String {
        loop {
            match parse_reply(&self.buf) {
                Ok(Some((reply, used))) => {
                    self.buf.drain(..used);
                    return reply.to_string();
                }
                Ok(None) => {}
                Err(e) => panic!("bad reply: {e}"),
            }
            let mut chunk = [0u8; 4096];
            let read = tokio::time::timeout(WAIT, self.stream.read(&mut chunk)).await;
            match read.expect("reply timeout").expect("read") {
                0 => panic!("connection closed; unparsed: {:?}", self.buf),
                n => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    async fn replies(&mut self, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(self.reply().await);
        }
        out
    }

    /// True when the server closed the connection with nothing more to say.
    async fn closed(&mut self) -> bool {
        let mut chunk = [0u8; 64];
        let read = tokio::time::timeout(WAIT, self.stream.read(&mut chunk)).await;
        self.buf.is_empty() && matches!(read, Ok(Ok(0)) | Ok(Err(_)))
    }
}

/// MAIL, RCPT to alice, DATA and the content, pipelined in one write.
fn transaction(content: &[u8]) -> Vec<u8> {
    let mut bytes =
        b"MAIL FROM:<carol@fabrikam.test>\r\nRCPT TO:<alice@contoso.test>\r\nDATA\r\n".to_vec();
    bytes.extend_from_slice(content);
    bytes
}

const ACCEPTED: [&str; 3] = [
    "250 2.1.0 Ok",
    "250 2.1.5 Ok",
    "354 End data with <CR><LF>.<CR><LF>",
];

/// Waits until the queue is empty (the runner has delivered what was queued).
async fn queue_drained(server: &Server) {
    let deadline = Instant::now() + WAIT;
    while !server.spool().list().expect("spool list").is_empty() {
        assert!(Instant::now() < deadline, "queue not drained");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn mailbox(server: &Server, address: &str) -> Vec<String> {
    let store = server.store();
    let list = store.list(address).expect("mailbox list");
    list.iter()
        .map(|m| String::from_utf8_lossy(&store.read(address, &m.id).expect("read")).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_vectors_are_refused_and_nothing_smuggled_is_queued() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path()).await;
    let mut c = Client::connect(server.local_addrs()[0]).await;
    c.send(b"EHLO client.fabrikam.test\r\n").await;
    assert!(c.reply().await.starts_with("250 "));
    for (fake, bare) in [
        (&b"\n.\n"[..], "LF"),
        (b"\n.\r\n", "LF"),
        (b"\r.\r", "CR"),
        (b"\r\n.\r", "CR"),
        (b"\r.\r\n", "CR"),
        (b"\r\n.\n", "LF"),
    ] {
        let mut content = b"Subject: attempt\r\n\r\nbody".to_vec();
        content.extend_from_slice(fake);
        content.extend_from_slice(SMUGGLED);
        content.extend_from_slice(b".\r\n");
        c.send(&transaction(&content)).await;
        let mut expected = ACCEPTED.map(String::from).to_vec();
        expected.push(format!("550 5.5.2 Error: bare <{bare}> received"));
        assert_eq!(c.replies(4).await, expected, "{fake:?}");
        // Refused means never queued: the queue is written before any 250.
        assert!(server.spool().list().expect("spool").is_empty(), "{fake:?}");
    }
    // Nothing smuggled is pending as a command either: no transaction is open.
    c.send(b"RCPT TO:<bob@contoso.test>\r\n").await;
    assert_eq!(c.reply().await, "503 5.5.1 Error: need MAIL command");
    c.send(&transaction(b"Subject: clean\r\n\r\nclean body\r\n.\r\n"))
        .await;
    assert_eq!(c.replies(3).await, ACCEPTED);
    assert!(c.reply().await.starts_with("250 2.0.0 Ok: queued as "));
    c.send(b"QUIT\r\n").await;
    assert_eq!(c.reply().await, "221 2.0.0 Bye");

    let data_dir = dir.path().join("contoso-data");
    wait_for_mailbox_async(&data_dir, "alice@contoso.test", 1, WAIT).await;
    queue_drained(&server).await;
    let alice = mailbox(&server, "alice@contoso.test");
    assert_eq!(alice.len(), 1, "{alice:?}");
    assert!(alice[0].contains("clean body") && !alice[0].contains("evil"));
    assert!(mailbox(&server, "bob@contoso.test").is_empty());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nul_vector_is_one_message_for_one_recipient() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path()).await;
    let mut c = Client::connect(server.local_addrs()[0]).await;
    c.send(b"HELO client.fabrikam.test\r\n").await;
    assert_eq!(c.reply().await, "250 mx.contoso.test");
    let mut content = b"Subject: nul\r\n\r\nbody\r\n\x00.\r\n".to_vec();
    content.extend_from_slice(SMUGGLED);
    content.extend_from_slice(b".\r\n");
    c.send(&transaction(&content)).await;
    assert_eq!(c.replies(3).await, ACCEPTED);
    assert!(c.reply().await.starts_with("250 2.0.0 Ok: queued as "));
    c.send(b"QUIT\r\n").await;
    assert_eq!(c.reply().await, "221 2.0.0 Bye");

    let data_dir = dir.path().join("contoso-data");
    let got = wait_for_mailbox_async(&data_dir, "alice@contoso.test", 1, WAIT).await;
    queue_drained(&server).await;
    assert_eq!(got.len(), 1);
    let text = String::from_utf8_lossy(&got[0]);
    assert!(
        text.contains("body\r\n\x00.\r\nMAIL FROM:<admin@contoso.test>\r\n")
            && text.ends_with("\r\n\r\nevil\r\n"),
        "{text:?}"
    );
    assert!(mailbox(&server, "bob@contoso.test").is_empty());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_tricks_are_refused_over_tcp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path()).await;
    let mut c = Client::connect(server.local_addrs()[0]).await;
    c.send(b"EHLO client.fabrikam.test\r\nMAIL FROM:<carol@fabrikam.test>\r\n")
        .await;
    assert!(c.reply().await.starts_with("250 "));
    assert_eq!(c.reply().await, "250 2.1.0 Ok");
    for (name, rcpt, code) in [
        ("plain", "<bob@fabrikam.test>", "554 5.7.1"),
        (
            "percent hack",
            "<bob%fabrikam.test@contoso.test>",
            "550 5.1.1",
        ),
        (
            "source route",
            "<@contoso.test:bob@fabrikam.test>",
            "554 5.7.1",
        ),
        ("bang path", "<fabrikam.test!bob@contoso.test>", "550 5.1.1"),
        (
            "quoted @",
            "<\"bob@fabrikam.test\"@contoso.test>",
            "550 5.1.1",
        ),
        ("IP literal", "<bob@[127.0.0.1]>", "554 5.7.1"),
        ("trailing dot", "<bob@fabrikam.test.>", "501 5.1.3"),
        ("suffix", "<bob@fabrikamcontoso.test>", "554 5.7.1"),
        ("prefix", "<bob@CONTOSO.TEST.evil.test>", "554 5.7.1"),
        ("two @", "<bob@fabrikam.test@contoso.test>", "501 5.1.3"),
        (
            "list",
            "<alice@contoso.test,bob@fabrikam.test>",
            "501 5.1.3",
        ),
        (
            "parameter",
            "<alice@contoso.test> <bob@fabrikam.test>",
            "555 5.5.4",
        ),
    ] {
        c.send(format!("RCPT TO:{rcpt}\r\n").as_bytes()).await;
        let reply = c.reply().await;
        assert!(reply.starts_with(code), "{name}: {reply}");
    }
    c.send(b"DATA\r\n").await;
    assert_eq!(c.reply().await, "503 5.5.1 Error: need RCPT command");
    assert!(server.spool().list().expect("spool").is_empty());
    // The one trick that is accepted, a source route ending in the local mailbox, stays local.
    c.send(b"RCPT TO:<@fabrikam.test:alice@contoso.test>\r\nDATA\r\nSubject: r\r\n\r\nsr\r\n.\r\n")
        .await;
    assert_eq!(c.replies(2).await, ACCEPTED[1..]);
    assert!(c.reply().await.starts_with("250 2.0.0 Ok: queued as "));
    let queued = server.spool().list().expect("spool");
    let rcpts: Vec<&str> = queued
        .iter()
        .flat_map(|q| q.envelope.recipients.iter().map(|r| r.address.as_str()))
        .collect();
    assert!(
        rcpts.iter().all(|r| *r == "alice@contoso.test"),
        "{rcpts:?}"
    );
    let data_dir = dir.path().join("contoso-data");
    let got = wait_for_mailbox_async(&data_dir, "alice@contoso.test", 1, WAIT).await;
    // Drained: nothing was left waiting for a remote destination.
    queue_drained(&server).await;
    let text = String::from_utf8_lossy(&got[0]);
    assert!(text.contains("for <alice@contoso.test>;"), "{text}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_answer_with_their_codes_over_tcp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path()).await;
    let mut c = Client::connect(server.local_addrs()[0]).await;
    // A 513-octet command line.
    c.send(format!("NOOP {}\r\n", "a".repeat(506)).as_bytes())
        .await;
    assert_eq!(c.reply().await, "500 5.5.2 Error: line too long");
    c.send(b"HELO client.fabrikam.test\r\n").await;
    assert_eq!(c.reply().await, "250 mx.contoso.test");
    // A 1001-octet text line: read to the end, refused, not queued.
    let mut content = format!("Subject: long\r\n\r\n{}\r\n", "b".repeat(999)).into_bytes();
    content.extend_from_slice(b".\r\n");
    c.send(&transaction(&content)).await;
    let mut expected = ACCEPTED.map(String::from).to_vec();
    expected.push("500 5.5.2 Error: line too long".into());
    assert_eq!(c.replies(4).await, expected);
    assert!(server.spool().list().expect("spool").is_empty());
    // 18 more errors are answered; the 20th gets 421 and the connection is closed.
    c.send("FOO\r\n".repeat(20).as_bytes()).await;
    let replies = c.replies(19).await;
    assert!(replies[..18]
        .iter()
        .all(|r| r == "500 5.5.2 Error: command not recognized"));
    assert_eq!(
        replies[18],
        "421 4.7.0 mx.contoso.test Error: too many errors"
    );
    assert!(c.closed().await, "still open after 421");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_per_ip_limit_get_421_and_a_good_client_still_gets_through_after() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let spec = support::domains::DomainSpec::new(
        "contoso",
        &["alice@contoso.test"],
        support::domains::free_port(),
    )
    .toml("[limits]\nmax_connections_per_ip = 2\n");
    let server = sealpost::app::start(support::domains::load(&spec.write(dir.path())))
        .await
        .unwrap();
    let addr = server.local_addrs()[0];
    let mut held = Vec::new();
    let mut buf = [0u8; 512];
    for _ in 0..2 {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let n = c.read(&mut buf).await.unwrap();
        assert!(
            buf[..n].starts_with(b"220 "),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
        held.push(c);
    }
    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    let n = third.read(&mut buf).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&buf[..n]),
        "421 4.7.0 mx.contoso.test Error: too many connections from 127.0.0.1\r\n"
    );
    assert_eq!(
        third.read(&mut buf).await.unwrap(),
        0,
        "then the server closes"
    );
    // A held session ends: a new client is admitted again.
    let mut first = held.remove(0);
    first.write_all(b"QUIT\r\n").await.unwrap();
    let _ = first.read(&mut buf).await;
    drop(first);
    // The place comes back once the server has closed that session.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mut again = tokio::net::TcpStream::connect(addr).await.unwrap();
        let n = again.read(&mut buf).await.unwrap();
        if buf[..n].starts_with(b"220 ") {
            break;
        }
        assert!(
            buf[..n].starts_with(b"421 "),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the place never came back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    server.shutdown().await;
}

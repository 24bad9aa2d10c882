//! Message content streamed to disk over real sockets: it is sealed while it arrives, a partly
//! received message leaves nothing behind, and the global in-flight budget answers 452 4.3.1
//! before a transfer and 451 4.3.1 after one that crossed it.

use crate::support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sealpost::app::Server;
use support::domains::{files_containing, free_port, load, wait_for_mailbox_async, DomainSpec};
use support::raw::RawClient;

const WAIT: Duration = Duration::from_secs(20);
const ALICE: &str = "alice@contoso.test";

/// contoso.test (no TLS, loopback may relay) with `extra` TOML appended; returns the server and
/// its data directory.
async fn start(dir: &Path, extra: &str) -> (Server, PathBuf) {
    let mut spec = DomainSpec::new("contoso", &[ALICE], free_port()).toml(extra);
    spec.tls = false;
    let config = load(&spec.write(dir));
    let data = config.data_dir.clone();
    let server = sealpost::app::start(config).await;
    (server.unwrap_or_else(|e| panic!("start: {e}")), data)
}

/// Files in `queue/tmp/` and their sizes, but for delivered messages' files kept to be written
/// again (`free.*`).
fn staged(data: &Path) -> Vec<(String, u64)> {
    std::fs::read_dir(data.join("queue/tmp"))
        .map(|d| {
            d.flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with("free."))
                .map(|e| {
                    let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                    (e.file_name().to_string_lossy().into_owned(), len)
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A message of about `len` bytes: a marker in the subject and on every body line.
fn big_message(marker: &str, len: usize) -> Vec<u8> {
    let mut m =
        format!("From: <carol@fabrikam.test>\r\nTo: <{ALICE}>\r\nSubject: {marker}\r\n\r\n")
            .into_bytes();
    let mut n = 0u64;
    while m.len() < len {
        m.extend_from_slice(format!("{marker} line {n:08} {}\r\n", "x".repeat(60)).as_bytes());
        n += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_is_sealed_on_disk_as_it_arrives_and_a_dropped_connection_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, data) = start(dir.path(), "").await;
    let addr = server.local_addrs()[0];
    let marker = "STREAM-MARKER-5e0c";
    let message = big_message(marker, 600_000);

    let mut c = RawClient::connect(addr).await;
    c.start_data("carol@fabrikam.test", ALICE).await;
    c.send(&message[..400_000]).await;
    // The content is on disk before the end of data, and nowhere in clear.
    wait_until("the content so far is written", || {
        staged(&data).iter().any(|(_, len)| *len >= 256 * 1024)
    })
    .await;
    assert_eq!(
        files_containing(&data, marker.as_bytes()),
        Vec::<PathBuf>::new()
    );
    // The connection drops in the middle of the data: nothing of it stays.
    drop(c);
    wait_until("the partial content is removed", || {
        staged(&data).is_empty()
    })
    .await;
    assert!(server.spool().list().expect("list").is_empty());

    // The whole message, sent again, arrives intact.
    let mut c = RawClient::connect(addr).await;
    c.start_data("carol@fabrikam.test", ALICE).await;
    c.send(&message).await;
    c.send(b".\r\n").await;
    let reply = c.reply().await;
    assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
    let got = wait_for_mailbox_async(&data, ALICE, 1, WAIT).await;
    assert_eq!(got.len(), 1);
    assert!(got[0].ends_with(&message), "the message changed on the way");
    assert!(got[0].starts_with(b"Received: from client.test"));
    assert!(staged(&data).is_empty(), "{:?}", staged(&data));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_flight_budget_refuses_with_452_before_and_451_after_a_transfer() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 293 KiB of budget: four transactions in DATA hold 64 KiB each at the start.
    let limits = "[limits]\nmax_message_size = 100000\nmax_in_flight_size = 300000\n";
    let (server, data) = start(dir.path(), limits).await;
    let addr = server.local_addrs()[0];
    let mut clients = Vec::new();
    for _ in 0..4 {
        let mut client = RawClient::connect(addr).await;
        client.start_data("carol@fabrikam.test", ALICE).await;
        clients.push(client);
    }
    let [mut a, mut b, mut c, e] = <[RawClient; 4]>::try_from(clients).ok().expect("four");

    // 37 KiB left: a declared SIZE that does not fit is refused at MAIL, DATA without one too.
    let mut d = RawClient::connect(addr).await;
    assert!(d.command("EHLO client.test").await.starts_with("250"));
    let full = "452 4.3.1 Insufficient system storage";
    assert_eq!(
        d.command("MAIL FROM:<carol@fabrikam.test> SIZE=50000")
            .await,
        full
    );
    assert_eq!(
        d.command("MAIL FROM:<carol@fabrikam.test>").await,
        "250 2.1.0 Ok"
    );
    assert_eq!(
        d.command(&format!("RCPT TO:<{ALICE}>")).await,
        "250 2.1.5 Ok"
    );
    assert_eq!(d.command("DATA").await, full);
    assert_eq!(d.command("RSET").await, "250 2.0.0 Ok");

    // a's transfer grows past its start: 13 KiB left (d probes until a 30 KB SIZE no longer fits).
    let within = big_message("WITHIN-THE-BUDGET", 90_000);
    a.send(&within).await;
    let deadline = Instant::now() + WAIT;
    while d
        .command("MAIL FROM:<carol@fabrikam.test> SIZE=30000")
        .await
        != full
    {
        assert_eq!(d.command("RSET").await, "250 2.0.0 Ok");
        assert!(Instant::now() < deadline, "a's content was not taken");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // b's would too, but there is no room: read to the end and refused, nothing queued.
    b.send(&big_message("CROSSED-THE-BUDGET", 90_000)).await;
    b.send(b".\r\n").await;
    assert_eq!(b.reply().await, "451 4.3.1 Insufficient system storage");
    a.send(b".\r\n").await;
    assert!(a.reply().await.starts_with("250 2.0.0 Ok: queued as "));
    c.send(&big_message("SMALL-ONE", 1000)).await;
    c.send(b".\r\n").await;
    assert!(c.reply().await.starts_with("250 2.0.0 Ok: queued as "));
    drop(e);
    // The budget came back: the refused client goes on with a message of the largest size.
    assert_eq!(b.command("RSET").await, "250 2.0.0 Ok");
    b.start_data("carol@fabrikam.test", ALICE).await;
    b.send(&big_message("THE-LARGEST", 99_000)).await;
    b.send(b".\r\n").await;
    assert!(b.reply().await.starts_with("250 2.0.0 Ok: queued as "));
    // Over max_message_size: read to the end, 552, the session goes on.
    b.start_data("carol@fabrikam.test", ALICE).await;
    b.send(&big_message("TOO-LARGE", 120_000)).await;
    b.send(b".\r\n").await;
    assert_eq!(
        b.reply().await,
        "552 5.3.4 Message size exceeds fixed limit"
    );
    assert_eq!(b.command("NOOP").await, "250 2.0.0 Ok");

    let got = wait_for_mailbox_async(&data, ALICE, 3, WAIT).await;
    let texts: Vec<String> = got
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect();
    assert_eq!(texts.len(), 3, "{texts:?}");
    for kept in ["WITHIN-THE-BUDGET", "SMALL-ONE", "THE-LARGEST"] {
        assert!(texts.iter().any(|t| t.contains(kept)), "{kept} missing");
    }
    assert!(!texts
        .iter()
        .any(|t| t.contains("CROSSED-THE-BUDGET") || t.contains("TOO-LARGE")));
    drop((a, b, c, d));
    wait_until("nothing staged", || staged(&data).is_empty()).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bdat_chunks_pipelined_in_one_write_arrive_byte_for_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, data) = start(dir.path(), "").await;
    let mut c = RawClient::connect(server.local_addrs()[0]).await;
    let ehlo = c.command("EHLO client.test").await;
    assert!(ehlo.contains("CHUNKING"), "{ehlo}");
    // A chunk without a transaction is read to its end and refused; its bytes are no command.
    c.send(b"BDAT 6\r\nQUIT\r\n").await;
    assert_eq!(c.reply().await, "503 5.5.1 Error: need MAIL command");

    // Dot lines, stuffed-looking dots and a command inside chunks are content; the message ends
    // without CRLF; one chunk is large enough to be staged in several pieces.
    let chunks: Vec<Vec<u8>> = vec![
        format!("From: <carol@fabrikam.test>\r\nTo: <{ALICE}>\r\nSubject: BDAT-MARKER\r\n\r\n")
            .into_bytes(),
        b".\r\n..two\r\nQUIT\r\n.\r\n".to_vec(),
        big_message("BDAT-BODY", 300_000),
        b"the end, without a line break".to_vec(),
    ];
    let mut write =
        format!("MAIL FROM:<carol@fabrikam.test>\r\nRCPT TO:<{ALICE}>\r\n").into_bytes();
    for (i, chunk) in chunks.iter().enumerate() {
        let last = if i + 1 == chunks.len() { " LAST" } else { "" };
        write.extend_from_slice(format!("BDAT {}{last}\r\n", chunk.len()).as_bytes());
        write.extend_from_slice(chunk);
    }
    write.extend_from_slice(b"NOOP\r\n");
    c.send(&write).await;
    assert_eq!(c.reply().await, "250 2.1.0 Ok");
    assert_eq!(c.reply().await, "250 2.1.5 Ok");
    let mut sent = 0;
    for chunk in &chunks[..chunks.len() - 1] {
        sent += chunk.len();
        assert_eq!(c.reply().await, format!("250 2.0.0 Ok: {sent} bytes"));
    }
    let queued = c.reply().await;
    assert!(queued.starts_with("250 2.0.0 Ok: queued as "), "{queued}");
    assert_eq!(c.reply().await, "250 2.0.0 Ok");

    let whole = chunks.concat();
    let got = wait_for_mailbox_async(&data, ALICE, 1, WAIT).await;
    assert!(got[0].ends_with(&whole), "the message changed on the way");
    assert!(got[0].starts_with(b"Received: from client.test"));
    drop(c);
    wait_until("nothing staged", || staged(&data).is_empty()).await;
    server.shutdown().await;
}

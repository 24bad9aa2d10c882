//! Outbound delivery of large and awkward messages over real sockets: to a peer that offers
//! CHUNKING the message goes in BDAT, byte for byte; to one that does not, it is dot-stuffed on
//! the way out (RFC 5321 §4.5.2) and arrives as the receiver must read it.

use crate::support;

use std::time::{Duration, Instant};

use support::domains::{free_port, load, wait_for_mailbox_async, DomainSpec};
use support::peers::plaintext_peer;
use support::raw::RawClient;

const WAIT: Duration = Duration::from_secs(30);

/// A message with lines that start with dots (one of them a lone dot, the end of data if it
/// were not stuffed), a body of `len` bytes, and a last line without CRLF.
fn awkward(marker: &str, len: usize) -> Vec<u8> {
    let mut m = format!(
        "From: <alice@contoso.test>\r\nTo: <bob@fabrikam.test>\r\nSubject: {marker}\r\n\r\n\
         .\r\n..two dots\r\n.leading\r\n"
    )
    .into_bytes();
    let mut n = 0u32;
    while m.len() < len {
        let lead = if n.is_multiple_of(7) { "." } else { "" };
        m.extend_from_slice(
            format!("{lead}{marker} line {n:06} {}\r\n", "z".repeat(50)).as_bytes(),
        );
        n += 1;
    }
    m.extend_from_slice(b".the end, without a line break");
    m
}

/// Sends `message` to `addr` for `to` in BDAT chunks (so that it may end without CRLF).
async fn submit_in_chunks(addr: std::net::SocketAddr, to: &str, message: &[u8]) {
    let mut c = RawClient::connect(addr).await;
    assert!(c.command("EHLO client.test").await.contains("CHUNKING"));
    assert_eq!(
        c.command("MAIL FROM:<alice@contoso.test>").await,
        "250 2.1.0 Ok"
    );
    assert_eq!(c.command(&format!("RCPT TO:<{to}>")).await, "250 2.1.5 Ok");
    let (first, second) = message.split_at(message.len() / 3);
    c.send(format!("BDAT {}\r\n", first.len()).as_bytes()).await;
    c.send(first).await;
    assert_eq!(
        c.reply().await,
        format!("250 2.0.0 Ok: {} bytes", first.len())
    );
    c.send(format!("BDAT {} LAST\r\n", second.len()).as_bytes())
        .await;
    c.send(second).await;
    let queued = c.reply().await;
    assert!(queued.starts_with("250 2.0.0 Ok: queued as "), "{queued}");
    assert_eq!(c.command("QUIT").await, "221 2.0.0 Bye");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealpost_relays_to_sealpost_in_bdat_byte_for_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cport, fport) = (free_port(), free_port());
    let contoso = DomainSpec::new("contoso", &["alice@contoso.test"], cport)
        .route("fabrikam.test", fport)
        .write(dir.path());
    let fabrikam = DomainSpec::new("fabrikam", &["bob@fabrikam.test"], fport).write(dir.path());
    let f = load(&fabrikam);
    let f_data = f.data_dir.clone();
    let f_server = sealpost::app::start(f).await.expect("start fabrikam");
    let c_server = sealpost::app::start(load(&contoso))
        .await
        .expect("start contoso");

    let message = awkward("RELAY-BDAT", 400_000);
    submit_in_chunks(c_server.local_addrs()[0], "bob@fabrikam.test", &message).await;
    let got = wait_for_mailbox_async(&f_data, "bob@fabrikam.test", 1, WAIT).await;
    assert!(
        got[0].ends_with(&message),
        "the message changed on the way: ends {:?}",
        String::from_utf8_lossy(&got[0][got[0].len().saturating_sub(80)..])
    );
    // fabrikam says how the message came: in BDAT chunks, over TLS.
    let trace = std::fs::read_to_string(f_data.join("trace.jsonl")).expect("fabrikam trace");
    let received = trace
        .lines()
        .find(|l| l.contains("\"received\""))
        .expect("a received record");
    assert!(received.contains("\"chunking\":true"), "{received}");
    assert!(received.contains("\"protocol\":\"ESMTPS\""), "{received}");
    c_server.shutdown().await;
    f_server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_chunking_the_message_is_dot_stuffed_on_the_way_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (peer, seen) = plaintext_peer();
    let spec =
        DomainSpec::new("contoso", &["alice@contoso.test"], free_port()).route("plain.test", peer);
    let server = sealpost::app::start(load(&spec.write(dir.path())))
        .await
        .expect("start");
    let message = awkward("PLAIN-DATA", 300_000);
    submit_in_chunks(server.local_addrs()[0], "x@plain.test", &message).await;
    let deadline = Instant::now() + WAIT;
    while !server.spool().list().expect("list").is_empty() {
        assert!(Instant::now() < deadline, "not delivered to the peer");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lines = seen.lock().expect("seen").clone();
    let start = lines.iter().position(|l| l == "DATA").expect("DATA") + 1;
    let end = start
        + lines[start..]
            .iter()
            .position(|l| l == ".")
            .expect("end of data");
    let body_at = start
        + lines[start..]
            .iter()
            .position(|l| l.is_empty())
            .expect("body");
    // Every line of the body as sent: a leading dot doubled, the last line ended by CRLF.
    let text = String::from_utf8(message.clone()).expect("text");
    let body = &text[text.find("\r\n\r\n").expect("header end") + 4..];
    let expected: Vec<String> = body
        .split("\r\n")
        .map(|l| match l.starts_with('.') {
            true => format!(".{l}"),
            false => l.to_string(),
        })
        .collect();
    assert_eq!(lines[body_at + 1..end], expected[..]);
    assert!(!lines.iter().any(|l| l.starts_with("BDAT")));
    server.shutdown().await;
}

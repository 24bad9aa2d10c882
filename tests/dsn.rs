//! Delivery status notifications over real sockets: a bounce for a recipient the next hop
//! refuses, a bounce carrying a connector's TLS reason when the message expires, a one-time
//! delay notice, and no notice at all for the null sender.

mod support;

use std::time::{Duration, Instant};

use sealpost::store::MailStore;
use support::domains::{
    free_port, load, message, open_store, send, start_pair, wait_for_mailbox_async, DomainSpec,
    Pair,
};
use support::peers::plaintext_peer;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_recipient_bounces_to_the_sender_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let Pair {
        contoso: c_server,
        fabrikam: f_server,
        contoso_data: c_data,
        ..
    } = start_pair(dir.path(), "", "").await;
    let addr = c_server.local_addrs()[0];

    let data = message("alice@contoso.test", "nobody@fabrikam.test", "M-bounce");
    let (replies, _) = send(addr, "alice@contoso.test", &["nobody@fabrikam.test"], &data).await;
    assert!(replies[0].is_ok());
    let got = wait_for_mailbox_async(&c_data, "alice@contoso.test", 1, WAIT).await;
    let text = String::from_utf8_lossy(&got[0]).into_owned();
    assert!(
        text.contains("Subject: Undelivered Mail Returned to Sender"),
        "{text}"
    );
    assert!(text.contains("report-type=delivery-status"), "{text}");
    assert!(
        text.contains(
            "Final-Recipient: rfc822; nobody@fabrikam.test\r\nAction: failed\r\nStatus: 5.1.1"
        ),
        "{text}"
    );
    assert!(
        text.contains("Diagnostic-Code: smtp; 127.0.0.1 said: 550 5.1.1"),
        "{text}"
    );
    assert!(
        text.contains("body M-bounce"),
        "the original is returned: {text}"
    );

    // The null sender gets nothing back, and nothing loops.
    let (replies, _) = send(
        addr,
        "",
        &["nobody@fabrikam.test"],
        &message("", "nobody@fabrikam.test", "M-null"),
    )
    .await;
    assert!(replies[0].is_ok());
    let deadline = Instant::now() + WAIT;
    while !c_server.spool().list().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the null-sender message must leave the queue"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Give a (wrong) notice time to be delivered, then check none was.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        c_server.spool().list().unwrap().is_empty(),
        "queue must stay empty"
    );
    assert_eq!(
        open_store(&c_data, "test")
            .count("alice@contoso.test")
            .unwrap(),
        1,
        "no notice for the null sender"
    );
    c_server.shutdown().await;
    f_server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_notice_once_then_bounce_with_the_tls_reason_on_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let (peer, seen) = plaintext_peer();
    let connector = format!(
        "[[connector.outbound]]\nname = \"to-plain\"\nrecipient_domains = [\"plain.test\"]\nsmart_hosts = [\"127.0.0.1:{peer}\"]\ntls = \"required\"\n"
    );
    let mut spec =
        DomainSpec::new("contoso", &["alice@contoso.test"], free_port()).toml(&connector);
    spec.lifetime = Some("8s");
    spec.delay_warning = Some("1s");
    let config = load(&spec.write(dir.path()));
    let data_dir = config.data_dir.clone();
    let server = sealpost::app::start(config).await.unwrap();
    let (replies, _) = send(
        server.local_addrs()[0],
        "alice@contoso.test",
        &["x@plain.test"],
        &message("alice@contoso.test", "x@plain.test", "M-expire"),
    )
    .await;
    assert!(replies[0].is_ok());

    let got = wait_for_mailbox_async(&data_dir, "alice@contoso.test", 2, WAIT).await;
    let texts: Vec<String> = got
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect();
    let delays = texts
        .iter()
        .filter(|t| t.contains("Subject: Delayed Mail"))
        .count();
    assert_eq!(delays, 1, "exactly one delay notice: {texts:?}");
    let bounce = texts
        .iter()
        .find(|t| t.contains("Subject: Undelivered Mail"))
        .expect("a bounce after expiry");
    assert!(
        bounce.contains("Action: failed\r\nStatus: 5.7.4"),
        "{bounce}"
    );
    assert!(
        bounce.contains("TLS required by connector to-plain: peer did not offer STARTTLS"),
        "{bounce}"
    );
    assert!(bounce.contains("message expired after"), "{bounce}");
    assert!(
        !seen.lock().unwrap().iter().any(|l| l.starts_with("MAIL")),
        "nothing sent in clear"
    );
    server.shutdown().await;
}

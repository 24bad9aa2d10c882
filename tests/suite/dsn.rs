//! Delivery status notifications over real sockets: a bounce for a recipient the next hop
//! refuses, a bounce carrying a connector's TLS reason when the message expires, a one-time
//! delay notice, and no notice at all for the null sender. RFC 3461: DSN is advertised and its
//! parameters checked, NOTIFY/RET/ENVID/ORCPT shape the notices or are passed on to a next hop
//! that offers DSN, and a notice that cannot be queued is queued on a later pass.

use crate::support;
#[path = "dsn/wire.rs"]
mod wire;

use std::time::{Duration, Instant};

use sealpost::queue::{NoticeAction, QueueState};
use sealpost::store::MailStore;
use support::domains::{
    files_containing, free_port, load, message, open_store, send, start_pair,
    wait_for_mailbox_async, DomainSpec, Pair,
};
use support::peers::plaintext_peer;
use wire::{fake_peer, submit, Raw};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dsn_is_advertised_and_its_parameters_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let spec = DomainSpec::new("contoso", &["alice@contoso.test"], free_port());
    let server = sealpost::app::start(load(&spec.write(dir.path())))
        .await
        .unwrap();
    let mut c = Raw::connect(server.local_addrs()[0]).await;
    let ehlo = c.cmd("EHLO client.test").await;
    assert!(ehlo.lines().any(|l| l == "250-DSN"), "{ehlo}");
    let mail = "MAIL FROM:<alice@contoso.test>";
    let rcpt = "RCPT TO:<alice@contoso.test>";
    for ok in [
        format!("{mail} RET=FULL ENVID=QQ+2B1"),
        format!("{mail} ret=hdrs"),
        format!("{mail} ENVID={}", "x".repeat(100)),
    ] {
        assert_eq!(c.cmd(&ok).await, "250 2.1.0 Ok", "{ok}");
        assert_eq!(c.cmd("RSET").await, "250 2.0.0 Ok");
    }
    for bad in [
        "RET=BODY",
        "RET",
        "ENVID=a=b",
        "ENVID=bad+0Aline",
        "ENVID=",
        "RET=FULL RET=FULL",
        "ENVID=a ENVID=b",
    ] {
        let reply = c.cmd(&format!("{mail} {bad}")).await;
        assert!(reply.starts_with("501 5.5.4 "), "{bad}: {reply}");
    }
    let long = c.cmd(&format!("{mail} ENVID={}", "x".repeat(101))).await;
    assert!(long.starts_with("501 5.5.4 Bad ENVID"), "{long}");
    let unknown = c.cmd(&format!("{mail} XDSN=1")).await;
    assert_eq!(unknown, "555 5.5.4 Unsupported option: XDSN=1");

    assert_eq!(c.cmd(mail).await, "250 2.1.0 Ok");
    for ok in [
        "NOTIFY=NEVER",
        "notify=success,failure,delay",
        "NOTIFY=DELAY ORCPT=rfc822;Alice+2Bx@contoso.test",
        "ORCPT=utf-8;alice@contoso.test",
    ] {
        assert_eq!(c.cmd(&format!("{rcpt} {ok}")).await, "250 2.1.5 Ok", "{ok}");
    }
    for bad in [
        "NOTIFY=NEVER,FAILURE",
        "NOTIFY=SUCCESS,SUCCESS",
        "NOTIFY=ALWAYS",
        "NOTIFY=",
        "ORCPT=alice@contoso.test",
        "ORCPT=rfc822;alice+4",
        "ORCPT=rfc822;",
        "NOTIFY=DELAY NOTIFY=FAILURE",
    ] {
        let reply = c.cmd(&format!("{rcpt} {bad}")).await;
        assert!(reply.starts_with("501 5.5.4 "), "{bad}: {reply}");
    }
    c.cmd("QUIT").await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounce_honours_notify_never_ret_hdrs_envid_and_orcpt() {
    let dir = tempfile::tempdir().unwrap();
    let pair = start_pair(dir.path(), "", "").await;
    let replies = submit(
        pair.contoso.local_addrs()[0],
        "MAIL FROM:<alice@contoso.test> RET=HDRS ENVID=QQ+2B1",
        &[
            "RCPT TO:<nobody@fabrikam.test> NOTIFY=NEVER",
            "RCPT TO:<ghost@fabrikam.test> ORCPT=rfc822;Ghost+2Bx@fabrikam.test",
        ],
        &message("alice@contoso.test", "ghost@fabrikam.test", "M-hdrs"),
    )
    .await;
    assert!(
        replies.last().unwrap().starts_with("250 2.0.0"),
        "{replies:?}"
    );
    let got = wait_for_mailbox_async(&pair.contoso_data, "alice@contoso.test", 1, WAIT).await;
    let text = String::from_utf8_lossy(&got[0]).into_owned();
    assert!(
        text.contains("Subject: Undelivered Mail Returned to Sender"),
        "{text}"
    );
    assert!(
        text.contains("Original-Envelope-Id: QQ+1\r\nReporting-MTA: dns; mx.contoso.test"),
        "{text}"
    );
    assert!(
        text.contains("Original-Recipient: rfc822; Ghost+x@fabrikam.test\r\nFinal-Recipient: rfc822; ghost@fabrikam.test\r\nAction: failed\r\nStatus: 5.1.1"),
        "{text}"
    );
    assert!(
        !text.contains("nobody@fabrikam.test"),
        "NOTIFY=NEVER: {text}"
    );
    assert!(
        text.contains("Content-Type: text/rfc822-headers\r\n"),
        "{text}"
    );
    assert!(
        text.contains("Subject: test M-hdrs"),
        "the header is returned: {text}"
    );
    assert!(!text.contains("body M-hdrs"), "RET=HDRS: no body: {text}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let store = open_store(&pair.contoso_data, "test");
    assert_eq!(
        store.count("alice@contoso.test").unwrap(),
        1,
        "one notice only"
    );
    pair.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_success_reports_local_delivery_and_a_dsn_next_hop_reports_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let pair = start_pair(dir.path(), "", "").await;
    let addr = pair.contoso.local_addrs()[0];
    // Local delivery: contoso itself says "delivered".
    let replies = submit(
        addr,
        "MAIL FROM:<alice@contoso.test> ENVID=local-1",
        &["RCPT TO:<carol@contoso.test> NOTIFY=SUCCESS ORCPT=rfc822;carol@contoso.test"],
        &message("alice@contoso.test", "carol@contoso.test", "M-local"),
    )
    .await;
    assert!(
        replies.last().unwrap().starts_with("250 2.0.0"),
        "{replies:?}"
    );
    wait_for_mailbox_async(&pair.contoso_data, "carol@contoso.test", 1, WAIT).await;
    let got = wait_for_mailbox_async(&pair.contoso_data, "alice@contoso.test", 1, WAIT).await;
    let text = String::from_utf8_lossy(&got[0]).into_owned();
    assert!(
        text.contains("Subject: Successful Mail Delivery Report"),
        "{text}"
    );
    assert!(text.contains("Original-Envelope-Id: local-1\r\n"), "{text}");
    assert!(
        text.contains("Original-Recipient: rfc822; carol@contoso.test\r\nFinal-Recipient: rfc822; carol@contoso.test\r\nAction: delivered\r\nStatus: 2.0.0\r\n"),
        "{text}"
    );
    assert!(!text.contains("body M-local"), "headers only: {text}");

    // fabrikam offers DSN: contoso passes NOTIFY on and says nothing; fabrikam reports delivery.
    let replies = submit(
        addr,
        "MAIL FROM:<alice@contoso.test> ENVID=relay-2",
        &["RCPT TO:<bob@fabrikam.test> NOTIFY=SUCCESS"],
        &message("alice@contoso.test", "bob@fabrikam.test", "M-relay"),
    )
    .await;
    assert!(
        replies.last().unwrap().starts_with("250 2.0.0"),
        "{replies:?}"
    );
    wait_for_mailbox_async(&pair.fabrikam_data, "bob@fabrikam.test", 1, WAIT).await;
    let got = wait_for_mailbox_async(&pair.contoso_data, "alice@contoso.test", 2, WAIT).await;
    let text = got
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .find(|t| t.contains("relay-2"))
        .expect("a notice about the relayed message");
    assert!(
        text.contains("Reporting-MTA: dns; mx.fabrikam.test"),
        "{text}"
    );
    assert!(
        text.contains("Final-Recipient: rfc822; bob@fabrikam.test\r\nAction: delivered\r\n"),
        "{text}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let store = open_store(&pair.contoso_data, "test");
    assert_eq!(
        store.count("alice@contoso.test").unwrap(),
        2,
        "no \"relayed\" notice from contoso"
    );
    pair.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_go_only_to_a_next_hop_that_offers_dsn() {
    let dir = tempfile::tempdir().unwrap();
    let (plain, plain_seen, _) = fake_peer(&["PIPELINING"], Some("250 2.1.5 Ok"));
    let (dsn, dsn_seen, _) = fake_peer(&["PIPELINING", "DSN"], Some("250 2.1.5 Ok"));
    let spec = DomainSpec::new("contoso", &["alice@contoso.test"], free_port())
        .route("plain.test", plain)
        .route("dsn.test", dsn);
    let config = load(&spec.write(dir.path()));
    let data_dir = config.data_dir.clone();
    let server = sealpost::app::start(config).await.unwrap();
    let replies = submit(
        server.local_addrs()[0],
        "MAIL FROM:<alice@contoso.test> RET=HDRS ENVID=Q+3DQ",
        &[
            "RCPT TO:<x@plain.test> NOTIFY=SUCCESS,FAILURE",
            "RCPT TO:<y@dsn.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Y+2Bz@dsn.test",
        ],
        &message("alice@contoso.test", "x@plain.test", "M-params"),
    )
    .await;
    assert!(
        replies.last().unwrap().starts_with("250 2.0.0"),
        "{replies:?}"
    );
    // The peer without DSN gets plain commands, and the sender a "relayed" notice for it only.
    let got = wait_for_mailbox_async(&data_dir, "alice@contoso.test", 1, WAIT).await;
    let text = String::from_utf8_lossy(&got[0]).into_owned();
    assert!(
        text.contains(
            "Final-Recipient: rfc822; x@plain.test\r\nAction: relayed\r\nStatus: 2.0.0\r\n"
        ),
        "{text}"
    );
    assert!(!text.contains("y@dsn.test"), "{text}");
    let lines = |seen: &support::peers::Seen, verb: &str| -> Vec<String> {
        let seen = seen.lock().unwrap();
        seen.iter()
            .filter(|l| l.starts_with(verb))
            .cloned()
            .collect()
    };
    assert_eq!(
        lines(&plain_seen, "MAIL"),
        ["MAIL FROM:<alice@contoso.test>"]
    );
    assert_eq!(lines(&plain_seen, "RCPT"), ["RCPT TO:<x@plain.test>"]);
    assert_eq!(
        lines(&dsn_seen, "MAIL"),
        ["MAIL FROM:<alice@contoso.test> RET=HDRS ENVID=Q+3DQ"]
    );
    assert_eq!(
        lines(&dsn_seen, "RCPT"),
        ["RCPT TO:<y@dsn.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Y+2Bz@dsn.test"]
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let store = open_store(&data_dir, "test");
    assert_eq!(
        store.count("alice@contoso.test").unwrap(),
        1,
        "one notice only"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounce_that_cannot_be_queued_is_queued_on_a_later_pass() {
    let dir = tempfile::tempdir().unwrap();
    let (peer, seen, gate) = fake_peer(&["PIPELINING"], None);
    let spec =
        DomainSpec::new("contoso", &["alice@contoso.test"], free_port()).route("hold.test", peer);
    let config = load(&spec.write(dir.path()));
    let data_dir = config.data_dir.clone();
    let server = sealpost::app::start(config).await.unwrap();
    let replies = submit(
        server.local_addrs()[0],
        "MAIL FROM:<alice@contoso.test>",
        &["RCPT TO:<x@hold.test>"],
        &message("alice@contoso.test", "x@hold.test", "M-retry"),
    )
    .await;
    assert!(
        replies.last().unwrap().starts_with("250 2.0.0"),
        "{replies:?}"
    );
    let deadline = Instant::now() + WAIT;
    while !seen.lock().unwrap().iter().any(|l| l.starts_with("RCPT")) {
        assert!(
            Instant::now() < deadline,
            "the runner never reached the peer"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The message is active now. A plain file in place of queue/incoming/ makes every write
    // into it fail (for root too), so the bounce cannot be queued.
    let queue = server.spool().root().to_path_buf();
    let incoming = queue.join("incoming");
    let away = queue.join("incoming.away");
    std::fs::rename(&incoming, &away).unwrap();
    std::fs::write(&incoming, b"not a directory").unwrap();
    gate.lock().unwrap().replace("550 5.1.1 no such user");

    let deferred = queue.join("deferred");
    let deadline = Instant::now() + WAIT;
    while files_containing(&deferred, br#""notice_due":"failed""#).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the original must wait for its notice"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let store = open_store(&data_dir, "test");
    assert_eq!(
        store.count("alice@contoso.test").unwrap(),
        0,
        "no bounce yet"
    );

    std::fs::remove_file(&incoming).unwrap();
    std::fs::rename(&away, &incoming).unwrap();
    assert_eq!(server.spool().flush().unwrap(), 1);
    server.wake_runner();
    let got = wait_for_mailbox_async(&data_dir, "alice@contoso.test", 1, WAIT).await;
    let text = String::from_utf8_lossy(&got[0]).into_owned();
    assert!(
        text.contains("Final-Recipient: rfc822; x@hold.test\r\nAction: failed\r\nStatus: 5.1.1"),
        "{text}"
    );
    let deadline = Instant::now() + WAIT;
    loop {
        let list = server.spool().list().unwrap();
        if list.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "queue not emptied: {list:?}");
        assert!(list.iter().all(|e| e.state != QueueState::Deferred
            || e.envelope.recipients[0].notice_due == Some(NoticeAction::Failed)));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        store.count("alice@contoso.test").unwrap(),
        1,
        "exactly one bounce"
    );
    let rcpts = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("RCPT"))
        .count();
    assert_eq!(rcpts, 1, "the failed recipient is not tried again");
    server.shutdown().await;
}

//! A client that did not see our 250 sends the same message again: it gets 250 with the first
//! copy's queue id and the message is stored once, also across a restart of the server.

use crate::support;

use std::time::{Duration, Instant};

use sealpost::app::Server;
use support::domains::{free_port, load, send, DomainSpec};

const ALICE: &str = "alice@contoso.test";
const SENDER: &str = "bob@fabrikam.test";

async fn start(config: &std::path::Path) -> Server {
    let server = sealpost::app::start(load(config)).await;
    server.unwrap_or_else(|e| panic!("start: {e}"))
}

fn queued_as(reply: &sealpost::smtp::client::RcptResult) -> String {
    let reply = reply.as_ref().expect("250");
    assert_eq!(reply.code, 250, "{reply:?}");
    reply
        .text
        .trim_start_matches("Ok: queued as ")
        .trim()
        .to_string()
}

async fn mailbox_count(server: &Server, settle: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = server.store().list(ALICE).expect("list").len();
        if n >= settle || Instant::now() > deadline {
            // Give the runner time to store a copy that should not exist.
            tokio::time::sleep(Duration::from_millis(600)).await;
            return server.store().list(ALICE).expect("list").len();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_transmission_is_acknowledged_but_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let spec = DomainSpec::new("contoso", &[ALICE], free_port());
    let config = spec.write(dir.path());
    let server = start(&config).await;
    let addr = server.local_addrs()[0];
    let message = b"From: <bob@fabrikam.test>\r\nTo: <alice@contoso.test>\r\n\
Received: from mx.fabrikam.test by mx.fabrikam.test id 0660DE2B47832D5343F6\r\n\
Subject: twice\r\n\r\nthe same bytes\r\n";

    let (first, _) = send(addr, SENDER, &[ALICE], message).await;
    let id = queued_as(&first[0]);
    let (again, _) = send(addr, SENDER, &[ALICE], message).await;
    assert_eq!(
        queued_as(&again[0]),
        id,
        "the retransmission names the first copy"
    );
    assert_eq!(mailbox_count(&server, 1).await, 1);

    // Different bytes, or another envelope, are another message.
    let edited = b"From: <bob@fabrikam.test>\r\nTo: <alice@contoso.test>\r\n\
Received: from mx.fabrikam.test by mx.fabrikam.test id 0660DE2B47832D5343F7\r\n\
Subject: twice\r\n\r\nthe same bytes\r\n";
    let (other, _) = send(addr, SENDER, &[ALICE], edited).await;
    assert_ne!(queued_as(&other[0]), id);
    let (other_sender, _) = send(addr, "carol@fabrikam.test", &[ALICE], message).await;
    assert_ne!(queued_as(&other_sender[0]), id);
    assert_eq!(mailbox_count(&server, 3).await, 3);

    // Without a Message-ID or a Received header, identical messages are not taken for one.
    let bare = b"Subject: ping\r\n\r\nping\r\n";
    let (one, _) = send(addr, SENDER, &[ALICE], bare).await;
    let (two, _) = send(addr, SENDER, &[ALICE], bare).await;
    assert_ne!(queued_as(&one[0]), queued_as(&two[0]));
    assert_eq!(mailbox_count(&server, 5).await, 5);

    let metrics = server.telemetry().metrics.render();
    assert!(
        metrics.contains("sealpost_retransmissions_total 1\n"),
        "{metrics}"
    );
    server.shutdown().await;

    // After a restart the delivered message's fingerprint is still known (transmissions.log),
    // and so is a queued one's (its envelope).
    let server = start(&config).await;
    let addr = server.local_addrs()[0];
    let (after_restart, _) = send(addr, SENDER, &[ALICE], message).await;
    assert_eq!(queued_as(&after_restart[0]), id);
    let with_id = b"Message-ID: <once@fabrikam.test>\r\nSubject: id\r\n\r\nx\r\n";
    let (first, _) = send(addr, SENDER, &[ALICE], with_id).await;
    let id2 = queued_as(&first[0]);
    server.shutdown().await;
    let server = start(&config).await;
    let addr = server.local_addrs()[0];
    let (again, _) = send(addr, SENDER, &[ALICE], with_id).await;
    assert_eq!(queued_as(&again[0]), id2);
    assert_eq!(mailbox_count(&server, 6).await, 6);
    server.shutdown().await;
}

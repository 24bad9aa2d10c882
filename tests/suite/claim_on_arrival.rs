//! Messages are claimed for delivery as they are queued while a delivery slot is free, and by
//! the runner otherwise: with one slot and many messages at once both happen, and every message
//! arrives exactly once, whichever way it went.

use crate::support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use support::admin::{metric, metrics_until, wait_listening};
use support::domains::{
    free_port, message, queue_list_json, send, wait_for_mailbox_async, DomainSpec, ServeProcess,
};

const WAIT: Duration = Duration::from_secs(30);
const MESSAGES: usize = 40;

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_delivery_slot_messages_sent_at_once_all_arrive_once() {
    let dir = tempfile::tempdir().unwrap();
    let (cport, fport, cadmin) = (free_port(), free_port(), free_port());
    let contoso = DomainSpec::new("contoso", &["alice@contoso.test"], cport)
        .route("fabrikam.test", fport)
        .toml(&format!("[admin]\nlisten = \"127.0.0.1:{cadmin}\"\n"));
    let fabrikam = DomainSpec::new("fabrikam", &["bob@fabrikam.test"], fport);
    let (contoso_config, fabrikam_config) = (contoso.write(dir.path()), fabrikam.write(dir.path()));
    let text = std::fs::read_to_string(&contoso_config).unwrap();
    let one_slot = text.replace("\n[delivery]\n", "\n[delivery]\nconcurrency = 1\n");
    assert_ne!(one_slot, text);
    std::fs::write(&contoso_config, one_slot).unwrap();
    let _f = ServeProcess::start(&fabrikam_config, fport);
    let _c = ServeProcess::start(&contoso_config, cport);
    wait_listening(loopback(cadmin), WAIT);

    let mut sends = tokio::task::JoinSet::new();
    for i in 0..MESSAGES {
        sends.spawn(async move {
            let marker = format!("M-slot-{i}");
            let body = message("alice@contoso.test", "bob@fabrikam.test", &marker);
            let (replies, _) = send(
                loopback(cport),
                "alice@contoso.test",
                &["bob@fabrikam.test"],
                &body,
            )
            .await;
            assert!(replies[0].is_ok(), "{marker}: {replies:?}");
        });
    }
    while let Some(done) = sends.join_next().await {
        done.unwrap();
    }

    let fabrikam_data = dir.path().join("fabrikam-data");
    wait_for_mailbox_async(&fabrikam_data, "bob@fabrikam.test", MESSAGES, WAIT).await;
    let admin = loopback(cadmin);
    let text = tokio::task::spawn_blocking(move || {
        metrics_until(admin, WAIT, |t| {
            metric(t, "sealpost_messages_delivered_total", &[]).unwrap_or(0.0) >= MESSAGES as f64
        })
    })
    .await
    .unwrap();
    // A copy delivered twice would show by now: the queue is empty and no delivery is pending.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = wait_for_mailbox_async(&fabrikam_data, "bob@fabrikam.test", MESSAGES, WAIT).await;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for m in &got {
        let text = String::from_utf8_lossy(m);
        let marker = text
            .lines()
            .find_map(|l| l.strip_prefix("Subject: test "))
            .expect("a test subject")
            .to_string();
        *seen.entry(marker).or_default() += 1;
    }
    assert_eq!(seen.len(), MESSAGES, "{seen:?}");
    assert!(seen.values().all(|&n| n == 1), "{seen:?}");
    assert_eq!(queue_list_json(&contoso_config).trim(), "");

    let claims = |at: &str| metric(&text, "sealpost_queue_claims_total", &[("at", at)]);
    let (arrival, runner) = (claims("arrival"), claims("runner"));
    println!("claimed on arrival {arrival:?}, by the runner {runner:?}");
    // Every message was claimed once, one way or the other; the first found the slot free.
    let total = arrival.unwrap_or(0.0) + runner.unwrap_or(0.0);
    assert_eq!(total, MESSAGES as f64, "{text}");
    assert!(arrival.unwrap_or(0.0) >= 1.0, "{text}");
}

//! The queue at rest end to end: a queue file written before the upgrade (version 1, in clear)
//! still delivers, and an encrypted queue file altered on disk is quarantined and never delivered.

use crate::support;

use std::time::{Duration, Instant};

use sealpost::queue::{new_queue_id, Envelope, QueueState, Spool};
use support::domains::{
    files_containing, free_port, load, message, wait_for_mailbox_async, DomainSpec,
};

const WAIT: Duration = Duration::from_secs(20);

fn envelope() -> Envelope {
    Envelope::new(
        new_queue_id(),
        "alice@contoso.test",
        vec!["bob@fabrikam.test".into()],
        "client.test",
        "127.0.0.1:40000",
        chrono::Utc::now().timestamp(),
    )
}

/// contoso → fabrikam configs in `dir`; returns (contoso.toml, fabrikam.toml).
fn domains(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cport, fport) = (free_port(), free_port());
    let contoso = DomainSpec::new("contoso", &["alice@contoso.test"], cport)
        .route("fabrikam.test", fport)
        .write(dir);
    let fabrikam = DomainSpec::new("fabrikam", &["bob@fabrikam.test"], fport)
        .route("contoso.test", cport)
        .write(dir);
    (contoso, fabrikam)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_version_1_queue_file_from_before_the_upgrade_still_delivers() {
    let dir = tempfile::tempdir().unwrap();
    let (contoso, fabrikam) = domains(dir.path());
    let c = load(&contoso);
    let c_data = c.data_dir.clone();
    let marker = "QENC-V1-MARKER-9d2e";
    let data = message("alice@contoso.test", "bob@fabrikam.test", marker);
    let env = envelope();
    Spool::open_plain(&c_data)
        .unwrap()
        .enqueue(&env, &data)
        .unwrap();
    // In clear: the grep finds it (so the grep in the other tests can fail).
    assert_eq!(
        files_containing(&c_data, marker.as_bytes()),
        [c_data.join("queue/incoming").join(&env.id)]
    );

    let f = load(&fabrikam);
    let f_data = f.data_dir.clone();
    let f_server = sealpost::app::start(f).await.unwrap();
    let c_server = sealpost::app::start(c).await.unwrap();
    let got = wait_for_mailbox_async(&f_data, "bob@fabrikam.test", 1, WAIT).await;
    assert!(
        got[0].ends_with(&data),
        "{}",
        String::from_utf8_lossy(&got[0])
    );
    wait_until_queue_empty(&c_server.spool()).await;
    assert!(c_server.spool().corrupt_ids().unwrap().is_empty());
    c_server.shutdown().await;
    f_server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_altered_encrypted_queue_file_is_quarantined_and_never_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let (contoso, fabrikam) = domains(dir.path());
    let c = load(&contoso);
    let c_data = c.data_dir.clone();
    let spool = Spool::open(&c_data, sealpost::app::service_key(&c).unwrap()).unwrap();
    assert!(spool.is_encrypted());
    let (bad, good) = (envelope(), envelope());
    let bad_data = message("alice@contoso.test", "bob@fabrikam.test", "QENC-TAMPERED");
    let good_data = message("alice@contoso.test", "bob@fabrikam.test", "QENC-INTACT");
    spool.enqueue(&bad, &bad_data).unwrap();
    spool.enqueue(&good, &good_data).unwrap();
    // Flip one byte of the sealed message and fix the (unkeyed) checksum: only the AEAD can tell.
    let path = spool.path(QueueState::Incoming, &bad.id);
    let mut bytes = std::fs::read(&path).unwrap();
    let end = bytes.len() - (4 + 64 + 1);
    bytes[end - 20] ^= 0x01;
    bytes.truncate(end);
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&bytes))
    };
    bytes.extend_from_slice(format!("END {digest}\n").as_bytes());
    std::fs::write(&path, bytes).unwrap();

    let f = load(&fabrikam);
    let f_data = f.data_dir.clone();
    let f_server = sealpost::app::start(f).await.unwrap();
    let c_server = sealpost::app::start(c).await.unwrap();
    let got = wait_for_mailbox_async(&f_data, "bob@fabrikam.test", 1, WAIT).await;
    assert!(got[0].ends_with(&good_data));
    wait_until_queue_empty(&c_server.spool()).await;
    assert_eq!(c_server.spool().corrupt_ids().unwrap(), [bad.id]);
    // Its claim failed, so it was never handed to delivery: only the intact message arrived.
    let got = wait_for_mailbox_async(&f_data, "bob@fabrikam.test", 1, WAIT).await;
    assert_eq!(got.len(), 1);
    c_server.shutdown().await;
    f_server.shutdown().await;
}

async fn wait_until_queue_empty(spool: &Spool) {
    let deadline = Instant::now() + WAIT;
    while !spool.list().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "queue not empty");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

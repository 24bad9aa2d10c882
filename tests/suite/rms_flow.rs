//! RMS-style protection by transport rule over real sockets: "[protect]" mail leaves contoso as a
//! notice with `message.sealed`, and bob opens it with `sealpost decrypt --tenant-key`.

use crate::support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::domains::{send, start_pair, wait_for_mailbox_async};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protect_subject_is_sealed_and_opens_with_the_tenant_key() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "[rules]\ndir = \"{}\"\n[rms]\ntenant_key_dir = \"{}\"\n[smime]\ncertificate_dir = \"{}\"\n",
        root.join("rules/contoso").display(),
        root.join("fixtures/keys/tenant").display(),
        root.join("fixtures/pki/smime").display()
    );
    let pair = start_pair(dir.path(), &extra, "").await;
    let f_data = pair.fabrikam_data.clone();

    let original =
        "From: <alice@contoso.test>\r\nTo: <bob@fabrikam.test>\r\nSubject: [protect] merger\r\n\
        Message-ID: <m1@contoso.test>\r\n\r\nThe board meets on RMS-MARKER-7.\r\n";
    let (replies, _) = send(
        pair.contoso.local_addrs()[0],
        "alice@contoso.test",
        &["bob@fabrikam.test"],
        original.as_bytes(),
    )
    .await;
    assert!(replies[0].is_ok(), "{replies:?}");
    let got =
        wait_for_mailbox_async(&f_data, "bob@fabrikam.test", 1, Duration::from_secs(20)).await;
    let sealed = String::from_utf8_lossy(&got[0]).into_owned();
    assert!(
        sealed.contains("Subject: [protect] merger"),
        "routing headers stay: {sealed}"
    );
    assert!(sealed.contains("message.sealed"), "{sealed}");
    assert!(
        !sealed.contains("RMS-MARKER-7"),
        "the body must not travel in clear"
    );

    let file = dir.path().join("sealed.eml");
    std::fs::write(&file, &got[0]).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sealpost"))
        .arg("decrypt")
        .arg(&file)
        .arg("--tenant-key")
        .arg(root.join("fixtures/keys/tenant"))
        .args(["--as", "bob@fabrikam.test"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let opened = String::from_utf8_lossy(&out.stdout);
    // The whole message as contoso protected it: its Received header, then the original bytes.
    assert!(opened.starts_with("Received: from client.test"), "{opened}");
    assert!(opened.ends_with(original), "byte for byte: {opened}");
    assert!(stderr.contains("do-not-forward"), "{stderr}");
    assert!(stderr.to_ascii_uppercase().contains("VIEW"), "{stderr}");
    pair.shutdown().await;
}

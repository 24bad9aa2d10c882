//! S/MIME by transport rule over real sockets: the fixture rule encrypts "[secure]" mail for
//! fabrikam.test before the queue write; bob opens it with `sealpost decrypt` and `openssl cms`.

use crate::support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::domains::{send, start_pair, wait_for_mailbox_async};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_subject_is_encrypted_for_the_recipient_and_opens_with_his_key() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "[rules]\ndir = \"{}\"\n[smime]\ncertificate_dir = \"{}\"\n[rms]\ntenant_key_dir = \"{}\"\n",
        root.join("rules/contoso").display(),
        root.join("fixtures/pki/smime").display(),
        root.join("fixtures/keys/tenant").display()
    );
    let pair = start_pair(dir.path(), &extra, "").await;
    let f_data = pair.fabrikam_data.clone();
    let addr = pair.contoso.local_addrs()[0];

    let inner =
        "Content-Type: text/plain; charset=utf-8\r\n\r\nThe launch code is SMIME-MARKER-42.\r\n";
    let secure = format!("From: <alice@contoso.test>\r\nTo: <bob@fabrikam.test>\r\nSubject: [secure] launch\r\nMIME-Version: 1.0\r\n{inner}");
    let (replies, _) = send(
        addr,
        "alice@contoso.test",
        &["bob@fabrikam.test"],
        secure.as_bytes(),
    )
    .await;
    assert!(replies[0].is_ok(), "{replies:?}");
    let plain = b"From: <alice@contoso.test>\r\nSubject: lunch\r\n\r\nPLAIN-MARKER\r\n";
    let (replies, _) = send(addr, "alice@contoso.test", &["bob@fabrikam.test"], plain).await;
    assert!(replies[0].is_ok());

    let got = wait_for_mailbox_async(&f_data, "bob@fabrikam.test", 2, WAIT).await;
    let (enc, clear): (Vec<_>, Vec<_>) = got
        .iter()
        .partition(|m| String::from_utf8_lossy(m).contains("launch"));
    let enc = String::from_utf8_lossy(enc[0]).into_owned();
    assert!(
        enc.contains("Subject: [secure] launch\r\n"),
        "routing headers stay outside: {enc}"
    );
    assert!(enc.contains("application/pkcs7-mime"), "{enc}");
    assert!(
        !enc.contains("SMIME-MARKER-42"),
        "the body must not travel in clear"
    );
    assert!(
        String::from_utf8_lossy(clear[0]).contains("PLAIN-MARKER"),
        "mail without [secure] is untouched"
    );

    let key = root.join("fixtures/pki/smime/bob@fabrikam.test.key");
    let cert = root.join("fixtures/pki/smime/bob@fabrikam.test.crt");
    let file = dir.path().join("secure.eml");
    std::fs::write(&file, &enc).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sealpost"))
        .arg("decrypt")
        .arg(&file)
        .arg("--key")
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let opened = String::from_utf8_lossy(&out.stdout);
    assert!(
        opened.contains("The launch code is SMIME-MARKER-42.")
            && opened.contains("Subject: [secure] launch"),
        "{opened}"
    );

    let out = Command::new("openssl")
        .args(["cms", "-decrypt", "-in"])
        .arg(&file)
        .arg("-inkey")
        .arg(&key)
        .arg("-recip")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("SMIME-MARKER-42"));

    // Alice's key is not bob's: a clear error, nothing printed.
    let alice = root.join("fixtures/pki/smime/alice@contoso.test.key");
    let out = Command::new(env!("CARGO_BIN_EXE_sealpost"))
        .arg("decrypt")
        .arg(&file)
        .arg("--key")
        .arg(&alice)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    pair.shutdown().await;
}

//! `sealpost tls-check` against real servers: a verified partner, a wrong name, plaintext only.

mod support;

use std::path::Path;

use support::domains::{free_port, load, sealpost, DomainSpec};
use support::peers::plaintext_peer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_version_cipher_chain_and_verification() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let spec = DomainSpec::new("fabrikam", &["bob@fabrikam.test"], port);
    let server = sealpost::app::start(load(&spec.write(dir.path())))
        .await
        .unwrap();
    let ca = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pki/ca.crt");
    let ca = ca.to_str().unwrap().to_string();
    let target = format!("127.0.0.1:{port}");
    let (code, out, err) = tokio::task::spawn_blocking({
        let (t, ca) = (target.clone(), ca.clone());
        move || {
            sealpost(&[
                "tls-check",
                &t,
                "--starttls",
                "--ca",
                &ca,
                "--name",
                "mx.fabrikam.test",
            ])
        }
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    for needle in [
        "STARTTLS:      offered",
        "TLS 1.3:       accepted",
        "TLS 1.2:       accepted",
        "negotiated:    TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (forward secrecy: yes)",
        "key:         RSA 2048 bits",
        "names:       mx.fabrikam.test",
        "verification:  verified mx.fabrikam.test via ca.crt",
        "grade:         A",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in\n{out}");
    }
    // Wrong name: still encrypted and strong, but not verified.
    let (code, out, _) = tokio::task::spawn_blocking({
        let (t, ca) = (target.clone(), ca.clone());
        move || {
            sealpost(&[
                "tls-check",
                &t,
                "--starttls",
                "--ca",
                &ca,
                "--name",
                "mx.contoso.test",
                "--json",
            ])
        }
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["grade"], "B");
    assert_eq!(json["verified"], false);
    assert_eq!(
        json["verification"],
        "not verified: peer certificate does not name mx.contoso.test"
    );
    assert_eq!(json["chain"][0]["rsa_bits"], 2048);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn says_when_starttls_is_not_offered() {
    let (port, _) = plaintext_peer();
    let target = format!("127.0.0.1:{port}");
    let (code, out, _) =
        tokio::task::spawn_blocking(move || sealpost(&["tls-check", &target, "--starttls"]))
            .await
            .unwrap();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("STARTTLS:      NOT offered"), "{out}");
    assert!(
        out.contains("grade:         F") && out.contains("STARTTLS is not offered"),
        "{out}"
    );
}

//! A partner with a plain `openssl req -x509` certificate (self-signed, CA:TRUE): verify-name
//! refuses it with a sentence that says what to do, and a `tls = "fingerprint"` connector pinned
//! to what `sealpost tls-check` prints delivers to it, over real sockets.

use crate::support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sealpost::app::Server;
use sealpost::tls::policy::Fingerprint;
use support::domains::{
    free_port, load, openssl_self_signed, sealpost, submit, wait_for_mailbox_async,
    wait_for_reason, DomainSpec,
};

const WAIT: Duration = Duration::from_secs(20);
const BOB: &str = "bob@fabrikam.test";

/// fabrikam serving STARTTLS with an openssl-made self-signed certificate.
async fn self_signed_fabrikam(dir: &Path, port: u16) -> (Server, std::path::PathBuf, String) {
    let (key, crt) = openssl_self_signed(
        dir,
        "partner",
        "rsa:2048",
        &["-addext", "subjectAltName=DNS:mx.fabrikam.test"],
    );
    let mut spec = DomainSpec::new("fabrikam", &["bob@fabrikam.test"], port);
    spec.tls = false;
    let spec = spec.toml(&format!(
        "[tls]\ncertificate = \"{}\"\nprivate_key = \"{}\"\n",
        crt.display(),
        key.display()
    ));
    let config = load(&spec.write(dir));
    let data = config.data_dir.clone();
    let server = sealpost::app::start(config).await.unwrap();
    (server, data, crt.display().to_string())
}

async fn contoso_with(dir: &Path, name: &str, port: u16, tls: &str) -> Server {
    let sub = dir.join(name);
    std::fs::create_dir_all(&sub).unwrap();
    let spec = DomainSpec::new("contoso", &["alice@contoso.test"], free_port()).toml(&format!(
        "[[connector.outbound]]\nname = \"{name}\"\nrecipient_domains = [\"fabrikam.test\"]\n\
         smart_hosts = [\"127.0.0.1:{port}\"]\n{tls}\n"
    ));
    sealpost::app::start(load(&spec.write(&sub))).await.unwrap()
}

/// The value after `label` on the line of `sealpost tls-check` that carries it.
fn printed(report: &str, label: &str) -> String {
    let line = report
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no {label:?} in:\n{report}"));
    line.trim_start()[label.len()..].trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_partner_is_reached_by_its_pinned_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (fab, fab_data, crt) = self_signed_fabrikam(dir.path(), port).await;

    // tls-check prints both pins; the certificate pin is the one openssl computes.
    let target = format!("127.0.0.1:{port}");
    let (_, report, err) = sealpost(&["tls-check", "--starttls", &target]);
    let cert_pin = printed(&report, "pin (cert):");
    let key_pin = printed(&report, "pin (key):");
    let openssl = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in", &crt])
        .output()
        .unwrap();
    let openssl = String::from_utf8_lossy(&openssl.stdout);
    let (_, colons) = openssl.trim().split_once('=').expect("openssl fingerprint");
    assert_eq!(
        Fingerprint::parse(&format!("sha256:{colons}")).unwrap(),
        Fingerprint::parse(&cert_pin).unwrap(),
        "{report}{err}"
    );

    // verify-name with the certificate as its own CA: refused, with what to do about it.
    let ca =
        format!("tls = \"verify-name\"\ntls_names = [\"mx.fabrikam.test\"]\nca_file = \"{crt}\"");
    let verify = contoso_with(dir.path(), "verify", port, &ca).await;
    submit(&verify, BOB, "M-verify").await;
    let reason = wait_for_reason(&verify, "CA certificate").await;
    assert!(
        reason.starts_with("451 4.7.5 TLS required by connector verify: the partner presents a CA certificate as its server certificate")
            && reason.contains("tls = \"fingerprint\""),
        "{reason}"
    );

    // A wrong pin: deferred, naming what the peer presented.
    let wrong = format!(
        "tls = \"fingerprint\"\ntls_fingerprints = [\"sha256:{}\"]",
        "00".repeat(32)
    );
    let pinned_wrong = contoso_with(dir.path(), "wrong", port, &wrong).await;
    submit(&pinned_wrong, BOB, "M-wrong").await;
    let reason = wait_for_reason(&pinned_wrong, "matches none of the pinned").await;
    assert!(
        reason.starts_with("451 4.7.5") && reason.contains(&cert_pin),
        "{reason}"
    );

    // Pinned by public key: delivered, and the trace says by which pin.
    let pin = format!("tls = \"fingerprint\"\ntls_fingerprints = [\"{key_pin}\"]");
    let pinned = contoso_with(dir.path(), "pinned", port, &pin).await;
    submit(&pinned, BOB, "M-pinned").await;
    let got = wait_for_mailbox_async(&fab_data, "bob@fabrikam.test", 1, WAIT).await;
    assert!(String::from_utf8_lossy(&got[0]).contains("body M-pinned"));
    assert_eq!(got.len(), 1, "only the pinned connector delivered");

    for s in [verify, pinned_wrong, pinned] {
        s.shutdown().await;
    }
    fab.shutdown().await;
}

#[test]
fn a_fingerprint_connector_needs_its_pins_and_pins_need_the_level() {
    let dir = tempfile::tempdir().unwrap();
    for (tls, problem) in [
        (
            "tls = \"fingerprint\"",
            "tls_fingerprints: tls = \"fingerprint\" needs at least one pin",
        ),
        (
            "tls = \"verify-name\"\ntls_fingerprints = [\"sha256:00\"]",
            "tls_fingerprints[0]: \"sha256:00\" is not sha256: and 64 hex digits",
        ),
        (
            &format!(
                "tls = \"required\"\ntls_fingerprints = [\"sha256:{}\"]",
                "ab".repeat(32)
            ),
            "tls_fingerprints: only used with tls = \"fingerprint\"",
        ),
    ] {
        let spec = DomainSpec::new("contoso", &["alice@contoso.test"], free_port()).toml(&format!(
            "[[connector.outbound]]\nname = \"p\"\nrecipient_domains = [\"fabrikam.test\"]\n{tls}\n"
        ));
        let path = spec.write(dir.path());
        let (code, _, err) = sealpost(&["check-config", "--config", path.to_str().unwrap()]);
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains(&format!("connector.outbound[0].{problem}")),
            "{err}"
        );
    }
}

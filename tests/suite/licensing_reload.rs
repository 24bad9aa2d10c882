//! A reload (SIGHUP, `sealpost reload`) replaces what the running licensing service decides
//! with: a CA newly trusted for contoso.test lets carol in from the next request on, a
//! configuration whose trust does not load is refused and the service keeps deciding as before,
//! and a new listen address is reported as waiting for a restart.

use crate::support;
use crate::support::https;

use std::path::{Path, PathBuf};

use support::domains::{free_port, load, DomainSpec};
use support::rms::{protected, request_body, tenant_dir};

/// contoso's configuration with the service on `port`, trusting the fixture CA for `domains`
/// (through `ca_file`).
fn write(dir: &Path, smtp: u16, port: u16, listen: u16, domains: &str, ca_file: &str) -> PathBuf {
    let section = format!(
        "[rms]\ntenant_key_dir = \"{}\"\n\n[rms.licensing]\nurl = \"https://127.0.0.1:{port}\"\n\
         listen = \"127.0.0.1:{listen}\"\n\n[[rms.licensing.trust]]\ndomains = [{domains}]\n\
         ca_file = \"{ca_file}\"\n",
        tenant_dir().display()
    );
    DomainSpec::new("contoso", &["alice@contoso.test"], smtp)
        .toml(&section)
        .write(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_replaces_the_services_trust_and_a_bad_one_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (smtp, port) = (free_port(), free_port());
    let ca = "{pki}/ca.crt";
    let path = write(dir.path(), smtp, port, port, "\"fabrikam.test\"", ca);
    let server = sealpost::app::start(load(&path)).await.unwrap();

    let url = format!("https://127.0.0.1:{port}");
    let message = protected(
        b"Subject: s\r\n\r\nbody\r\n",
        &["carol@contoso.test"],
        "<reload@contoso.test>",
        &url,
    );
    let body = request_body(&message, None);
    let carol = move || {
        let body = body.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                https::request(
                    port,
                    Some("carol@contoso.test"),
                    "POST",
                    "/v1/use-license",
                    "",
                    &body,
                )
            })
            .await
            .unwrap()
        }
    };

    let before = carol().await;
    assert_eq!(
        before.status, "HTTP/1.1 401 Unauthorized",
        "{}",
        before.body
    );

    // Trust the fixture CA for contoso.test too: applied from the next request on.
    let both = "\"fabrikam.test\", \"contoso.test\"";
    write(dir.path(), smtp, port, port, both, ca);
    let said = server.reload().expect("the reload applies");
    assert!(!said.contains("rms.licensing"), "{said}");
    let after = carol().await;
    assert_eq!(after.status, "HTTP/1.1 200 OK", "{}", after.body);
    assert_eq!(after.body["principal"], "carol@contoso.test");
    assert!(after.version.starts_with("TLSv1."), "{}", after.version);

    // A CA file that is not there: refused, and the service decides as before.
    write(
        dir.path(),
        smtp,
        port,
        port,
        "\"fabrikam.test\"",
        "{pki}/missing.crt",
    );
    let e = server
        .reload()
        .expect_err("a trust that does not load is refused");
    assert!(e.contains("missing.crt"), "{e}");
    assert_eq!(carol().await.status, "HTTP/1.1 200 OK");

    // A new address applies at a restart, and says so; the service still answers where it was.
    write(dir.path(), smtp, port, free_port(), both, ca);
    let said = server.reload().expect("the reload applies");
    assert!(said.contains("rms.licensing.listen"), "{said}");
    assert_eq!(carol().await.status, "HTTP/1.1 200 OK");
    server.shutdown().await;
}

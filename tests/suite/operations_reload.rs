//! Hot reload end to end: SIGHUP gives new sessions the new mailboxes while an open session keeps
//! the configuration it started with, a broken configuration is refused with its reason and the
//! old one keeps serving, a replaced certificate is presented after a reload, and `sealpost
//! reload` reports applied / refused / unreachable through the admin endpoint, sending the token
//! of `[admin] token_file`.

use crate::support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use sealpost::smtp::client::{ClientSettings, Connection, TlsMode};
use sealpost::tls::policy::TlsPolicy;
use support::admin::{http, hup, metric, serve_log, wait_listening, wait_log, write_token};
use support::domains::{
    free_port, load, openssl_self_signed, pki, sealpost, send, DomainSpec, ServeProcess,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(20);
const MESSAGE: &[u8] = b"From: <alice@contoso.test>\r\nSubject: reload\r\n\r\nhello\r\n";

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn settings() -> ClientSettings {
    ClientSettings {
        helo_name: "client.test".into(),
        timeout: Duration::from_secs(10),
        tls: sealpost::tls::opportunistic_client_config(),
    }
}

/// An SMTP session past STARTTLS and EHLO.
async fn open_session(addr: SocketAddr) -> Connection {
    Connection::open(addr, "mx.contoso.test", &settings(), TlsMode::Opportunistic)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"))
}

/// The `n`-th line (from 0) of `log` that contains `needle`.
fn nth_line_with<'a>(log: &'a str, needle: &str, n: usize) -> &'a str {
    log.lines()
        .filter(|l| l.contains(needle))
        .nth(n)
        .unwrap_or_else(|| panic!("no {n}th {needle:?} line in\n{log}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_gives_new_sessions_the_new_config_and_refuses_broken_ones() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut spec = DomainSpec::new("contoso", &["alice@contoso.test"], port);
    let config = spec.write(dir.path());
    let server = ServeProcess::start(&config, port);
    let (addr, log) = (loopback(port), serve_log(&config));
    let to = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let mut open = open_session(addr).await;
    spec.mailboxes.push("dave@contoso.test");
    spec.write(dir.path());
    hup(server.child.id());
    let text = wait_log(&log, "SIGHUP: configuration reloaded", 1, WAIT);
    assert!(
        nth_line_with(&text, "configuration reloaded", 0).contains("2 mailboxes"),
        "{text}"
    );

    // The session opened before the reload still works, under the mailboxes it started with.
    let policy = TlsPolicy::opportunistic(settings().tls);
    open.authorize(&policy).unwrap();
    let replies = open
        .send(
            &policy,
            "alice@contoso.test",
            &to(&["alice@contoso.test", "dave@contoso.test"]),
            MESSAGE,
        )
        .await
        .expect("the open session survives the reload");
    assert_eq!(replies[0].as_ref().map(|r| r.code), Ok(250), "{replies:?}");
    let old_answer = replies[1]
        .as_ref()
        .expect_err("dave is unknown to the old session");
    assert_eq!(
        (old_answer.code, old_answer.enhanced),
        (550, Some([5, 1, 1])),
        "{old_answer:?}"
    );
    open.quit().await;
    // A new session knows dave.
    let (replies, _) = send(addr, "alice@contoso.test", &["dave@contoso.test"], MESSAGE).await;
    assert_eq!(replies[0].as_ref().map(|r| r.code), Ok(250), "{replies:?}");

    // Not TOML: refused, the reason names the file; the configuration in force still serves.
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{good}\n[limits\nmax_recipients = 5\n")).unwrap();
    hup(server.child.id());
    let text = wait_log(&log, "SIGHUP: configuration refused", 1, WAIT);
    let refused = nth_line_with(&text, "configuration refused", 0);
    assert!(refused.contains(&config.display().to_string()), "{refused}");
    let (replies, _) = send(addr, "alice@contoso.test", &["dave@contoso.test"], MESSAGE).await;
    assert_eq!(replies[0].as_ref().map(|r| r.code), Ok(250), "{replies:?}");

    // A root key file that does not exist: refused, the reason names the key and the file.
    let missing = dir.path().join("contoso-keys/missing.key");
    let broken = good.replace(
        &dir.path().join("contoso-keys/a.key").display().to_string(),
        &missing.display().to_string(),
    );
    assert_ne!(broken, good);
    std::fs::write(&config, broken).unwrap();
    hup(server.child.id());
    let text = wait_log(&log, "SIGHUP: configuration refused", 2, WAIT);
    let refused = nth_line_with(&text, "configuration refused", 1);
    assert!(refused.contains("root_keys[0]"), "{refused}");
    assert!(refused.contains("missing.key"), "{refused}");
    assert_eq!(text.matches("SIGHUP: configuration reloaded").count(), 1);
    let (replies, _) = send(addr, "alice@contoso.test", &["dave@contoso.test"], MESSAGE).await;
    assert_eq!(replies[0].as_ref().map(|r| r.code), Ok(250), "{replies:?}");
}

/// The DER of the first certificate in a PEM file.
fn der_of(pem: &Path) -> Vec<u8> {
    CertificateDer::from_pem_file(pem)
        .unwrap_or_else(|e| panic!("{}: {e:?}", pem.display()))
        .as_ref()
        .to_vec()
}

/// The certificate a new STARTTLS session is shown.
async fn presented(addr: SocketAddr) -> Vec<u8> {
    let conn = open_session(addr).await;
    let facts = conn.tls().expect("STARTTLS").clone();
    conn.quit().await;
    facts.peer_certificates[0].as_ref().to_vec()
}

/// Reads one complete (possibly multi-line) SMTP reply.
async fn read_reply(tcp: &mut TcpStream) -> String {
    let mut text = String::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = tcp.read(&mut buf).await.expect("read reply");
        assert!(n > 0, "closed after {text:?}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
        let done = text
            .lines()
            .last()
            .is_some_and(|l| l.len() >= 4 && l.as_bytes()[3] == b' ');
        if done && text.ends_with("\r\n") {
            return text;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_presents_a_replaced_certificate_to_new_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    let (crt, key) = (tls.join("server.crt"), tls.join("server.key"));
    std::fs::copy(pki().join("mx.contoso.test.crt"), &crt).unwrap();
    std::fs::copy(pki().join("mx.contoso.test.key"), &key).unwrap();
    let port = free_port();
    let mut spec = DomainSpec::new("contoso", &["alice@contoso.test"], port).toml(&format!(
        "[tls]\ncertificate = \"{}\"\nprivate_key = \"{}\"\n",
        crt.display(),
        key.display()
    ));
    spec.tls = false; // the [tls] above instead of the fixture's
    let server = sealpost::app::start(load(&spec.write(dir.path())))
        .await
        .expect("start");
    let addr = server.local_addrs()[0];
    let old = der_of(&crt);
    assert_eq!(presented(addr).await, old);

    // A connection accepted before the reload, which asks for STARTTLS only after it.
    let mut early = TcpStream::connect(addr).await.unwrap();
    assert!(read_reply(&mut early).await.starts_with("220 "));

    let fresh = dir.path().join("fresh");
    std::fs::create_dir_all(&fresh).unwrap();
    let (new_key, new_crt) = openssl_self_signed(&fresh, "server", "rsa:2048", &[]);
    std::fs::rename(&new_key, &key).unwrap();
    std::fs::rename(&new_crt, &crt).unwrap();
    let new = der_of(&crt);
    assert_ne!(new, old);
    assert_eq!(presented(addr).await, old, "no reload yet");

    let summary = server.reload().expect("reload applied");
    assert!(summary.contains("server.crt"), "{summary}");
    assert_eq!(presented(addr).await, new);

    early.write_all(b"EHLO client.test\r\n").await.unwrap();
    assert!(read_reply(&mut early).await.contains("STARTTLS"));
    early.write_all(b"STARTTLS\r\n").await.unwrap();
    assert!(read_reply(&mut early).await.starts_with("220 "));
    let connector = tokio_rustls::TlsConnector::from(sealpost::tls::opportunistic_client_config());
    let name = ServerName::try_from("mx.contoso.test").unwrap();
    let tls_stream = connector.connect(name, early).await.expect("handshake");
    let shown = tls_stream.get_ref().1.peer_certificates().unwrap()[0]
        .as_ref()
        .to_vec();
    assert_eq!(
        shown, old,
        "a session keeps the certificate of the configuration it was accepted under"
    );
    drop(tls_stream);

    // A key that does not match the certificate is refused; the new pair stays in force.
    let (other_key, _) = openssl_self_signed(&fresh, "other", "rsa:2048", &[]);
    std::fs::rename(&other_key, &key).unwrap();
    let reason = server.reload().expect_err("mismatched key refused");
    assert!(
        reason.contains("does not match") && reason.contains("server.key"),
        "{reason}"
    );
    assert_eq!(presented(addr).await, new);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_command_reports_applied_refused_and_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let (port, admin_port) = (free_port(), free_port());
    let admin = loopback(admin_port);
    let token = write_token(
        &dir.path().join("admin.token"),
        "reload-command-token-0123456789",
    );
    let mut spec = DomainSpec::new("contoso", &["alice@contoso.test"], port).toml(&format!(
        "[admin]\nlisten = \"{admin}\"\ntoken_file = \"admin.token\"\n"
    ));
    let config = spec.write(dir.path());
    let cfg = config.to_str().unwrap();
    let _server = ServeProcess::start(&config, port);
    wait_listening(admin, WAIT);
    let addr = loopback(port);

    spec.mailboxes.push("dave@contoso.test");
    spec.write(dir.path());
    let (code, out, err) = sealpost(&["reload", "--config", cfg]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("reloaded: "), "{out}");
    assert!(out.contains("2 mailboxes"), "{out}");
    let (replies, _) = send(addr, "alice@contoso.test", &["dave@contoso.test"], MESSAGE).await;
    assert_eq!(replies[0].as_ref().map(|r| r.code), Ok(250), "{replies:?}");

    // Two ways to break a file that still names the admin endpoint: both refused with the reason.
    let good = std::fs::read_to_string(&config).unwrap();
    let unknown_key = format!("{good}\n[limits]\nmax_rcpts = 5\n");
    let missing_key = good.replace(
        &dir.path().join("contoso-keys/b.key").display().to_string(),
        &dir.path()
            .join("contoso-keys/gone.key")
            .display()
            .to_string(),
    );
    for (broken, why) in [(unknown_key, "max_rcpts"), (missing_key, "gone.key")] {
        std::fs::write(&config, broken).unwrap();
        let (code, out, err) = sealpost(&["reload", "--config", cfg]);
        assert_eq!(code, 1, "{out}{err}");
        assert!(out.starts_with("refused: "), "{out}");
        assert!(out.contains(why), "{out}");
        assert!(
            out.contains("the running configuration stays in force"),
            "{out}"
        );
    }
    // A file that is not TOML does not say where to ask.
    std::fs::write(&config, format!("{good}\n[limits\n")).unwrap();
    let (code, out, err) = sealpost(&["reload", "--config", cfg]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("not TOML"), "{err}");

    // The server kept the applied configuration and counted every attempt.
    let (replies, _) = send(addr, "alice@contoso.test", &["dave@contoso.test"], MESSAGE).await;
    assert_eq!(replies[0].as_ref().map(|r| r.code), Ok(250), "{replies:?}");
    assert_eq!(http(admin, "GET", "/healthz").status, 200);
    let metrics = http(admin, "GET", "/metrics").body;
    let reloads = |result| {
        metric(
            &metrics,
            "sealpost_config_reloads_total",
            &[("result", result)],
        )
    };
    assert_eq!(reloads("applied"), Some(1.0), "{metrics}");
    assert_eq!(reloads("refused"), Some(2.0), "{metrics}");

    // A token the server does not hold: exit 2, nothing applied. The file changed since the
    // server loaded it, so the message says to send SIGHUP.
    std::fs::write(&config, &good).unwrap();
    write_token(&token, "another-token-0123456789abcdef");
    let (code, out, err) = sealpost(&["reload", "--config", cfg]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("did not accept the request (401 Unauthorized)")
            && err.contains("does not match [admin] token_file")
            && err.contains("send SIGHUP"),
        "{err}"
    );
    assert!(
        !err.contains("another-token"),
        "the token is never printed: {err}"
    );
    let log = std::fs::read_to_string(serve_log(&config)).unwrap();
    assert!(log.contains("admin /reload refused"), "{log}");
    for token in ["reload-command-token", "another-token"] {
        assert!(!log.contains(token), "the server logged a token: {log}");
    }
    // No token file where the configuration says: exit 2 before asking.
    std::fs::remove_file(&token).unwrap();
    let (code, out, err) = sealpost(&["reload", "--config", cfg]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("admin.token_file: file not found") && err.contains("admin.token"),
        "{err}"
    );
    let metrics = http(admin, "GET", "/metrics").body;
    assert_eq!(
        metric(
            &metrics,
            "sealpost_config_reloads_total",
            &[("result", "applied")]
        ),
        Some(1.0),
        "{metrics}"
    );
    // A configuration without token_file: the CLI says to configure one or use SIGHUP.
    let tokenless = DomainSpec::new("woodgrove", &["ann@woodgrove.test"], free_port())
        .toml(&format!("[admin]\nlisten = \"{admin}\"\n"))
        .write(dir.path());
    let (code, out, err) = sealpost(&["reload", "--config", tokenless.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("no [admin] token_file") && err.contains("SIGHUP"),
        "{err}"
    );

    // No [admin] listen: use SIGHUP. An endpoint nobody answers on: exit 2 as well.
    let plain = DomainSpec::new("fabrikam", &["bob@fabrikam.test"], free_port()).write(dir.path());
    let (code, out, err) = sealpost(&["reload", "--config", plain.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("no [admin] listen") && err.contains("SIGHUP"),
        "{err}"
    );
    write_token(&token, "reload-command-token-0123456789");
    let nobody = DomainSpec::new("northwind", &["eve@northwind.test"], free_port())
        .toml(&format!(
            "[admin]\nlisten = \"127.0.0.1:{}\"\ntoken_file = \"admin.token\"\n",
            free_port()
        ))
        .write(dir.path());
    let (code, out, err) = sealpost(&["reload", "--config", nobody.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("cannot reach the admin endpoint"), "{err}");
}

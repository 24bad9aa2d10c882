//! Partner connectors over real sockets: forced TLS outbound (no byte in clear when it fails),
//! certificate checks with their reasons, audit mode, inbound require_tls and client
//! certificates, and the STARTTLS command injection (CVE-2011-0411).

use crate::support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sealpost::app::Server;
use sealpost::config::TlsMinVersion;
use sealpost::smtp::client::{ClientSettings, Connection, TlsMode};
use sealpost::tls::policy::{ConnectorVerifier, PeerCheck, TlsLevel, TlsPolicy};
use support::domains::{
    free_port, load, message, openssl_self_signed, pki, send, submit, wait_for_mailbox_async,
    wait_for_reason, DomainSpec, ServeProcess,
};
use support::peers::{plaintext_peer, starttls_stripping_proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(20);

fn outbound(name: &str, domain: &str, port: u16, tls: &str, extra: &str) -> String {
    format!(
        "[[connector.outbound]]\nname = \"{name}\"\nrecipient_domains = [\"{domain}\"]\nsmart_hosts = [\"127.0.0.1:{port}\"]\n\
         tls = \"{tls}\"\n{extra}\n"
    )
}

const FROM_CONTOSO: &str = "[[connector.inbound]]\nname = \"from-contoso\"\nsender_domains = [\"contoso.test\"]\n\
    require_tls = true\nclient_certificate_names = [\"mx.contoso.test\"]\nca_file = \"{pki}/ca.crt\"\n";

async fn contoso_with(dir: &Path, connector: &str) -> Server {
    let spec = DomainSpec::new("contoso", &["alice@contoso.test"], free_port()).toml(connector);
    sealpost::app::start(load(&spec.write(dir))).await.unwrap()
}

async fn fabrikam(dir: &Path, port: u16, extra: &str) -> (Server, std::path::PathBuf) {
    let spec = DomainSpec::new("fabrikam", &["bob@fabrikam.test"], port).toml(extra);
    let config = load(&spec.write(dir));
    let data = config.data_dir.clone();
    (sealpost::app::start(config).await.unwrap(), data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_tls_toward_a_peer_without_starttls_defers_and_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (peer, seen) = plaintext_peer();
    let contoso = contoso_with(
        dir.path(),
        &outbound("to-plain", "plain.test", peer, "required", ""),
    )
    .await;
    submit(&contoso, "bob@plain.test", "M-forced").await;
    let reason = wait_for_reason(&contoso, "peer did not offer STARTTLS").await;
    assert!(
        reason.starts_with(
            "451 4.7.4 TLS required by connector to-plain: peer did not offer STARTTLS"
        ),
        "{reason}"
    );
    let heard = seen.lock().unwrap().clone();
    assert!(heard.iter().any(|l| l.starts_with("EHLO")), "{heard:?}");
    assert!(
        !heard
            .iter()
            .any(|l| l.starts_with("MAIL") || l.starts_with("RCPT") || l == "DATA"),
        "{heard:?}"
    );
    assert!(!heard.iter().any(|l| l.contains("M-forced")), "{heard:?}");
    // The same connector in opportunistic mode delivers in plaintext.
    let dir2 = tempfile::tempdir().unwrap();
    let relaxed = contoso_with(
        dir2.path(),
        &outbound("to-plain", "plain.test", peer, "opportunistic", ""),
    )
    .await;
    submit(&relaxed, "bob@plain.test", "M-relaxed").await;
    let deadline = Instant::now() + WAIT;
    while !seen.lock().unwrap().iter().any(|l| l == "body M-relaxed") {
        assert!(
            Instant::now() < deadline,
            "opportunistic delivery did not happen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    contoso.shutdown().await;
    relaxed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_stripping_starttls_gets_nothing_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let fport = free_port();
    let (fab, _) = fabrikam(dir.path(), fport, "").await;
    let (proxy, seen) = starttls_stripping_proxy(fport);
    let extra = "tls_names = [\"mx.fabrikam.test\"]\nca_file = \"{pki}/ca.crt\"";
    let contoso = contoso_with(
        dir.path(),
        &outbound("to-fabrikam", "fabrikam.test", proxy, "verify-name", extra),
    )
    .await;
    submit(&contoso, "bob@fabrikam.test", "M-stripped").await;
    let reason = wait_for_reason(&contoso, "peer did not offer STARTTLS").await;
    assert!(
        reason.contains("TLS required by connector to-fabrikam"),
        "{reason}"
    );
    let sent = seen.lock().unwrap().concat();
    assert!(sent.contains("EHLO mx.contoso.test"), "{sent}");
    assert!(
        !sent.contains("MAIL FROM") && !sent.contains("M-stripped"),
        "{sent}"
    );
    contoso.shutdown().await;
    fab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_problems_defer_each_with_its_own_reason() {
    let dir = tempfile::tempdir().unwrap();
    let fport = free_port();
    let (fab, _) = fabrikam(dir.path(), fport, "").await;
    let other_ca = dir.path().join("other-pki");
    sealpost::crypto::pki::generate(&other_ca, &[]).unwrap();
    let cases = [
        (
            "verify-name",
            "tls_names = [\"mx.wrong.test\"]\nca_file = \"{pki}/ca.crt\"".to_string(),
            "peer certificate does not name mx.wrong.test",
        ),
        (
            "verify-ca",
            format!("ca_file = \"{}/ca.crt\"", other_ca.display()),
            "peer certificate does not chain to ca.crt",
        ),
        (
            "verify-ca",
            String::new(),
            "peer certificate does not chain to system roots",
        ),
    ];
    for (i, (level, extra, expected)) in cases.iter().enumerate() {
        let sub = dir.path().join(format!("case{i}"));
        std::fs::create_dir_all(&sub).unwrap();
        let contoso = contoso_with(
            &sub,
            &outbound("to-fabrikam", "fabrikam.test", fport, level, extra),
        )
        .await;
        submit(&contoso, "bob@fabrikam.test", &format!("M-cert-{i}")).await;
        let reason = wait_for_reason(&contoso, expected).await;
        assert!(
            reason.starts_with("451 4.7.5 TLS required by connector to-fabrikam: "),
            "{reason}"
        );
        contoso.shutdown().await;
    }
    fab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1024_bit_peer_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (key, crt) = openssl_self_signed(dir.path(), "weak", "rsa:1024", &[]);
    // A STARTTLS peer in Python whose certificate has a 1024-bit key (OpenSSL security level 0).
    let port = free_port();
    let script = format!(
        r#"
import socket, ssl
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
ctx.load_cert_chain("{crt}", "{key}")
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", {port})); srv.listen(5)
def serve(c):
    f = c.makefile("rb")
    c.sendall(b"220 weak.test ESMTP\r\n")
    for line in f:
        if line.upper().startswith(b"EHLO"): c.sendall(b"250-weak.test\r\n250 STARTTLS\r\n")
        elif line.upper().startswith(b"STARTTLS"):
            c.sendall(b"220 go ahead\r\n")
            ctx.wrap_socket(c, server_side=True).recv(1)
            break
        else: c.sendall(b"250 ok\r\n")
while True:
    c, _ = srv.accept()
    # A client that hangs up (the readiness probe, the refused handshake) must not end the peer.
    try: serve(c)
    except Exception: pass
    finally: c.close()
"#,
        crt = crt.display(),
        key = key.display()
    );
    let mut peer = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .spawn()
        .expect("python3");
    let deadline = Instant::now() + WAIT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "python peer did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let contoso = contoso_with(
        dir.path(),
        &outbound("to-weak", "weak.test", port, "required", ""),
    )
    .await;
    submit(&contoso, "bob@weak.test", "M-weak").await;
    let reason = wait_for_reason(&contoso, "1024-bit RSA key").await;
    assert!(reason.contains("TLS required by connector to-weak: peer certificate has a 1024-bit RSA key (minimum 2048)"), "{reason}");
    contoso.shutdown().await;
    let _ = peer.kill();
    let _ = peer.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_mode_delivers_and_logs_what_would_have_failed() {
    let dir = tempfile::tempdir().unwrap();
    let fport = free_port();
    let (fab, fdata) = fabrikam(dir.path(), fport, "").await;
    let cport = free_port();
    let extra = "tls_names = [\"mx.wrong.test\"]\nca_file = \"{pki}/ca.crt\"\nmode = \"audit\"";
    let spec = DomainSpec::new("contoso", &["alice@contoso.test"], cport).toml(&outbound(
        "to-fabrikam",
        "fabrikam.test",
        fport,
        "verify-name",
        extra,
    ));
    let config = spec.write(dir.path());
    let contoso = ServeProcess::start(&config, cport);
    let addr: SocketAddr = format!("127.0.0.1:{cport}").parse().unwrap();
    let (replies, _) = send(
        addr,
        "alice@contoso.test",
        &["bob@fabrikam.test"],
        &message("a@contoso.test", "bob@fabrikam.test", "M-audit"),
    )
    .await;
    assert!(replies[0].is_ok());
    let got = wait_for_mailbox_async(&fdata, "bob@fabrikam.test", 1, WAIT).await;
    assert!(String::from_utf8_lossy(&got[0]).contains("body M-audit"));
    drop(contoso);
    let log = std::fs::read_to_string(config.with_extension(format!("{}.log", std::process::id())))
        .unwrap();
    assert!(
        log.contains("audit mode: delivering although the TLS policy is not met"),
        "{log}"
    );
    assert!(
        log.contains("peer certificate does not name mx.wrong.test"),
        "{log}"
    );
    fab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_partner_is_verified_both_ways_and_traced() {
    let dir = tempfile::tempdir().unwrap();
    let fport = free_port();
    let (fab, fdata) = fabrikam(dir.path(), fport, FROM_CONTOSO).await;
    let extra = "tls_names = [\"mx.fabrikam.test\"]\nca_file = \"{pki}/ca.crt\"\n\
        client_certificate = \"{pki}/mx.contoso.test.crt\"\nclient_private_key = \"{pki}/mx.contoso.test.key\"";
    let contoso = contoso_with(
        dir.path(),
        &outbound("to-fabrikam", "fabrikam.test", fport, "verify-name", extra),
    )
    .await;
    submit(&contoso, "bob@fabrikam.test", "M-partner").await;
    let got = wait_for_mailbox_async(&fdata, "bob@fabrikam.test", 1, WAIT).await;
    let text = String::from_utf8_lossy(&got[0]);
    assert!(
        text.starts_with("Received: from mx.contoso.test ([127.0.0.1])\r\n\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)\r\n\
         \t(connector from-contoso: client certificate verified mx.contoso.test via ca.crt)\r\n"),
        "{text}"
    );
    contoso.shutdown().await;
    fab.shutdown().await;
}

fn partner_settings(with_cert: bool) -> ClientSettings {
    let verifier = Arc::new(ConnectorVerifier::new(
        PeerCheck::level(TlsLevel::Opportunistic),
        false,
    ));
    let key = with_cert.then(|| {
        sealpost::tls::load_certified_key(
            &pki().join("mx.contoso.test.crt"),
            &pki().join("mx.contoso.test.key"),
        )
        .unwrap()
    });
    ClientSettings {
        helo_name: "mx.contoso.test".into(),
        timeout: Duration::from_secs(10),
        tls: sealpost::tls::connector_client_config(verifier, TlsMinVersion::Tls12, key.as_ref())
            .unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_connector_demands_tls_then_the_right_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let fport = free_port();
    let (fab, fdata) = fabrikam(dir.path(), fport, FROM_CONTOSO).await;
    let addr: SocketAddr = format!("127.0.0.1:{fport}").parse().unwrap();
    let to = vec!["bob@fabrikam.test".to_string()];
    let data = message("alice@contoso.test", "bob@fabrikam.test", "M-inbound");
    for (mode, with_cert, expected) in [
        (TlsMode::Plaintext, false, "530 5.7.0 Must issue a STARTTLS command first"),
        (TlsMode::Required, false, "550 5.7.1 Client certificate required by connector from-contoso: no client certificate presented"),
        (TlsMode::Required, true, "250 2.0.0 Ok: queued as"),
    ] {
        let settings = partner_settings(with_cert);
        let mut conn = Connection::open(addr, "mx.fabrikam.test", &settings, mode).await.unwrap();
        let policy = TlsPolicy::opportunistic(settings.tls.clone());
        conn.authorize(&policy).unwrap();
        let replies = conn.send(&policy, "alice@contoso.test", &to, &data).await.unwrap();
        let reply = match &replies[0] {
            Ok(r) | Err(r) => r.to_string(),
        };
        assert!(reply.starts_with(expected), "{mode:?} cert={with_cert}: {reply}");
        conn.quit().await;
    }
    // Senders of other domains are not concerned by the connector.
    let (replies, _) = send(addr, "x@other.test", &["bob@fabrikam.test"], &data).await;
    assert!(replies[0].is_ok());
    wait_for_mailbox_async(&fdata, "bob@fabrikam.test", 2, WAIT).await;
    fab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_command_injection_is_never_answered_inside_tls() {
    let dir = tempfile::tempdir().unwrap();
    let fport = free_port();
    let (fab, _) = fabrikam(dir.path(), fport, "").await;
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", fport))
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tcp.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"220 "));
    tcp.write_all(b"EHLO attacker.test\r\n").await.unwrap();
    let mut ehlo = Vec::new();
    while !String::from_utf8_lossy(&ehlo).contains("\r\n250 ") {
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(n > 0);
        ehlo.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&ehlo).contains("STARTTLS"));
    tcp.write_all(b"STARTTLS\r\nRSET\r\n").await.unwrap();
    let n = tcp.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"220 2.0.0 Ready to start TLS\r\n");
    let connector = tokio_rustls::TlsConnector::from(sealpost::tls::opportunistic_client_config());
    let name = rustls_pki_types::ServerName::try_from("mx.fabrikam.test").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    // Nothing may arrive unasked: the RSET sent in clear is discarded, not answered.
    let early = tokio::time::timeout(Duration::from_millis(300), tls.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "server sent {:?} inside TLS before any command",
        early.map(|r| r.map(|n| String::from_utf8_lossy(&buf[..n]).into_owned()))
    );
    tls.write_all(b"EHLO attacker.test\r\n").await.unwrap();
    let n = tls.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"250-mx.fabrikam.test"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    fab.shutdown().await;
}

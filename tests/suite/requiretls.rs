//! REQUIRETLS (RFC 8689) over real sockets: Python's smtplib asks for it after STARTTLS (and is
//! refused before); a message goes on only over a verified hop that offers REQUIRETLS, with
//! REQUIRETLS on its MAIL FROM, and bounces with 5.7.10 (headers only, to the sender) where the
//! next hop would be opportunistic or unverified, pooled connections included.

use crate::support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sealpost::app::Server;
use sealpost::config::TlsMinVersion;
use sealpost::mail::dsn::TransactionDsn;
use sealpost::smtp::client::{ClientError, ClientSettings, Connection, TlsMode};
use sealpost::tls::policy::{ConnectorVerifier, PeerCheck, PolicyMode, TlsLevel, TlsPolicy};
use support::domains::{
    free_port, load, message, pki, python, python_send, submit, wait_for_mailbox_async, DomainSpec,
};

const WAIT: Duration = Duration::from_secs(20);

/// An outbound connector from contoso to fabrikam's port, checking the fixture certificate.
fn to_fabrikam(port: u16, tls_name: &str, mode: &str) -> String {
    format!(
        "[[connector.outbound]]\nname = \"to-fabrikam\"\nrecipient_domains = [\"fabrikam.test\"]\n\
         smart_hosts = [\"127.0.0.1:{port}\"]\ntls = \"verify-name\"\ntls_names = [\"{tls_name}\"]\n\
         ca_file = \"{{pki}}/ca.crt\"\nmode = \"{mode}\"\n"
    )
}

async fn start(spec: DomainSpec, dir: &Path) -> (Server, PathBuf) {
    let config = load(&spec.write(dir));
    let data = config.data_dir.clone();
    (sealpost::app::start(config).await.unwrap(), data)
}

/// fabrikam (bob) on its own port, and contoso (alice) routing fabrikam.test as `contoso_toml`
/// says (a connector), or by a plain static route when it is empty.
async fn domains(dir: &Path, contoso_toml: impl Fn(u16) -> String) -> [(Server, PathBuf); 2] {
    let fport = free_port();
    let fabrikam = start(
        DomainSpec::new("fabrikam", &["bob@fabrikam.test"], fport),
        dir,
    )
    .await;
    let toml = contoso_toml(fport);
    let mut spec = DomainSpec::new("contoso", &["alice@contoso.test"], free_port());
    spec = match toml.is_empty() {
        true => spec.route("fabrikam.test", fport),
        false => spec.toml(&toml),
    };
    [start(spec, dir).await, fabrikam]
}

/// Sends `marker`'s message from alice to bob with Python's smtplib, after STARTTLS and with
/// REQUIRETLS on MAIL FROM; before STARTTLS it asks the same and prints what it is told.
async fn python_requiretls(server: &Server, marker: &str) -> String {
    let port = server.local_addrs()[0].port();
    let msg =
        String::from_utf8(message("alice@contoso.test", "bob@fabrikam.test", marker)).unwrap();
    let script = format!(
        r#"
import smtplib, ssl
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP("127.0.0.1", {port}, local_hostname="client.test", timeout=10)
s.ehlo()
print("clear ehlo offers requiretls:", s.has_extn("requiretls"))
code, text = s.mail("alice@contoso.test", ["REQUIRETLS"])
print("clear mail:", code, text.decode())
s.rset()
s.starttls(context=ctx)
s.ehlo()
print("tls ehlo offers requiretls:", s.has_extn("requiretls"))
refused = s.sendmail("alice@contoso.test", ["bob@fabrikam.test"], {msg:?}.encode(), mail_options=["REQUIRETLS"])
print("refused:", refused)
s.quit()
"#
    );
    tokio::task::spawn_blocking(move || python(&script))
        .await
        .unwrap()
}

fn assert_python_saw_requiretls_only_over_tls(out: &str) {
    for line in [
        "clear ehlo offers requiretls: False",
        "clear mail: 530 5.7.10 REQUIRETLS needs a TLS session: STARTTLS first",
        "tls ehlo offers requiretls: True",
        "refused: {}",
    ] {
        assert!(out.lines().any(|l| l == line), "{line:?} not in:\n{out}");
    }
}

fn trace(data: &Path) -> String {
    std::fs::read_to_string(data.join("trace.jsonl")).unwrap_or_default()
}

/// The one notice alice got, once it is there.
async fn bounce_to_alice(contoso_data: &Path) -> String {
    let got = wait_for_mailbox_async(contoso_data, "alice@contoso.test", 1, WAIT).await;
    assert_eq!(got.len(), 1);
    String::from_utf8_lossy(&got[0]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requiretls_goes_over_a_verified_hop_that_offers_it_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let [(contoso, cdata), (fabrikam, fdata)] = domains(dir.path(), |port| {
        to_fabrikam(port, "mx.fabrikam.test", "enforce")
    })
    .await;
    let out = python_requiretls(&contoso, "M-verified").await;
    assert_python_saw_requiretls_only_over_tls(&out);
    let got = wait_for_mailbox_async(&fdata, "bob@fabrikam.test", 1, WAIT).await;
    let text = String::from_utf8_lossy(&got[0]);
    assert!(text.contains("body M-verified"), "{text}");
    // fabrikam's Received header (the onward MAIL FROM carried REQUIRETLS) and contoso's.
    assert_eq!(text.matches(", REQUIRETLS)\r\n").count(), 2, "{text}");
    assert!(
        text.starts_with("Received: from mx.contoso.test ([127.0.0.1])\r\n\t(using TLSv1.3"),
        "{text}"
    );
    let sent = trace(&cdata);
    let delivery = sent
        .lines()
        .find(|l| l.contains(r#""result":"delivered""#))
        .unwrap_or_else(|| panic!("no delivery in contoso's trace:\n{sent}"));
    assert!(delivery.contains(r#""requiretls":true"#), "{delivery}");
    assert!(
        delivery.contains("verified mx.fabrikam.test via ca.crt"),
        "{delivery}"
    );
    assert!(
        trace(&fdata).contains(r#""requiretls":true"#),
        "fabrikam recorded the REQUIRETLS it was given"
    );
    contoso.shutdown().await;
    fabrikam.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requiretls_bounces_with_5_7_10_when_the_only_hop_is_opportunistic() {
    let dir = tempfile::tempdir().unwrap();
    let [(contoso, cdata), (fabrikam, fdata)] = domains(dir.path(), |_| String::new()).await;
    let out = python_requiretls(&contoso, "M-opportunistic").await;
    assert_python_saw_requiretls_only_over_tls(&out);
    let bounce = bounce_to_alice(&cdata).await;
    assert!(bounce.contains("Status: 5.7.10\r\n"), "{bounce}");
    assert!(
        bounce.contains(
            "Diagnostic-Code: smtp; 550 5.7.10 REQUIRETLS: the TLS policy for static route"
        ),
        "{bounce}"
    );
    assert!(
        bounce.contains("(opportunistic) does not verify"),
        "{bounce}"
    );
    // RFC 8689 §5: the header section comes back, the body does not.
    assert!(
        bounce.contains("Content-Type: text/rfc822-headers"),
        "{bounce}"
    );
    assert!(bounce.contains("Subject: test M-opportunistic"), "{bounce}");
    assert!(!bounce.contains("body M-opportunistic"), "{bounce}");
    let sent = trace(&cdata);
    assert!(sent.contains(r#""result":"bounced""#), "{sent}");
    assert!(sent.contains(r#""kind":"failure""#), "{sent}");
    assert!(
        !trace(&fdata).contains("M-opportunistic") && !trace(&fdata).contains(r#""received""#),
        "nothing reached fabrikam"
    );
    contoso.shutdown().await;
    fabrikam.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_whose_check_was_overlooked_never_carries_requiretls() {
    let dir = tempfile::tempdir().unwrap();
    // Audit mode: the name check fails, is logged, and plain mail is delivered anyway.
    let [(contoso, cdata), (fabrikam, fdata)] = domains(dir.path(), |port| {
        to_fabrikam(port, "mx.wrong.test", "audit")
    })
    .await;
    submit(&contoso, "bob@fabrikam.test", "M-plain").await;
    wait_for_mailbox_async(&fdata, "bob@fabrikam.test", 1, WAIT).await;
    // The connection that carried it is kept; the REQUIRETLS message may not use it.
    python_requiretls(&contoso, "M-audit").await;
    let bounce = bounce_to_alice(&cdata).await;
    assert!(bounce.contains("Status: 5.7.10\r\n"), "{bounce}");
    assert!(
        bounce.contains("REQUIRETLS: TLS to 127.0.0.1 [127.0.0.1:"),
        "{bounce}"
    );
    assert!(
        bounce.contains("is not verified (audit only, would have deferred:"),
        "{bounce}"
    );
    let delivered = wait_for_mailbox_async(&fdata, "bob@fabrikam.test", 1, WAIT).await;
    assert_eq!(delivered.len(), 1, "only the plain message arrived");
    assert!(!trace(&fdata).contains(r#""requiretls":true"#));
    contoso.shutdown().await;
    fabrikam.shutdown().await;
}

/// fabrikam's certificate checked against the fixture CA, and client settings enforcing it.
fn verify_fabrikam() -> (PeerCheck, ClientSettings) {
    let check = PeerCheck {
        names: vec!["mx.fabrikam.test".into()],
        anchors: Some(sealpost::tls::load_trust_anchors(&pki().join("ca.crt")).unwrap()),
        ..PeerCheck::level(TlsLevel::VerifyName)
    };
    let verifier = Arc::new(ConnectorVerifier::new(check.clone(), true));
    let settings = ClientSettings {
        helo_name: "mx.contoso.test".into(),
        timeout: Duration::from_secs(10),
        tls: sealpost::tls::connector_client_config(verifier, TlsMinVersion::Tls12, None).unwrap(),
    };
    (check, settings)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_checks_its_permit_for_every_requiretls_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let fport = free_port();
    let (fabrikam, fdata) = start(
        DomainSpec::new("fabrikam", &["bob@fabrikam.test"], fport),
        dir.path(),
    )
    .await;
    let addr: SocketAddr = format!("127.0.0.1:{fport}").parse().unwrap();
    let (check, settings) = verify_fabrikam();
    let to = vec!["bob@fabrikam.test".to_string()];
    let data = |marker| message("alice@contoso.test", "bob@fabrikam.test", marker);
    let dsn = TransactionDsn::default();
    let mut conn = Connection::open(addr, "mx.fabrikam.test", &settings, TlsMode::Required)
        .await
        .unwrap();
    // Authorized under a policy that asks for TLS but verifies nothing: no REQUIRETLS over it.
    let unverified = TlsPolicy::new(
        None,
        PeerCheck::level(TlsLevel::Required),
        PolicyMode::Enforce,
        settings.tls.clone(),
    );
    assert!(!conn.authorize(&unverified).unwrap().verified());
    let refused = conn
        .send_dsn(
            &unverified,
            "alice@contoso.test",
            &to,
            &dsn,
            true,
            &data("M-no"),
        )
        .await
        .unwrap_err();
    let ClientError::RequireTls(reply) = &refused else {
        panic!("{refused:?}");
    };
    assert!(
        reply
            .to_string()
            .starts_with("550 5.7.10 REQUIRETLS: TLS to mx.fabrikam.test [127.0.0.1:"),
        "{reply}"
    );
    assert!(refused.is_permanent());
    // Nothing was sent: the same connection, authorized again under a verifying policy, carries
    // the message with REQUIRETLS.
    let verified = TlsPolicy::new(None, check, PolicyMode::Enforce, settings.tls.clone());
    let permit = conn.authorize(&verified).unwrap();
    assert!(permit.verified(), "{}", permit.detail());
    let replies = conn
        .send_dsn(
            &verified,
            "alice@contoso.test",
            &to,
            &dsn,
            true,
            &data("M-yes"),
        )
        .await
        .unwrap();
    assert!(replies[0].is_ok(), "{replies:?}");
    conn.quit().await;
    let got = wait_for_mailbox_async(&fdata, "bob@fabrikam.test", 1, WAIT).await;
    let text = String::from_utf8_lossy(&got[0]);
    assert!(
        text.contains("body M-yes") && text.contains(", REQUIRETLS)\r\n"),
        "{text}"
    );
    let seen = trace(&fdata);
    assert!(!seen.contains("M-no"), "{seen}");
    fabrikam.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_required_no_is_recorded_unless_requiretls_was_given() {
    let dir = tempfile::tempdir().unwrap();
    let [(contoso, cdata), (fabrikam, fdata)] = domains(dir.path(), |_| String::new()).await;
    let relaxed = python_send(
        &contoso,
        "bob@fabrikam.test",
        "M-relaxed",
        "TLS-Required: No\r\n",
        &[],
    )
    .await;
    assert_eq!(relaxed.trim(), "refused: {}");
    wait_for_mailbox_async(&fdata, "bob@fabrikam.test", 1, WAIT).await;
    let both = python_send(
        &contoso,
        "bob@fabrikam.test",
        "M-both",
        "TLS-Required: no\r\n",
        &["REQUIRETLS"],
    )
    .await;
    assert_eq!(both.trim(), "refused: {}");
    let bounce = bounce_to_alice(&cdata).await;
    assert!(
        bounce.contains("Subject: test M-both"),
        "REQUIRETLS wins: {bounce}"
    );
    let log = trace(&cdata);
    let received = |marker: &str| {
        let hash = sealpost::telemetry::trace::message_id_hash(&format!("{marker}@client.test"));
        log.lines()
            .find(|l| l.contains(r#""received""#) && l.contains(&hash))
            .unwrap_or_else(|| panic!("no received record for {marker}:\n{log}"))
            .to_string()
    };
    let first = received("M-relaxed");
    assert!(first.contains(r#""tls_required_no":true"#), "{first}");
    assert!(!first.contains("requiretls"), "{first}");
    let second = received("M-both");
    assert!(second.contains(r#""requiretls":true"#), "{second}");
    assert!(!second.contains("tls_required_no"), "{second}");
    contoso.shutdown().await;
    fabrikam.shutdown().await;
}

/// A peer with fabrikam's certificate that offers STARTTLS but not REQUIRETLS, and records every
/// command line it hears.
fn peer_without_requiretls() -> (u16, Arc<Mutex<Vec<String>>>) {
    let key = sealpost::tls::load_certified_key(
        &pki().join("mx.fabrikam.test.crt"),
        &pki().join("mx.fabrikam.test.key"),
    )
    .unwrap();
    let config = sealpost::tls::server_config(&key, TlsMinVersion::Tls12, false, true).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let (config, log) = (config.clone(), log.clone());
            std::thread::spawn(move || serve_without_requiretls(tcp, config, log));
        }
    });
    (port, seen)
}

fn serve_without_requiretls(
    mut tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
    log: Arc<Mutex<Vec<String>>>,
) {
    let _ = tcp.write_all(b"220 peer.test ESMTP\r\n");
    let mut clear = BufReader::new(tcp.try_clone().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        if clear.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let cmd = line.trim_end().to_string();
        log.lock().unwrap().push(cmd.clone());
        let reply: &[u8] = match cmd.as_str() {
            c if c.starts_with("EHLO") => b"250-peer.test\r\n250 STARTTLS\r\n",
            "STARTTLS" => b"220 2.0.0 go ahead\r\n",
            _ => b"503 5.5.1 STARTTLS first\r\n",
        };
        let _ = tcp.write_all(reply);
        if cmd == "STARTTLS" {
            break;
        }
    }
    let tls = rustls::StreamOwned::new(rustls::ServerConnection::new(config).unwrap(), tcp);
    let mut tls = BufReader::new(tls);
    let mut in_data = false;
    loop {
        line.clear();
        if tls.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let cmd = line.trim_end().to_string();
        if !in_data {
            log.lock().unwrap().push(cmd.clone());
        }
        let reply: &[u8] = match (in_data, cmd.as_str()) {
            (true, ".") => {
                in_data = false;
                b"250 2.0.0 Ok\r\n"
            }
            (true, _) => b"",
            (_, c) if c.starts_with("EHLO") => {
                b"250-peer.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
            }
            (_, "DATA") => {
                in_data = true;
                b"354 go on\r\n"
            }
            (_, "QUIT") => b"221 2.0.0 bye\r\n",
            _ => b"250 2.0.0 Ok\r\n",
        };
        let _ = tls.get_mut().write_all(reply);
        if cmd == "QUIT" {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_peer_without_requiretls_gets_no_mail_from_and_the_sender_5_7_30() {
    let dir = tempfile::tempdir().unwrap();
    let (port, seen) = peer_without_requiretls();
    let spec = DomainSpec::new("contoso", &["alice@contoso.test"], free_port()).toml(&to_fabrikam(
        port,
        "mx.fabrikam.test",
        "enforce",
    ));
    let (contoso, cdata) = start(spec, dir.path()).await;
    let sent = python_send(
        &contoso,
        "bob@fabrikam.test",
        "M-unoffered",
        "",
        &["REQUIRETLS"],
    )
    .await;
    assert_eq!(sent.trim(), "refused: {}");
    let bounce = bounce_to_alice(&cdata).await;
    assert!(bounce.contains("Status: 5.7.30\r\n"), "{bounce}");
    assert!(
        bounce.contains("550 5.7.30 REQUIRETLS support required: 127.0.0.1 [127.0.0.1:"),
        "{bounce}"
    );
    assert!(bounce.contains("] does not offer REQUIRETLS"), "{bounce}");
    let heard = seen.lock().unwrap().clone();
    assert_eq!(
        heard.iter().filter(|l| l.starts_with("EHLO")).count(),
        2,
        "EHLO before and after STARTTLS: {heard:?}"
    );
    assert!(heard.iter().any(|l| l == "STARTTLS"), "{heard:?}");
    assert!(
        !heard
            .iter()
            .any(|l| l.starts_with("MAIL") || l.starts_with("RCPT")),
        "{heard:?}"
    );
    contoso.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_without_requiretls_passes_the_message_to_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let (peer, seen) = peer_without_requiretls();
    let [(contoso, _), (fabrikam, fdata)] = domains(dir.path(), |port| {
        to_fabrikam(port, "mx.fabrikam.test", "enforce").replace(
            "smart_hosts = [",
            &format!("smart_hosts = [\"127.0.0.1:{peer}\", "),
        )
    })
    .await;
    let sent = python_send(
        &contoso,
        "bob@fabrikam.test",
        "M-second",
        "",
        &["REQUIRETLS"],
    )
    .await;
    assert_eq!(sent.trim(), "refused: {}");
    let got = wait_for_mailbox_async(&fdata, "bob@fabrikam.test", 1, WAIT).await;
    assert!(String::from_utf8_lossy(&got[0]).contains("body M-second"));
    let heard = seen.lock().unwrap().clone();
    assert!(
        heard.iter().any(|l| l == "STARTTLS"),
        "tried first: {heard:?}"
    );
    assert!(!heard.iter().any(|l| l.starts_with("MAIL")), "{heard:?}");
    contoso.shutdown().await;
    fabrikam.shutdown().await;
}

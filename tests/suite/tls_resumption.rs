//! TLS session resumption over real sockets, both ways: openssl's s_client resumes a session
//! with our SMTP server (stateless tickets with `[tls] session_tickets`, the session cache
//! without), and our delivery client resumes with a peer across deliveries, but only within
//! one TLS policy: a session from an opportunistic delivery is never resumed for a delivery that
//! must verify the peer.

use crate::support;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::HandshakeKind;
use sealpost::config::TlsMinVersion;
use support::domains::{free_port, load, message, pki, send, DomainSpec};

const WAIT: Duration = Duration::from_secs(20);

/// One `openssl s_client -starttls smtp` session to `port` that says QUIT; `-sess_out` or
/// `-sess_in` with `session`. Returns its output.
fn s_client(port: u16, version: &str, session: &Path, write: bool) -> String {
    let port = port.to_string();
    let target = format!("127.0.0.1:{port}");
    let session = session.to_str().unwrap();
    let mut args = vec![
        "s_client",
        "-connect",
        &target,
        "-starttls",
        "smtp",
        "-crlf",
        version,
    ];
    args.extend(match write {
        true => ["-sess_out", session],
        false => ["-sess_in", session],
    });
    let mut child = Command::new("openssl")
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl");
    // Waits for the server's replies (and with them the session tickets) before QUIT.
    std::thread::sleep(Duration::from_millis(500));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"EHLO client.test\nQUIT\n")
        .unwrap();
    let out = child.wait_with_output().expect("openssl output");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Two s_client sessions with `version`, the second resuming the first's session; returns both
/// outputs.
fn connect_twice(port: u16, version: &str, dir: &Path) -> (String, String) {
    let session = dir.join(format!("session{version}.pem"));
    let first = s_client(port, version, &session, true);
    assert!(first.contains("New, TLSv1."), "{first}");
    assert!(session.exists(), "s_client saved no session:\n{first}");
    (first, s_client(port, version, &session, false))
}

async fn contoso(dir: &Path, toml: &str) -> sealpost::app::Server {
    let spec = DomainSpec::new("contoso", &["alice@contoso.test"], free_port()).toml(toml);
    sealpost::app::start(load(&spec.write(dir))).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_resumes_sessions_with_the_server_by_ticket() {
    let dir = tempfile::tempdir().unwrap();
    let server = contoso(dir.path(), "").await;
    let port = server.local_addrs()[0].port();
    let d = dir.path().to_path_buf();
    let (first12, second12, first13, second13) = tokio::task::spawn_blocking(move || {
        let (a, b) = connect_twice(port, "-tls1_2", &d);
        let (c, e) = connect_twice(port, "-tls1_3", &d);
        (a, b, c, e)
    })
    .await
    .unwrap();
    // Stateless tickets, valid 12 hours, in TLS 1.2 and 1.3 alike.
    assert!(
        first12.contains("TLS session ticket lifetime hint: 43200"),
        "{first12}"
    );
    assert!(second12.contains("Reused, TLSv1.2"), "{second12}");
    assert!(first13.contains("New, TLSv1.3"), "{first13}");
    assert!(second13.contains("Reused, TLSv1.3"), "{second13}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tickets_sessions_resume_from_the_server_cache() {
    let dir = tempfile::tempdir().unwrap();
    let spec = DomainSpec::new("contoso", &["alice@contoso.test"], free_port());
    let path = spec.write(dir.path());
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replacen("[tls]\n", "[tls]\nsession_tickets = false\n", 1);
    std::fs::write(&path, text).unwrap();
    let server = sealpost::app::start(load(&path)).await.unwrap();
    let port = server.local_addrs()[0].port();
    let d = dir.path().to_path_buf();
    let (first12, second12, second13) = tokio::task::spawn_blocking(move || {
        let (a, b) = connect_twice(port, "-tls1_2", &d);
        let (_, c) = connect_twice(port, "-tls1_3", &d);
        (a, b, c)
    })
    .await
    .unwrap();
    // No TLS 1.2 ticket: the session id is the server's to look up.
    assert!(
        !first12.contains("TLS session ticket lifetime hint"),
        "{first12}"
    );
    assert!(second12.contains("Reused, TLSv1.2"), "{second12}");
    assert!(second13.contains("Reused, TLSv1.3"), "{second13}");
    server.shutdown().await;
}

#[test]
fn session_tickets_must_be_a_boolean() {
    let dir = tempfile::tempdir().unwrap();
    let spec = DomainSpec::new("contoso", &["alice@contoso.test"], free_port());
    let path = spec.write(dir.path());
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replacen("[tls]\n", "[tls]\nsession_tickets = \"yes\"\n", 1);
    std::fs::write(&path, text).unwrap();
    let err = match sealpost::config::Config::load(&path, None) {
        Ok(_) => panic!("session_tickets = \"yes\" was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("session_tickets"), "{err}");
}

/// What the peer saw of each connection: how its handshake went and the recipients it carried.
type Handshakes = Arc<Mutex<Vec<(HandshakeKind, Vec<String>)>>>;

/// An SMTP peer with fabrikam's certificate (rustls, with session resumption as configured by
/// `server_config`) that accepts every message and records each TLS connection.
fn resuming_peer() -> (u16, Handshakes) {
    let key = sealpost::tls::load_certified_key(
        &pki().join("mx.fabrikam.test.crt"),
        &pki().join("mx.fabrikam.test.key"),
    )
    .unwrap();
    let config = sealpost::tls::server_config(&key, TlsMinVersion::Tls12, false, true).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Handshakes = Arc::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let (config, log) = (config.clone(), log.clone());
            std::thread::spawn(move || serve(tcp, config, log));
        }
    });
    (port, seen)
}

fn serve(mut tcp: TcpStream, config: Arc<rustls::ServerConfig>, log: Handshakes) {
    let _ = tcp.write_all(b"220 peer.test ESMTP\r\n");
    let mut clear = BufReader::new(tcp.try_clone().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        if clear.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let reply: &[u8] = match line.trim_end() {
            c if c.starts_with("EHLO") => b"250-peer.test\r\n250 STARTTLS\r\n",
            "STARTTLS" => b"220 2.0.0 go ahead\r\n",
            _ => b"503 5.5.1 STARTTLS first\r\n",
        };
        let _ = tcp.write_all(reply);
        if line.trim_end() == "STARTTLS" {
            break;
        }
    }
    let conn = rustls::ServerConnection::new(config).unwrap();
    let mut tls = BufReader::new(rustls::StreamOwned::new(conn, tcp));
    let (mut in_data, mut rcpts) = (false, Vec::new());
    loop {
        line.clear();
        if tls.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        let cmd = line.trim_end().to_string();
        let reply: &[u8] = match (in_data, cmd.as_str()) {
            (true, ".") => {
                in_data = false;
                b"250 2.0.0 Ok\r\n"
            }
            (true, _) => b"",
            (_, c) if c.starts_with("EHLO") => b"250-peer.test\r\n250 8BITMIME\r\n",
            (_, c) if c.starts_with("RCPT TO:") => {
                rcpts.push(c["RCPT TO:".len()..].to_string());
                b"250 2.1.5 Ok\r\n"
            }
            (_, "DATA") => {
                in_data = true;
                b"354 go on\r\n"
            }
            (_, "QUIT") => {
                let _ = tls.get_mut().write_all(b"221 bye\r\n");
                break;
            }
            _ => b"250 2.0.0 Ok\r\n",
        };
        let _ = tls.get_mut().write_all(reply);
    }
    if let Some(kind) = tls.get_ref().conn.handshake_kind() {
        log.lock().unwrap().push((kind, rcpts));
    }
}

/// Sends one message to `to` through `server` and waits until the peer has recorded the
/// connection that carried it; returns how that connection's handshake went.
async fn relay(server: &sealpost::app::Server, seen: &Handshakes, to: &str) -> HandshakeKind {
    let data = message("alice@contoso.test", to, to);
    let (replies, _) = send(server.local_addrs()[0], "alice@contoso.test", &[to], &data).await;
    assert_eq!(replies[0].as_ref().map(|r| r.code), Ok(250), "{replies:?}");
    let deadline = Instant::now() + WAIT;
    loop {
        let found = seen
            .lock()
            .unwrap()
            .iter()
            .find(|(_, rcpts)| rcpts.iter().any(|r| r.contains(to)))
            .map(|(kind, _)| *kind);
        if let Some(kind) = found {
            return kind;
        }
        assert!(Instant::now() < deadline, "{to} never reached the peer");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_resume_sessions_but_never_across_tls_policies() {
    let dir = tempfile::tempdir().unwrap();
    let (peer, seen) = resuming_peer();
    // One peer address for both routes (the same server name, "127.0.0.1"): opportunistic for
    // plain.test, verified (verify-name against the fixture CA) for verified.test. No pooled
    // connections: every message needs a handshake of its own.
    let connector = format!(
        "[[connector.outbound]]\nname = \"to-peer\"\nrecipient_domains = [\"verified.test\"]\n\
         smart_hosts = [\"127.0.0.1:{peer}\"]\ntls = \"verify-name\"\n\
         tls_names = [\"mx.fabrikam.test\"]\nca_file = \"{{pki}}/ca.crt\"\n"
    );
    let spec = DomainSpec::new("contoso", &["alice@contoso.test"], free_port())
        .route("plain.test", peer)
        .toml("connection_reuse_time = \"0s\"")
        .toml(&connector);
    let server = sealpost::app::start(load(&spec.write(dir.path())))
        .await
        .unwrap();

    assert_eq!(
        relay(&server, &seen, "a@plain.test").await,
        HandshakeKind::Full
    );
    // The opportunistic policy's session is resumed by its next delivery...
    assert_eq!(
        relay(&server, &seen, "b@plain.test").await,
        HandshakeKind::Resumed
    );
    // ...but not by a delivery that must verify the peer: it does a full handshake, whose
    // certificate is checked, although a session with the same server name is cached.
    assert_eq!(
        relay(&server, &seen, "c@verified.test").await,
        HandshakeKind::Full
    );
    // The verified session in turn is resumed under the verified policy.
    assert_eq!(
        relay(&server, &seen, "d@verified.test").await,
        HandshakeKind::Resumed
    );
    server.shutdown().await;
}

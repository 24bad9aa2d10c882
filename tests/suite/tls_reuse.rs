//! Connection reuse never weakens a TLS policy, over real sockets: a message that must travel
//! encrypted does not ride a kept plaintext connection, deliveries under different policies to
//! one peer address do not share connections, and a connection refuses a transaction under a
//! policy it was not authorized for.

use crate::support;

use std::path::Path;
use std::time::{Duration, Instant};

use sealpost::app::Server;
use sealpost::smtp::client::{ClientError, ClientSettings, Connection, TlsMode};
use sealpost::tls::policy::{PeerCheck, PolicyMode, TlsLevel, TlsPolicy};
use support::domains::{
    free_port, load, message, send, wait_for_mailbox_async, wait_for_reason, DomainSpec,
};
use support::peers::{plaintext_peer, starttls_stripping_proxy, Seen};

const WAIT: Duration = Duration::from_secs(20);

/// Keeps idle connections long enough that the second message of a test always finds the first
/// one's connection in the pool (this line lands in the `[delivery]` table of the spec).
const LONG_REUSE: &str = "connection_reuse_time = \"60s\"";

fn rules_dir(dir: &Path, name: &str, text: &str) -> String {
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(rules.join(name), text).unwrap();
    format!("[rules]\ndir = \"{}\"\n", rules.display())
}

async fn submit(server: &Server, to: &str, data: &[u8]) {
    let (replies, _) = send(server.local_addrs()[0], "alice@contoso.test", &[to], data).await;
    assert_eq!(replies[0].as_ref().map(|r| r.code), Ok(250), "{replies:?}");
}

async fn wait_seen(seen: &Seen, needle: &str) {
    let deadline = Instant::now() + WAIT;
    while !seen.lock().unwrap().iter().any(|l| l.contains(needle)) {
        assert!(
            Instant::now() < deadline,
            "the peer never received {needle:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the delivery that carried it finish and put its connection back in the pool.
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_require_tls_message_never_rides_a_kept_plaintext_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (peer, seen) = plaintext_peer();
    let rule = "name = \"tls-subject\"\npriority = 1\n[conditions]\nsubject_contains = \"[tls]\"\n\
        [[actions]]\ntype = \"require_tls\"\n";
    let spec = DomainSpec::new("contoso", &["alice@contoso.test"], free_port())
        .route("plain.test", peer)
        .toml(LONG_REUSE)
        .toml(&rules_dir(dir.path(), "tls.toml", rule));
    let server = sealpost::app::start(load(&spec.write(dir.path())))
        .await
        .unwrap();

    // An ordinary message leaves in plaintext (opportunistic) and its connection is kept.
    submit(
        &server,
        "x@plain.test",
        &message("alice@contoso.test", "x@plain.test", "M-plain"),
    )
    .await;
    wait_seen(&seen, "body M-plain").await;

    // The next one must travel over TLS: it gets a connection of its own, which finds no
    // STARTTLS, and waits in the queue. Not one of its bytes reaches the peer.
    let protected = b"From: <alice@contoso.test>\r\nTo: <x@plain.test>\r\nSubject: [tls] payroll\r\n\r\nbody M-protected\r\n";
    submit(&server, "x@plain.test", protected).await;
    let reason = wait_for_reason(&server, "peer did not offer STARTTLS").await;
    assert!(
        reason.starts_with("451 4.7.4 TLS required: peer did not offer STARTTLS"),
        "{reason}"
    );
    let heard = seen.lock().unwrap().clone();
    assert!(
        !heard
            .iter()
            .any(|l| l.contains("M-protected") || l.contains("payroll")),
        "{heard:?}"
    );
    assert_eq!(
        heard.iter().filter(|l| l.starts_with("MAIL FROM")).count(),
        1,
        "only the ordinary message had a transaction: {heard:?}"
    );
    let queued = server.spool().list().unwrap();
    assert_eq!(queued.len(), 1, "the protected message waits");
    assert!(queued[0].envelope.require_tls);

    // The kept plaintext connection still serves ordinary mail.
    submit(
        &server,
        "x@plain.test",
        &message("alice@contoso.test", "x@plain.test", "M-after"),
    )
    .await;
    wait_seen(&seen, "body M-after").await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opportunistic_and_verify_name_deliveries_to_one_address_do_not_share_connections() {
    let dir = tempfile::tempdir().unwrap();
    let fport = free_port();
    let fab_spec = DomainSpec::new("fabrikam", &["bob@fabrikam.test", "x@other.test"], fport);
    let fab_spec = DomainSpec {
        extra_domains: vec!["other.test"],
        ..fab_spec
    };
    let fab_config = load(&fab_spec.write(dir.path()));
    let fab_data = fab_config.data_dir.clone();
    let fab = sealpost::app::start(fab_config).await.unwrap();
    // One address for both routes, behind a man in the middle who strips STARTTLS.
    let (proxy, seen) = starttls_stripping_proxy(fport);
    let connector = format!(
        "[[connector.outbound]]\nname = \"to-fabrikam\"\nrecipient_domains = [\"fabrikam.test\"]\n\
         smart_hosts = [\"127.0.0.1:{proxy}\"]\ntls = \"verify-name\"\ntls_names = [\"mx.fabrikam.test\"]\n\
         ca_file = \"{{pki}}/ca.crt\"\n"
    );
    let spec = DomainSpec::new("contoso", &["alice@contoso.test"], free_port())
        .route("other.test", proxy)
        .toml(LONG_REUSE)
        .toml(&connector);
    let contoso = sealpost::app::start(load(&spec.write(dir.path())))
        .await
        .unwrap();

    // Opportunistic: the stripped connection carries it in clear, as Postfix `may` would.
    submit(
        &contoso,
        "x@other.test",
        &message("alice@contoso.test", "x@other.test", "M-open"),
    )
    .await;
    wait_for_mailbox_async(&fab_data, "x@other.test", 1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // verify-name to the same address: the kept plaintext connection is not offered to it.
    submit(
        &contoso,
        "bob@fabrikam.test",
        &message("alice@contoso.test", "bob@fabrikam.test", "M-verified"),
    )
    .await;
    let reason = wait_for_reason(&contoso, "peer did not offer STARTTLS").await;
    assert!(
        reason.starts_with(
            "451 4.7.4 TLS required by connector to-fabrikam: peer did not offer STARTTLS"
        ),
        "{reason}"
    );
    let sent = seen.lock().unwrap().concat();
    assert!(
        !sent.contains("M-verified") && !sent.contains("bob@fabrikam.test"),
        "{sent}"
    );
    assert_eq!(sent.matches("MAIL FROM").count(), 1, "{sent}");
    contoso.shutdown().await;
    fab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_refuses_a_transaction_under_a_policy_it_was_not_authorized_for() {
    let (peer, seen) = plaintext_peer();
    let tls = sealpost::tls::opportunistic_client_config();
    let settings = ClientSettings {
        helo_name: "mx.contoso.test".into(),
        timeout: Duration::from_secs(5),
        tls: tls.clone(),
    };
    let addr = ([127, 0, 0, 1], peer).into();
    let mut conn = Connection::open(addr, "127.0.0.1", &settings, TlsMode::Opportunistic)
        .await
        .unwrap();
    let to = vec!["x@plain.test".to_string()];
    let data = b"Subject: t\r\n\r\nbody M-unauthorized\r\n";
    let opportunistic = TlsPolicy::opportunistic(tls.clone());

    // Not authorized at all.
    let e = conn
        .send(&opportunistic, "a@contoso.test", &to, data)
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::NotPermitted(_)), "{e}");

    conn.authorize(&opportunistic).unwrap();
    // Authorized under another policy: a required one, and an opportunistic one built elsewhere.
    let required = TlsPolicy::new(
        None,
        PeerCheck::level(TlsLevel::Required),
        PolicyMode::Enforce,
        tls.clone(),
    );
    for other in [&required, &TlsPolicy::opportunistic(tls.clone())] {
        let e = conn
            .send(other, "a@contoso.test", &to, data)
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::NotPermitted(_)), "{e}");
    }
    assert!(
        !seen
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("MAIL") || l.contains("M-unauthorized")),
        "nothing was sent: {:?}",
        seen.lock().unwrap()
    );
    // Under its own policy it sends.
    let replies = conn
        .send(&opportunistic, "a@contoso.test", &to, data)
        .await
        .unwrap();
    assert!(replies[0].is_ok(), "{replies:?}");
    assert!(seen
        .lock()
        .unwrap()
        .iter()
        .any(|l| l == "body M-unauthorized"));
    conn.quit().await;
}

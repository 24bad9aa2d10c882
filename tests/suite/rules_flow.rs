//! Transport rules in the mail flow over real sockets: header changes per recipient group,
//! rejection at DATA, require_tls, and reloading on SIGHUP without dropping an open session (which
//! keeps the rules it started with).

use crate::support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use support::domains::{
    free_port, load, message, send, start_pair, wait_for_mailbox_async, DomainSpec, Pair,
    ServeProcess,
};
use support::peers::plaintext_peer;

const WAIT: Duration = Duration::from_secs(20);

const TAG_EXTERNAL: &str =
    "name = \"tag-external\"\npriority = 10\n[conditions]\nrecipient_scope = \"external\"\n\
    [[actions]]\ntype = \"add_header\"\nname = \"X-Sealpost-External\"\nvalue = \"yes\"\n\
    [[actions]]\ntype = \"prepend_subject\"\ntext = \"[EXT]\"\n";

const REJECT_SECRET: &str = "name = \"no-secrets\"\npriority = 5\n[conditions]\nsubject_contains = \"top secret\"\n\
    [[actions]]\ntype = \"reject\"\ncode = 550\nenhanced = \"5.7.1\"\ntext = \"Message refused by policy\"\n";

fn rules_dir(dir: &Path, rules: &[(&str, &str)]) -> String {
    let rules_dir = dir.join("rules");
    std::fs::create_dir_all(&rules_dir).unwrap();
    for (name, text) in rules {
        std::fs::write(rules_dir.join(name), text).unwrap();
    }
    format!("[rules]\ndir = \"{}\"\n", rules_dir.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_change_external_copies_only_and_reject_at_data() {
    let dir = tempfile::tempdir().unwrap();
    let rules = rules_dir(
        dir.path(),
        &[
            ("10-tag.toml", TAG_EXTERNAL),
            ("05-reject.toml", REJECT_SECRET),
        ],
    );
    let Pair {
        contoso: c_server,
        fabrikam: f_server,
        contoso_data: c_data,
        fabrikam_data: f_data,
        ..
    } = start_pair(dir.path(), &rules, "").await;
    let addr = c_server.local_addrs()[0];

    let (replies, _) = send(
        addr,
        "alice@contoso.test",
        &["bob@fabrikam.test", "carol@contoso.test"],
        &message("alice@contoso.test", "x", "M-rules"),
    )
    .await;
    let queued = replies[0].as_ref().unwrap().text.clone();
    assert_eq!(
        queued.split_whitespace().count(),
        5,
        "two queue ids for two groups: {queued}"
    );
    let external = String::from_utf8_lossy(
        &wait_for_mailbox_async(&f_data, "bob@fabrikam.test", 1, WAIT).await[0],
    )
    .into_owned();
    assert!(
        external.contains("Subject: [EXT] test M-rules\r\n"),
        "{external}"
    );
    assert!(
        external.contains("X-Sealpost-External: yes\r\n"),
        "{external}"
    );
    let internal = String::from_utf8_lossy(
        &wait_for_mailbox_async(&c_data, "carol@contoso.test", 1, WAIT).await[0],
    )
    .into_owned();
    assert!(
        internal.contains("Subject: test M-rules\r\n") && !internal.contains("X-Sealpost-External"),
        "{internal}"
    );

    let secret = b"From: <alice@contoso.test>\r\nSubject: top secret plans\r\n\r\nx\r\n";
    let (replies, _) = send(addr, "alice@contoso.test", &["bob@fabrikam.test"], secret).await;
    assert_eq!(
        replies[0].as_ref().unwrap_err().to_string(),
        "550 5.7.1 Message refused by policy"
    );
    assert!(
        c_server.spool().list().unwrap().is_empty(),
        "a refused message is not queued"
    );
    c_server.shutdown().await;
    f_server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_tls_rule_keeps_mail_from_a_plaintext_peer() {
    let dir = tempfile::tempdir().unwrap();
    let (peer, seen) = plaintext_peer();
    let rule =
        "name = \"tls-for-plain\"\npriority = 1\n[conditions]\nrecipient_domain = \"plain.test\"\n\
        [[actions]]\ntype = \"require_tls\"\n";
    let rules = rules_dir(dir.path(), &[("tls.toml", rule)]);
    let spec = DomainSpec::new("contoso", &["alice@contoso.test"], free_port())
        .route("plain.test", peer)
        .toml(&rules);
    let server = sealpost::app::start(load(&spec.write(dir.path())))
        .await
        .unwrap();
    let (replies, _) = send(
        server.local_addrs()[0],
        "alice@contoso.test",
        &["x@plain.test"],
        &message("a@contoso.test", "x@plain.test", "M-reqtls"),
    )
    .await;
    assert!(replies[0].is_ok());
    let deadline = Instant::now() + WAIT;
    loop {
        let list = server.spool().list().unwrap();
        let reason = list
            .first()
            .and_then(|e| e.envelope.recipients[0].last_reply.clone())
            .unwrap_or_default();
        if reason.contains("peer did not offer STARTTLS") {
            assert!(list[0].envelope.require_tls);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not deferred for TLS: {reason:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !seen.lock().unwrap().iter().any(|l| l.starts_with("MAIL")),
        "nothing may be sent in clear"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_rules_and_keeps_the_old_ones_when_the_new_are_broken() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let rules = rules_dir(dir.path(), &[]);
    let spec = DomainSpec::new("contoso", &["alice@contoso.test"], port).toml(&rules);
    let config = spec.write(dir.path());
    let server = ServeProcess::start(&config, port);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let secret = b"From: <alice@contoso.test>\r\nSubject: top secret\r\n\r\nx\r\n";
    let hup = |pid: u32| {
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    };
    let log_path = config.with_extension(format!("{}.log", std::process::id()));
    let wait_log = |needle: &str, count: usize| {
        let deadline = Instant::now() + WAIT;
        loop {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            if log.matches(needle).count() >= count {
                return;
            }
            assert!(Instant::now() < deadline, "log lacks {needle:?}:\n{log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    let (replies, _) = send(addr, "alice@contoso.test", &["alice@contoso.test"], secret).await;
    assert!(replies[0].is_ok(), "no rule yet");

    // An open session survives the reload.
    let settings = sealpost::smtp::client::ClientSettings {
        helo_name: "client.test".into(),
        timeout: Duration::from_secs(10),
        tls: sealpost::tls::opportunistic_client_config(),
    };
    let mut open = sealpost::smtp::client::Connection::open(
        addr,
        "mx",
        &settings,
        sealpost::smtp::client::TlsMode::Opportunistic,
    )
    .await
    .unwrap();
    std::fs::write(dir.path().join("rules/05-reject.toml"), REJECT_SECRET).unwrap();
    hup(server.child.id());
    wait_log("SIGHUP: configuration reloaded", 1);
    let policy = sealpost::tls::policy::TlsPolicy::opportunistic(settings.tls.clone());
    open.authorize(&policy).unwrap();
    let to = vec!["alice@contoso.test".to_string()];
    let replies = open
        .send(&policy, "alice@contoso.test", &to, secret)
        .await
        .expect("session still open");
    assert!(
        replies[0].is_ok(),
        "an open session finishes under the configuration it started with: {replies:?}"
    );
    open.quit().await;
    let (replies, _) = send(addr, "alice@contoso.test", &["alice@contoso.test"], secret).await;
    assert_eq!(
        replies[0].as_ref().unwrap_err().code,
        550,
        "a new session gets the new rule"
    );

    // A broken rule file is refused and the rules in force stay.
    std::fs::write(
        dir.path().join("rules/06-broken.toml"),
        "name = \"broken\"\npriority = \"x\"\n",
    )
    .unwrap();
    hup(server.child.id());
    wait_log("SIGHUP: configuration refused", 1);
    let (replies, _) = send(addr, "alice@contoso.test", &["alice@contoso.test"], secret).await;
    assert_eq!(
        replies[0].as_ref().unwrap_err().code,
        550,
        "old rules still in force"
    );
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("06-broken.toml"),
        "the log names the bad file: {log}"
    );
    drop(server);
}

//! Date and Message-ID added where a message lacks them, as Postfix's cleanup does: always for
//! submitted (authenticated) mail, for relayed mail only with `always_add_missing_headers`; a
//! message that has them keeps its own. Over real sockets, submission driven by Python's smtplib.

use crate::support;

use std::time::Duration;

use support::domains::{free_port, load, python, send, wait_for_mailbox_async, DomainSpec};

const WAIT: Duration = Duration::from_secs(20);
const BARE: &str =
    "From: alice@contoso.test\r\nTo: alice@contoso.test\r\nSubject: bare\r\n\r\nno date\r\n";
const DATED: &str = "From: alice@contoso.test\r\nDate: Tue, 1 Dec 2026 10:00:00 +0100\r\nMessage-ID: <own@client.test>\r\nSubject: dated\r\n\r\nhas both\r\n";

fn header_of(message: &[u8]) -> String {
    let text = String::from_utf8_lossy(message);
    text.split("\r\n\r\n").next().unwrap_or("").to_string()
}

fn count(header: &str, name: &str) -> usize {
    header
        .lines()
        .filter(|l| {
            l.to_ascii_lowercase()
                .starts_with(&format!("{}:", name.to_ascii_lowercase()))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitted_mail_gets_a_date_and_message_id_relayed_mail_only_when_configured() {
    for always in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (smtp, sub) = (free_port(), free_port());
        let hash = sealpost::auth::hash_password("s3cret").unwrap();
        let spec = DomainSpec::new("contoso", &["alice@contoso.test"], smtp).toml(&format!(
            "[[listener]]\naddress = \"127.0.0.1:{sub}\"\nprotocol = \"submission\"\n\
             [[user]]\nname = \"alice@contoso.test\"\npassword_hash = \"{hash}\"\n"
        ));
        let path = spec.write(dir.path());
        if always {
            let text = std::fs::read_to_string(&path).unwrap().replacen(
                "[server]\n",
                "[server]\nalways_add_missing_headers = true\n",
                1,
            );
            std::fs::write(&path, text).unwrap();
        }
        let config = load(&path);
        let data = config.data_dir.clone();
        let server = sealpost::app::start(config).await.unwrap();

        let script = format!(
            r#"
import smtplib, ssl
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP("127.0.0.1", {sub}); s.starttls(context=ctx); s.login("alice@contoso.test", "s3cret")
s.sendmail("alice@contoso.test", ["alice@contoso.test"], {BARE:?})
s.sendmail("alice@contoso.test", ["alice@contoso.test"], {DATED:?})
s.quit()
"#
        );
        python(&script);
        let (replies, _) = send(
            format!("127.0.0.1:{smtp}").parse().unwrap(),
            "alice@contoso.test",
            &["alice@contoso.test"],
            BARE.replace("Subject: bare", "Subject: relayed").as_bytes(),
        )
        .await;
        assert!(replies[0].is_ok(), "{replies:?}");

        let stored = wait_for_mailbox_async(&data, "alice@contoso.test", 3, WAIT).await;
        let by_subject = |s: &str| {
            stored
                .iter()
                .map(|m| header_of(m))
                .find(|h| h.contains(&format!("Subject: {s}")))
                .unwrap_or_else(|| panic!("no {s} message"))
        };
        let submitted = by_subject("bare");
        assert_eq!(count(&submitted, "Date"), 1, "{submitted}");
        assert_eq!(count(&submitted, "Message-ID"), 1, "{submitted}");
        assert!(submitted.contains("@mx.contoso.test>"), "{submitted}");
        // After our Received header: trace fields stay on top.
        assert!(submitted.starts_with("Received: "), "{submitted}");

        let dated = by_subject("dated");
        assert!(
            dated.contains("Date: Tue, 1 Dec 2026 10:00:00 +0100"),
            "{dated}"
        );
        assert!(dated.contains("Message-ID: <own@client.test>"), "{dated}");
        assert_eq!(
            (count(&dated, "Date"), count(&dated, "Message-ID")),
            (1, 1),
            "{dated}"
        );

        let relayed = by_subject("relayed");
        let expected = usize::from(always);
        assert_eq!(
            (count(&relayed, "Date"), count(&relayed, "Message-ID")),
            (expected, expected),
            "always_add_missing_headers = {always}: {relayed}"
        );
        server.shutdown().await;
    }
}

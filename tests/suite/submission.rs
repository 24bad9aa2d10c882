//! Submission (587, STARTTLS then AUTH) and submissions (465, implicit TLS) over real sockets,
//! driven by Python's smtplib: AUTH only under TLS, 535 5.7.8 for bad credentials, relay for
//! authenticated users only, who send only as the addresses they own unless configured otherwise.

use crate::support;

use std::time::Duration;

use support::admin::metric;
use support::domains::{free_port, hash, load, send, wait_for_mailbox_async, DomainSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticated_users_relay_and_others_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let (smtp, sub, subs, fport) = (free_port(), free_port(), free_port(), free_port());
    let users = format!(
        "[[listener]]\naddress = \"127.0.0.1:{sub}\"\nprotocol = \"submission\"\n\
         [[listener]]\naddress = \"127.0.0.1:{subs}\"\nprotocol = \"submissions\"\n\
         [[user]]\nname = \"alice@contoso.test\"\npassword_hash = \"{}\"\n",
        hash("s3cret")
    );
    let mut spec = DomainSpec::new("contoso", &["alice@contoso.test"], smtp)
        .route("fabrikam.test", fport)
        .toml(&users);
    spec.relay_loopback = false;
    let fabrikam = DomainSpec::new("fabrikam", &["bob@fabrikam.test"], fport);
    let (c, f) = (
        load(&spec.write(dir.path())),
        load(&fabrikam.write(dir.path())),
    );
    let f_data = f.data_dir.clone();
    let f_server = sealpost::app::start(f).await.unwrap();
    let c_server = sealpost::app::start(c).await.unwrap();

    // Port 25 without AUTH: no relay for a loopback client that is not in relay_networks.
    let (replies, _) = send(
        format!("127.0.0.1:{smtp}").parse().unwrap(),
        "alice@contoso.test",
        &["bob@fabrikam.test"],
        b"Subject: x\r\n\r\nx\r\n",
    )
    .await;
    assert_eq!(replies[0].as_ref().unwrap_err().code, 554);

    let script = format!(
        r#"
import smtplib, ssl
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP("127.0.0.1", {sub}, local_hostname="py.test")
s.ehlo()
print("auth-before-tls", s.has_extn("auth"))
print("mail-before-auth", s.mail("alice@contoso.test")[0])
s.rset()
print("auth-cmd-before-tls", s.docmd("AUTH", "PLAIN")[0])
s.starttls(context=ctx); s.ehlo()
print("auth-after-tls", s.esmtp_features.get("auth").strip())
try:
    s.login("alice@contoso.test", "wrong")
except smtplib.SMTPAuthenticationError as e:
    print("bad", e.smtp_code, e.smtp_error.decode())
s.login("alice@contoso.test", "s3cret")
s.sendmail("alice@contoso.test", ["bob@fabrikam.test"], "Subject: SUB-587\r\n\r\nhi\r\n")
s.quit()
t = smtplib.SMTP_SSL("127.0.0.1", {subs}, context=ctx, local_hostname="py.test")
print("tls465", t.sock.version())
t.login("alice@contoso.test", "s3cret")
t.sendmail("alice@contoso.test", ["bob@fabrikam.test"], "Subject: SUB-465\r\n\r\nhi\r\n")
t.quit()
print("done")
"#
    );
    let out = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "auth-before-tls False",
        "mail-before-auth 530",
        "auth-cmd-before-tls 538",
        "auth-after-tls PLAIN LOGIN",
        "bad 535 5.7.8 Error: authentication failed",
        "tls465 TLSv1.3",
        "done",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "missing {line:?} in:\n{stdout}"
        );
    }
    let got =
        wait_for_mailbox_async(&f_data, "bob@fabrikam.test", 2, Duration::from_secs(20)).await;
    let all: Vec<String> = got
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect();
    for subject in ["SUB-587", "SUB-465"] {
        let m = all
            .iter()
            .find(|m| m.contains(subject))
            .unwrap_or_else(|| panic!("{subject} not delivered"));
        assert!(
            m.contains("by mx.contoso.test (sealpost) with ESMTPSA"),
            "{m}"
        );
    }
    c_server.shutdown().await;
    f_server.shutdown().await;
}

/// Runs a Python smtplib script; returns its standard output, which must hold every line of
/// `expected`.
async fn python(script: String, expected: &[&str]) -> String {
    let out = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in expected {
        assert!(
            stdout.lines().any(|l| l == *line),
            "missing {line:?} in:\n{stdout}"
        );
    }
    stdout
}

/// After STARTTLS and AUTH PLAIN as alice, tries MAIL FROM with each sender (one message to
/// carol each, subject `SENDER <address>`) and prints `<address> <code> <text>` for the refused.
fn sender_script(port: u16, senders: &[&str]) -> String {
    format!(
        r#"
import smtplib, ssl
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP("127.0.0.1", {port}, local_hostname="py.test")
s.starttls(context=ctx); s.ehlo()
s.login("alice@contoso.test", "s3cret")
for sender in {senders:?}:
    try:
        s.sendmail(sender, ["carol@contoso.test"], "Subject: SENDER " + sender + "\r\n\r\nhi\r\n")
        print(sender, "sent")
    except smtplib.SMTPSenderRefused as e:
        print(sender, e.smtp_code, e.smtp_error.decode())
        s.rset()
s.quit()
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticated_users_send_only_as_their_own_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let (smtp, sub) = (free_port(), free_port());
    let users = format!(
        "[[listener]]\naddress = \"127.0.0.1:{sub}\"\nprotocol = \"submission\"\n\
         [[user]]\nname = \"alice@contoso.test\"\npassword_hash = \"{}\"\n\
         addresses = [\"alice@contoso.test\", \"sales@contoso.test\"]\n",
        hash("s3cret")
    );
    let mut spec = DomainSpec::new(
        "contoso",
        &["alice@contoso.test", "carol@contoso.test"],
        smtp,
    )
    .toml(&users);
    spec.relay_loopback = false;
    let config = spec.write(dir.path());
    let data = dir.path().join("contoso-data");
    let server = sealpost::app::start(load(&config)).await.unwrap();
    let received = || {
        let text = server.telemetry().metrics.render();
        metric(&text, "sealpost_messages_received_total", &[]).unwrap_or(0.0)
    };

    let refused = "553 5.7.1 <bob@contoso.test>: Sender address rejected: not owned by user alice@contoso.test";
    python(
        sender_script(
            sub,
            &[
                "bob@contoso.test",
                "alice@contoso.test",
                "sales@contoso.test",
                "ALICE@Contoso.TEST",
            ],
        ),
        &[
            &format!("bob@contoso.test {refused}"),
            "alice@contoso.test sent",
            "sales@contoso.test sent",
            "ALICE@Contoso.TEST sent",
        ],
    )
    .await;
    assert_eq!(received(), 3.0, "the message as bob was not queued");
    let got = wait_for_mailbox_async(&data, "carol@contoso.test", 3, Duration::from_secs(20)).await;
    let subjects: Vec<String> = got
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .filter_map(|m| {
            m.lines()
                .find(|l| l.starts_with("Subject: "))
                .map(str::to_string)
        })
        .collect();
    assert_eq!(subjects.len(), 3, "{subjects:?}");
    assert!(!subjects.iter().any(|s| s.contains("bob@")), "{subjects:?}");

    // Port 25 keeps its rules: no AUTH there, and any sender for a local mailbox.
    let (replies, _) = send(
        format!("127.0.0.1:{smtp}").parse().unwrap(),
        "bob@contoso.test",
        &["carol@contoso.test"],
        b"Subject: SMTP bob\r\n\r\nx\r\n",
    )
    .await;
    assert_eq!(replies[0].as_ref().map(|r| r.code), Ok(250), "{replies:?}");

    // sender_login_mismatch = "allow", applied by a reload: alice may send as bob.
    let text = std::fs::read_to_string(&config).unwrap();
    let allow = text.replacen(
        "[server]\n",
        "[server]\nsender_login_mismatch = \"allow\"\n",
        1,
    );
    assert_ne!(allow, text);
    std::fs::write(&config, allow).unwrap();
    server.reload().expect("reload");
    python(
        sender_script(sub, &["bob@contoso.test"]),
        &["bob@contoso.test sent"],
    )
    .await;
    assert_eq!(received(), 5.0);
    let got = wait_for_mailbox_async(&data, "carol@contoso.test", 5, Duration::from_secs(20)).await;
    assert!(
        got.iter()
            .any(|m| String::from_utf8_lossy(m).contains("Subject: SENDER bob@contoso.test")),
        "the message as bob arrived"
    );
    server.shutdown().await;
}

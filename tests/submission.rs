//! Submission (587, STARTTLS then AUTH) and submissions (465, implicit TLS) over real sockets,
//! driven by Python's smtplib: AUTH only under TLS, 535 5.7.8 for bad credentials, relay for
//! authenticated users only.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::domains::{free_port, load, send, wait_for_mailbox_async, DomainSpec};

fn hash(password: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_sealpost"))
        .args(["keys", "hash-password"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

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

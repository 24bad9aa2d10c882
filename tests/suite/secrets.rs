//! Logs never carry secrets: a full demo run at debug level (text and JSON) and a submission
//! login leave no private-key material, password or message body in what is logged.

use crate::support;

use std::process::Command;
use std::time::Duration;

use base64::Engine;
use support::domains::{free_port, python, DomainSpec, ServeProcess};

fn key_body_lines() -> Vec<String> {
    // A line from the middle of each fixture private key: any leak of key material shows it.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut lines = Vec::new();
    for f in [
        "fixtures/pki/mx.contoso.test.key",
        "fixtures/pki/smime/bob@fabrikam.test.key",
    ] {
        let text = std::fs::read_to_string(root.join(f)).unwrap();
        lines.push(text.lines().nth(5).unwrap().to_string());
    }
    lines
}

#[test]
fn demo_logs_at_debug_level_hold_no_keys_or_bodies() {
    for format in ["text", "json"] {
        let out = Command::new(env!("CARGO_BIN_EXE_sealpost"))
            .args(["--log-format", format, "demo"])
            .env("RUST_LOG", "debug")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let logs = String::from_utf8_lossy(&out.stderr);
        assert!(
            logs.lines().count() > 50,
            "the debug logs are there to be checked ({format})"
        );
        assert!(!logs.contains("PRIVATE KEY"), "{format}");
        for line in key_body_lines() {
            assert!(!logs.contains(&line), "{format}: key material in the logs");
        }
        // The demo's message body appears on standard output (the demo opens protected mail
        // on purpose), never in the logs.
        assert!(
            !logs.contains("Hello from the sealpost demo"),
            "{format}: a message body in the logs"
        );
    }
}

#[test]
fn submission_logins_do_not_log_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let (smtp, sub) = (free_port(), free_port());
    let password = "Tr0ub4dor-and-3";
    let hash = sealpost::auth::hash_password(password).unwrap();
    let spec = DomainSpec::new("contoso", &["alice@contoso.test"], smtp).toml(&format!(
        "[[listener]]\naddress = \"127.0.0.1:{sub}\"\nprotocol = \"submission\"\n[[user]]\nname = \"alice@contoso.test\"\npassword_hash = \"{hash}\"\n"
    ));
    let config = spec.write(dir.path());
    let server = ServeProcess::start(&config, sub);
    let script = format!(
        r#"
import smtplib, ssl
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP("127.0.0.1", {sub}); s.starttls(context=ctx); s.ehlo()
try: s.login("alice@contoso.test", "wrong-{password}")
except smtplib.SMTPAuthenticationError: pass
s.login("alice@contoso.test", "{password}")
s.quit()
"#
    );
    python(&script);
    std::thread::sleep(Duration::from_millis(200));
    drop(server);
    let log = std::fs::read_to_string(config.with_extension(format!("{}.log", std::process::id())))
        .unwrap();
    assert!(
        log.contains("authenticated") && log.contains("authentication failed"),
        "{log}"
    );
    let b64 = base64::engine::general_purpose::STANDARD
        .encode(format!("\0alice@contoso.test\0{password}"));
    assert!(
        !log.contains(password) && !log.contains(&b64),
        "password in the log:\n{log}"
    );
}

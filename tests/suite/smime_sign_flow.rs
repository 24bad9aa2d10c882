//! S/MIME signing by transport rule over real sockets: contoso signs "[signed]" mail with the
//! sender's key from `[smime] signing_dir`, and signs then encrypts "[secure]" mail (the
//! encrypting rule comes first); fabrikam stores it. What arrives verifies with `openssl cms`
//! and `sealpost decrypt`, both refuse it with one byte changed, and a sender without a signing
//! key is refused or delivered unsigned as its rule says.

use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use support::domains::{send, start_pair, wait_for_mailbox_async};

const WAIT: Duration = Duration::from_secs(20);

fn rule(dir: &Path, file: &str, subject: &str, priority: u32, extra: &str) {
    std::fs::write(
        dir.join(file),
        format!(
            "name = \"{file}\"\npriority = {priority}\n[conditions]\nsubject_contains = \"{subject}\"\n\
             [[actions]]\ntype = \"smime_sign\"\n{extra}"
        ),
    )
    .unwrap();
}

fn run(cmd: &str, args: &[&str]) -> Output {
    let program = if cmd == "sealpost" {
        env!("CARGO_BIN_EXE_sealpost")
    } else {
        cmd
    };
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} must be installed (.ci/run installs openssl): {e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_mail_verifies_in_openssl_and_sealpost_and_fails_when_altered() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let pki = root.join("fixtures/pki");
    let dir = tempfile::tempdir().unwrap();
    // Alice has a signing key; carol has none.
    let signing = dir.path().join("signing");
    std::fs::create_dir(&signing).unwrap();
    std::fs::copy(
        pki.join("smime/alice@contoso.test.crt"),
        signing.join("alice@contoso.test.crt"),
    )
    .unwrap();
    let key = signing.join("alice@contoso.test.key");
    std::fs::copy(pki.join("smime/alice@contoso.test.key"), &key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    // The fixture rule that encrypts "[secure]" (priority 10) and rules that sign.
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::copy(
        root.join("rules/contoso/10-secure-subject-smime.toml"),
        rules.join("10-secure-subject-smime.toml"),
    )
    .unwrap();
    rule(
        &rules,
        "20-sign-secure.toml",
        "[secure]",
        20,
        "signature = \"rsa-pss\"\n",
    );
    rule(&rules, "30-sign.toml", "[signed]", 30, "");
    rule(
        &rules,
        "40-sign-if-possible.toml",
        "[maybe-signed]",
        40,
        "on_missing_certificate = \"deliver-unsigned\"\n",
    );
    let extra = format!(
        "[rules]\ndir = \"{}\"\n[smime]\ncertificate_dir = \"{}\"\nsigning_dir = \"{}\"\n",
        rules.display(),
        pki.join("smime").display(),
        signing.display()
    );
    let pair = start_pair(dir.path(), &extra, "").await;
    let config = pair.contoso_config.to_str().unwrap().to_string();
    let out = run("sealpost", &["check-config", "--config", &config]);
    assert!(
        text(&out.stdout).contains("4 rule(s), 1 S/MIME signing key(s))"),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let addr = pair.contoso.local_addrs()[0];
    let bob = ["bob@fabrikam.test"];

    let signed = "From: Alice <alice@contoso.test>\r\nTo: <bob@fabrikam.test>\r\n\
        Subject: [signed] numbers\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
        Content-Transfer-Encoding: 8bit\r\n\r\nGr\u{fc}\u{df}e: the number is 42.\r\n";
    let (r, _) = send(addr, "alice@contoso.test", &bob, signed.as_bytes()).await;
    assert!(r[0].is_ok(), "{r:?}");
    let secure =
        "From: <alice@contoso.test>\r\nTo: <bob@fabrikam.test>\r\nSubject: [secure] plan\r\n\
        MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nSIGNED-AND-SEALED\r\n";
    let (r, _) = send(addr, "alice@contoso.test", &bob, secure.as_bytes()).await;
    assert!(r[0].is_ok(), "{r:?}");
    // Carol has no signing key: refused under the default rule, unsigned under the lenient one.
    let carol = "From: <carol@contoso.test>\r\nSubject: [signed] from carol\r\n\r\nhi\r\n";
    let (r, _) = send(addr, "carol@contoso.test", &bob, carol.as_bytes()).await;
    let refusal = format!("{r:?}");
    assert!(
        refusal.contains("550") && refusal.contains("No usable S/MIME signing certificate"),
        "{refusal}"
    );
    let lenient =
        "From: <carol@contoso.test>\r\nSubject: [maybe-signed] from carol\r\n\r\nCAROL-PLAIN\r\n";
    let (r, _) = send(addr, "carol@contoso.test", &bob, lenient.as_bytes()).await;
    assert!(r[0].is_ok(), "{r:?}");

    let got = wait_for_mailbox_async(&pair.fabrikam_data, "bob@fabrikam.test", 3, WAIT).await;
    let find = |needle: &str| {
        got.iter()
            .find(|m| text(m).contains(needle))
            .unwrap_or_else(|| panic!("no message with {needle}"))
            .clone()
    };
    let signed_msg = find("[signed] numbers");
    let sealed_msg = find("[secure] plan");
    let plain_msg = find("[maybe-signed]");
    assert!(
        text(&plain_msg).contains("CAROL-PLAIN") && !text(&plain_msg).contains("multipart/signed")
    );
    assert!(
        text(&signed_msg).contains("multipart/signed"),
        "{}",
        text(&signed_msg)
    );

    // OpenSSL verifies the signed message against the fixture CA.
    let ca = pki.join("ca.crt");
    let ca = ca.to_str().unwrap();
    let f = dir.path().join("signed.eml");
    std::fs::write(&f, &signed_msg).unwrap();
    let fs = f.to_str().unwrap();
    let out = run("openssl", &["cms", "-verify", "-in", fs, "-CAfile", ca]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("Content-Transfer-Encoding: base64"));
    // sealpost decrypt names the signer, trusted with --trust, untrusted without.
    let out = run("sealpost", &["decrypt", fs, "--trust", ca]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("signature: good, signed by") && err.contains("<alice@contoso.test>"),
        "{err}"
    );
    assert!(
        err.contains("signer: trusted (the certificate chains to ca.crt)"),
        "{err}"
    );
    assert_eq!(out.stdout, signed_msg);
    let out = run("sealpost", &["decrypt", fs]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("signer: untrusted (not checked"),
        "{}",
        text(&out.stderr)
    );
    // Another CA as the trust anchor: refused as untrusted (18), nothing written.
    let other_ca = dir.path().join("other-ca.crt");
    let out = run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=other CA",
            "-days",
            "2",
            "-keyout",
            dir.path().join("other-ca.key").to_str().unwrap(),
            "-out",
            other_ca.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(
        "sealpost",
        &["decrypt", fs, "--trust", other_ca.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(18), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    assert!(
        text(&out.stderr).contains("not trusted"),
        "{}",
        text(&out.stderr)
    );

    // One byte of the signed content changed: openssl and sealpost both refuse.
    let mut altered = signed_msg.clone();
    let body = text(&altered);
    let at = body.find("\r\n\r\nR3LD").expect("base64 body") + 6;
    altered[at] = if altered[at] == b'A' { b'B' } else { b'A' };
    std::fs::write(&f, &altered).unwrap();
    let out = run("openssl", &["cms", "-verify", "-in", fs, "-CAfile", ca]);
    assert!(!out.status.success(), "openssl accepted an altered message");
    let out = run("sealpost", &["decrypt", fs, "--trust", ca]);
    assert_eq!(out.status.code(), Some(17), "{}", text(&out.stderr));
    assert!(
        out.stdout.is_empty(),
        "nothing is written for a bad signature"
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("BAD SIGNATURE") && err.contains("altered"),
        "{err}"
    );

    // Signed then encrypted: openssl decrypts, then verifies the inner signature.
    let f = dir.path().join("sealed.eml");
    std::fs::write(&f, &sealed_msg).unwrap();
    assert!(!text(&sealed_msg).contains("SIGNED-AND-SEALED"));
    let bob_key = pki.join("smime/bob@fabrikam.test.key");
    let bob_crt = pki.join("smime/bob@fabrikam.test.crt");
    let out = run(
        "openssl",
        &[
            "cms",
            "-decrypt",
            "-in",
            f.to_str().unwrap(),
            "-inkey",
            bob_key.to_str().unwrap(),
            "-recip",
            bob_crt.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("multipart/signed"),
        "{}",
        text(&out.stdout)
    );
    let inner = dir.path().join("inner.eml");
    std::fs::write(&inner, &out.stdout).unwrap();
    let out = run(
        "openssl",
        &[
            "cms",
            "-verify",
            "-in",
            inner.to_str().unwrap(),
            "-CAfile",
            ca,
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("SIGNED-AND-SEALED"));
    // sealpost decrypt does both and names the signer.
    let out = run(
        "sealpost",
        &[
            "decrypt",
            f.to_str().unwrap(),
            "--key",
            bob_key.to_str().unwrap(),
            "--trust",
            ca,
        ],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("<alice@contoso.test>") && err.contains("signer: trusted"),
        "{err}"
    );
    assert!(text(&out.stdout).contains("SIGNED-AND-SEALED"));
    assert!(text(&out.stdout).contains("Subject: [secure] plan"));

    // Reload: a key that became readable by others is refused (the keys in force stay); a key
    // added for carol is used once the reload succeeds.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = pair.contoso.reload().unwrap_err();
    assert!(
        e.contains("smime.signing_dir") && e.contains("chmod 600"),
        "{e}"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::copy(
        pki.join("smime/carol@contoso.test.crt"),
        signing.join("carol@contoso.test.crt"),
    )
    .unwrap();
    let carol_key = signing.join("carol@contoso.test.key");
    std::fs::copy(pki.join("smime/carol@contoso.test.key"), &carol_key).unwrap();
    std::fs::set_permissions(&carol_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    pair.contoso.reload().unwrap();
    let carol =
        "From: <carol@contoso.test>\r\nSubject: [signed] carol again\r\n\r\nCAROL-SIGNED\r\n";
    let (r, _) = send(addr, "carol@contoso.test", &bob, carol.as_bytes()).await;
    assert!(r[0].is_ok(), "{r:?}");
    let got = wait_for_mailbox_async(&pair.fabrikam_data, "bob@fabrikam.test", 4, WAIT).await;
    let carol_msg = got
        .iter()
        .find(|m| text(m).contains("carol again"))
        .expect("carol's signed message");
    let f = dir.path().join("carol.eml");
    std::fs::write(&f, carol_msg).unwrap();
    let out = run("sealpost", &["decrypt", f.to_str().unwrap(), "--trust", ca]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("<carol@contoso.test>") && err.contains("signer: trusted"),
        "{err}"
    );
    pair.shutdown().await;
}

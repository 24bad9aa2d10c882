//! The real binary's configuration checks: clear errors naming file, key and problem.

use crate::support;

use std::process::Command;

use support::domains::{free_port, openssl_self_signed, sealpost, DomainSpec};

#[test]
fn fixtures_pass_check_config() {
    for name in ["contoso", "fabrikam"] {
        let path = format!("{}/fixtures/{name}.toml", env!("CARGO_MANIFEST_DIR"));
        let (code, out, err) = sealpost(&["check-config", "--config", &path]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(&format!("mx.{name}.test")), "{out}");
    }
}

#[test]
fn missing_key_file_is_named_and_serve_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[server]\nhostname = \"mx.a.test\"\ndata_dir = \"d\"\n[[listener]]\naddress = \"127.0.0.1:0\"\n\
         [tls]\ncertificate = \"pki/mx.a.test.crt\"\nprivate_key = \"pki/mx.a.test.key\"\n",
    )
    .unwrap();
    let p = path.to_str().unwrap();
    for cmd in ["check-config", "serve"] {
        let (code, _, err) = sealpost(&[cmd, "--config", p]);
        assert_eq!(code, 2, "{cmd}: {err}");
        assert!(
            err.contains(&format!(
                "{p}: tls.certificate: file not found: pki/mx.a.test.crt"
            )),
            "{cmd}: {err}"
        );
    }
}

/// A config whose [tls] names a certificate made by openssl; `check-config` and `serve` must
/// both refuse it, naming the file, with each of `expected` in the message.
fn assert_server_certificate_refused(newkey: &str, extra: &[&str], stem: &str, expected: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let (key, crt) = openssl_self_signed(dir.path(), stem, newkey, extra);
    let mut spec = DomainSpec::new("contoso", &["alice@contoso.test"], free_port());
    spec.tls = false;
    let path = spec.write(dir.path());
    let text = std::fs::read_to_string(&path).unwrap()
        + &format!(
            "\n[tls]\ncertificate = \"{}\"\nprivate_key = \"{}\"\n",
            crt.display(),
            key.display()
        );
    std::fs::write(&path, text).unwrap();
    let p = path.to_str().unwrap();
    for cmd in ["check-config", "serve"] {
        let (code, _, err) = sealpost(&[cmd, "--config", p]);
        assert_eq!(code, 2, "{cmd}: {err}");
        for needle in expected {
            assert!(err.contains(needle), "{cmd}: {needle:?} not in {err}");
        }
    }
}

#[test]
fn rsa_1024_server_key_is_refused_naming_the_file() {
    assert_server_certificate_refused(
        "rsa:1024",
        &[],
        "weak",
        &[
            "weak.key",
            "1024-bit RSA key; at least 2048 bits are required",
        ],
    );
}

#[test]
fn sha1_signed_server_certificate_is_refused() {
    assert_server_certificate_refused(
        "rsa:2048",
        &["-sha1"],
        "sha1",
        &["sha1.crt", "sha1WithRSAEncryption (weak)"],
    );
}

#[test]
fn keys_pki_writes_private_keys_0600() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pki");
    let (code, _, err) = sealpost(&[
        "keys",
        "pki",
        "--out",
        out.to_str().unwrap(),
        "--hosts",
        "mx.x.test",
    ]);
    assert_eq!(code, 0, "{err}");
    for f in ["ca.key", "mx.x.test.key"] {
        let mode = std::fs::metadata(out.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    // openssl agrees the host certificate chains to the CA.
    let verify = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(out.join("ca.crt"))
        .arg(out.join("mx.x.test.crt"))
        .output()
        .expect("openssl");
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

#[test]
fn keys_root_new_writes_a_private_key_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("root-a.key");
    let (code, stdout, err) = sealpost(&["keys", "root", "new", "--out", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("mode 0600"), "{stdout}");
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("sealpost-key-v1"));
    let hex = lines.next().unwrap_or_default();
    assert!(
        hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "{text}"
    );
}

#[test]
fn reading_commands_refuse_a_data_dir_without_data_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("typo");
    let (t, c) = (
        typo.to_str().unwrap(),
        format!("{}/fixtures/contoso.toml", env!("CARGO_MANIFEST_DIR")),
    );
    let store =
        format!("{t} holds no mailbox store ({t}/store/index.sqlite is missing): check --data-dir");
    let queue = format!("{t} holds no queue ({t}/queue is missing): check --data-dir");
    let mailbox = ["--mailbox", "alice@contoso.test"];
    for (args, expected) in [
        (vec!["mailbox", "list"], &store),
        (vec!["mailbox", "read", "--id", "x"], &store),
        (vec!["store", "verify"], &store),
        (vec!["queue", "list"], &queue),
        (vec!["queue", "flush"], &queue),
    ] {
        let mut full = args.clone();
        full.extend(["--config", &c, "--data-dir", t]);
        if args[0] == "mailbox" {
            full.extend(mailbox);
        }
        let (code, out, err) = sealpost(&full);
        assert_eq!(code, 2, "{full:?}: {out}{err}");
        assert!(err.contains(expected.as_str()), "{full:?}: {err}");
        assert!(!typo.exists(), "{full:?} created {t}");
    }
}

#[test]
fn a_toml_syntax_error_keeps_its_lines_and_caret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, "[server]\nhostname = mx.a.test\n").unwrap();
    let (code, _, err) = sealpost(&["check-config", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines[0].starts_with(&format!(
            "sealpost: {}: TOML parse error at line 2",
            path.display()
        )),
        "{err}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.trim_start().starts_with("2 | hostname = mx.a.test")),
        "{err}"
    );
    assert!(lines.iter().any(|l| l.trim_end().ends_with('^')), "{err}");
}

#[test]
fn a_rule_that_needs_a_missing_section_is_refused_naming_the_rule() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/contoso");
    for (file, needs) in [
        (
            "20-protect-subject-rms.toml",
            "protects messages (rms_protect), but there is no [rms] tenant_key_dir",
        ),
        (
            "10-secure-subject-smime.toml",
            "S/MIME-encrypts (smime_encrypt), but there is no [smime] certificate_dir",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("rules");
        std::fs::create_dir(&rules).unwrap();
        std::fs::copy(root.join(file), rules.join(file)).unwrap();
        let spec = DomainSpec::new("contoso", &["alice@contoso.test"], free_port())
            .toml(&format!("[rules]\ndir = \"{}\"\n", rules.display()));
        let path = spec.write(dir.path());
        let p = path.to_str().unwrap();
        let (code, out, err) = sealpost(&["check-config", "--config", p]);
        assert_eq!(code, 2, "{file}: {out}{err}");
        assert!(
            err.contains(&format!(
                "{p}: rules.dir: {}: rule ",
                rules.join(file).display()
            )) && err.contains(needs),
            "{err}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(
        rules.join("via.toml"),
        "name = \"via\"\npriority = 1\n[conditions]\nrecipient_domain = \"x.test\"\n[[actions]]\ntype = \"route_via\"\nconnector = \"nowhere\"\n",
    )
    .unwrap();
    let spec = DomainSpec::new("contoso", &["alice@contoso.test"], free_port())
        .toml(&format!("[rules]\ndir = \"{}\"\n", rules.display()));
    let path = spec.write(dir.path());
    let (code, _, err) = sealpost(&["check-config", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("rule \"via\" routes via connector \"nowhere\", but no [[connector.outbound]] has that name"),
        "{err}"
    );
}

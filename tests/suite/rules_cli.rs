//! `sealpost rules check|test` and `check-config` on rule files, through the real binary.

use std::path::{Path, PathBuf};
use std::process::Command;

fn sealpost(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sealpost"))
        .args(args)
        .output()
        .expect("run sealpost");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn fixture(path: &str) -> String {
    format!("{}/fixtures/{path}", env!("CARGO_MANIFEST_DIR"))
}

fn contoso_test(eml: &str, extra: &[&str]) -> String {
    let config = fixture("contoso.toml");
    let eml = fixture(&format!("eml/{eml}"));
    let mut args = vec![
        "rules",
        "test",
        "--config",
        &config,
        "--eml",
        &eml,
        "--from",
        "alice@contoso.test",
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = sealpost(&args);
    assert_eq!(code, 0, "{err}");
    out
}

/// A config without TLS in a temporary directory, with `rules/` holding the given files.
fn temp_config(rules: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let rules_dir = dir.path().join("rules");
    std::fs::create_dir(&rules_dir).unwrap();
    for (name, text) in rules {
        std::fs::write(rules_dir.join(name), text).unwrap();
    }
    let config = dir.path().join("a.toml");
    std::fs::write(
        &config,
        "[server]\nhostname = \"mx.a.test\"\ndata_dir = \"data\"\n[[domain]]\nname = \"a.test\"\n\
         [rules]\ndir = \"rules\"\n",
    )
    .unwrap();
    (dir, config)
}

fn line_after<'a>(out: &'a str, heading: &str, recipient: &str) -> &'a str {
    let block = out
        .split_once(heading)
        .unwrap_or_else(|| panic!("no {heading:?} in:\n{out}"))
        .1;
    block
        .lines()
        .find(|l| l.trim_start().starts_with(recipient))
        .unwrap_or_else(|| panic!("no line for {recipient} after {heading:?} in:\n{out}"))
}

#[test]
fn secure_subject_encrypts_only_for_fabrikam_recipients() {
    let out = contoso_test(
        "secure.eml",
        &["--to", "bob@fabrikam.test", "--to", "carol@contoso.test"],
    );
    let smime = "rule \"secure-subject-smime\"";
    assert!(
        line_after(&out, smime, "bob@fabrikam.test").ends_with("matched"),
        "{out}"
    );
    assert!(
        line_after(&out, smime, "carol@contoso.test")
            .contains("no match: condition recipient_domain = \"fabrikam.test\" does not hold"),
        "{out}"
    );
    assert!(
        out.contains("matched rules: secure-subject-smime, tag-external"),
        "{out}"
    );
    let (_, result) = out.split_once("would do (nothing was sent):").expect(&out);
    let expected = "\n  bob@fabrikam.test:\n    smime_encrypt { algorithm = \"aes256-cbc\", key_transport = \"rsa-oaep\", on_missing_certificate = \"reject\" }   [rule secure-subject-smime]\n    add_header { name = \"X-Sealpost-External\", value = \"yes\" }   [rule tag-external]\n  carol@contoso.test:\n    deliver unchanged\n";
    assert_eq!(result, expected, "{out}");
}

#[test]
fn plain_mail_is_not_encrypted_and_internal_mail_is_unchanged() {
    let out = contoso_test("plain.eml", &["--to", "bob@fabrikam.test"]);
    assert!(
        line_after(&out, "rule \"secure-subject-smime\"", "bob@fabrikam.test")
            .contains("subject_contains = \"[secure]\" does not hold"),
        "{out}"
    );
    assert!(out.contains("matched rules: tag-external\n"), "{out}");
    assert!(!out.contains("smime_encrypt {"), "{out}");
    let out = contoso_test("plain.eml", &["--to", "carol@contoso.test"]);
    assert!(out.contains("matched rules: none\n"), "{out}");
    assert!(
        out.ends_with("  carol@contoso.test:\n    deliver unchanged\n"),
        "{out}"
    );
}

#[test]
fn exe_attachment_is_rejected() {
    let out = contoso_test("exe-attachment.eml", &["--to", "carol@contoso.test"]);
    assert!(line_after(&out, "rule \"block-exe\"", "carol@contoso.test").ends_with("matched"));
    assert!(
        out.contains("reject { code = 550, enhanced = \"5.7.1\", text = \"Executable attachments are not accepted\" }   [rule block-exe]"),
        "{out}"
    );
}

#[test]
fn body_session_and_exception_conditions_through_the_binary() {
    let rule =
        "name = \"bluebird\"\npriority = 1\n[conditions]\nbody_contains = \"PROJECT BLUEBIRD\"\n\
                inbound_connector = \"from-partner\"\n[exceptions]\nsender_authenticated = true\n\
                [[actions]]\ntype = \"prepend_subject\"\ntext = \"[Bluebird] \"\n";
    let (_dir, config) = temp_config(&[("10-bluebird.toml", rule)]);
    let config = config.to_str().unwrap().to_string();
    let eml = fixture("eml/multipart-base64.eml");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "rules", "test", "--config", &config, "--eml", &eml, "--from", "", "--to", "x@a.test",
        ];
        args.extend_from_slice(extra);
        let (code, out, err) = sealpost(&args);
        assert_eq!(code, 0, "{err}");
        out
    };
    let out = run(&["--connector", "from-partner"]);
    assert!(out.contains("x@a.test  matched"), "{out}");
    assert!(
        out.contains("prepend_subject { text = \"[Bluebird] \" }   [rule bluebird]"),
        "{out}"
    );
    let out = run(&[]);
    assert!(
        out.contains("no match: condition inbound_connector = \"from-partner\" does not hold"),
        "{out}"
    );
    let out = run(&["--connector", "from-partner", "--authenticated"]);
    assert!(
        out.contains("no match: exception sender_authenticated = true applies"),
        "{out}"
    );
}

#[test]
fn sender_check_conditions_through_the_binary() {
    let rule = "name = \"dmarc-fail\"\npriority = 1\n[conditions]\ndmarc = \"fail\"\n\
                spf = [\"fail\", \"softfail\"]\n[[actions]]\ntype = \"prepend_subject\"\n\
                text = \"[Suspicious] \"\n";
    let (_dir, config) = temp_config(&[("10-dmarc.toml", rule)]);
    let config = config.to_str().unwrap().to_string();
    let eml = fixture("eml/multipart-base64.eml");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "rules", "test", "--config", &config, "--eml", &eml, "--from", "", "--to", "x@a.test",
        ];
        args.extend_from_slice(extra);
        sealpost(&args)
    };
    let (code, out, err) = run(&["--dmarc", "fail", "--spf", "softfail"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("x@a.test  matched"), "{out}");
    let (_, out, _) = run(&["--dmarc", "fail", "--spf", "pass"]);
    assert!(
        out.contains("no match: condition spf = [\"fail\", \"softfail\"] does not hold"),
        "{out}"
    );
    let (_, out, _) = run(&[]);
    assert!(
        out.contains("no match: condition spf = [\"fail\", \"softfail\"] does not hold"),
        "unchecked mail matches no result: {out}"
    );
    let (code, _, err) = run(&["--dmarc", "failed"]);
    assert_ne!(code, 0);
    assert!(err.contains("expected one of pass, fail"), "{err}");
}

#[test]
fn rules_check_lists_the_fixture_rules_in_order() {
    let config = fixture("contoso.toml");
    let (code, out, err) = sealpost(&["rules", "check", "--config", &config]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("4 rule(s)"), "{out}");
    let order: Vec<usize> = [
        "10  secure-subject-smime",
        "20  protect-subject-rms",
        "30  tag-external",
        "40  block-exe",
    ]
    .iter()
    .map(|h| out.find(h).unwrap_or_else(|| panic!("no {h:?} in:\n{out}")))
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{out}");
    assert!(
        out.contains("do      rms_protect { template = \"do-not-forward\" }"),
        "{out}"
    );
    let config = fixture("fabrikam.toml");
    let (code, out, _) = sealpost(&["rules", "check", "--config", &config]);
    assert_eq!(code, 0);
    assert!(out.contains("tag-from-contoso"), "{out}");
}

#[test]
fn bad_rule_file_is_named_with_line_by_check_config_and_rules_check() {
    let good = "name = \"ok\"\npriority = 1\n[[actions]]\ntype = \"require_tls\"\n";
    let bad = "name = \"bad\"\npriority = 2\n\n[[actions]]\ntype = \"reject\"\ncode = 250\n";
    let (dir, config) = temp_config(&[("10-ok.toml", good), ("20-bad.toml", bad)]);
    let c = config.to_str().unwrap();
    let bad_path = dir.path().join("rules").join("20-bad.toml");
    for args in [
        vec!["check-config", "--config", c],
        vec!["rules", "check", "--config", c],
    ] {
        let (code, _, err) = sealpost(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        let expected = format!(
            "{c}: rules.dir: {}:4: reject code must be a 4xx or 5xx SMTP reply code, not 250",
            bad_path.display()
        );
        assert!(err.contains(&expected), "{args:?}: {err}");
    }
}

#[test]
fn check_config_counts_rules_and_a_missing_message_file_fails() {
    let good = "name = \"ok\"\npriority = 1\n[[actions]]\ntype = \"require_tls\"\n";
    let (dir, config) = temp_config(&[("ok.toml", good), ("notes.txt", "ignored")]);
    let c = config.to_str().unwrap();
    let (code, out, err) = sealpost(&["check-config", "--config", c]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 rule(s)"), "{out}");
    let missing = dir.path().join("missing.eml");
    let missing = missing.to_str().unwrap();
    let (code, _, err) = sealpost(&[
        "rules", "test", "--config", c, "--eml", missing, "--from", "a@a.test", "--to", "b@a.test",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("missing.eml"), "{err}");
    assert!(Path::new(&fixture("eml/plain.eml")).is_file());
}

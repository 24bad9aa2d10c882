//! Tests of rule file parsing and directory loading: every condition and action, and errors
//! with file, line and problem.

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::rules::action::{
    HeaderField, KeyTransport, OnMissingCertificate, Reject, Right, SmimeAlgorithm, SmimeEncrypt,
};

fn parse(text: &str) -> Result<Rule, RuleError> {
    parse_rule_file(Path::new("/rules/r.toml"), text)
}

fn rule_with(conditions: &str) -> Rule {
    let text = format!(
        "name = \"r\"\npriority = 1\n[conditions]\n{conditions}\n[[actions]]\ntype = \"require_tls\"\n"
    );
    parse(&text).unwrap_or_else(|e| panic!("{conditions}: {e}"))
}

fn action(body: &str) -> Result<Action, RuleError> {
    let text = format!("name = \"r\"\npriority = 1\n[[actions]]\n{body}\n");
    parse(&text).map(|mut r| r.actions.remove(0))
}

fn err(text: &str) -> RuleError {
    match parse(text) {
        Ok(rule) => panic!("accepted: {rule:?}"),
        Err(e) => e,
    }
}

#[test]
fn sender_check_conditions_parse_and_bad_results_are_named() {
    use crate::sender_auth::AuthResult;
    let r = rule_with("dmarc = \"fail\"\nspf = [\"softfail\", \"TempError\"]\ndkim = \"none\"");
    assert!(r
        .conditions
        .contains(&Condition::Dmarc(vec![AuthResult::Fail])));
    assert!(r.conditions.contains(&Condition::Spf(vec![
        AuthResult::SoftFail,
        AuthResult::TempError
    ])));
    assert_eq!(
        Condition::Spf(vec![AuthResult::SoftFail, AuthResult::TempError]).to_string(),
        "spf = [\"softfail\", \"temperror\"]"
    );
    let e = err("name = \"r\"\npriority = 1\n[conditions]\ndmarc = \"failed\"\n[[actions]]\ntype = \"require_tls\"\n")
        .to_string();
    assert!(
        e.contains("\"failed\" is not a result") && e.contains("permerror"),
        "{e}"
    );
}

#[test]
fn complete_rule_parses() {
    let rule = parse(
        r#"name = "secure"
description = "encrypt [secure] mail to partners"
priority = 10
enabled = false
stop = true

[conditions]
subject_contains = "[Secure]"
recipient_domain = ["fabrikam.test", "*.fabrikam.test"]

[exceptions]
sender = "newsletter@contoso.test"

[[actions]]
type = "smime_encrypt"
on_missing_certificate = "reject"

[[actions]]
type = "add_header"
name = "X-Encrypted"
value = "yes"
"#,
    )
    .unwrap();
    assert_eq!(rule.name, "secure");
    assert_eq!(rule.priority, 10);
    assert!(!rule.enabled);
    assert!(rule.stop);
    assert_eq!(rule.file, Path::new("/rules/r.toml"));
    assert_eq!(rule.conditions.len(), 2);
    assert_eq!(
        rule.conditions[0].to_string(),
        "recipient_domain = [\"fabrikam.test\", \"*.fabrikam.test\"]"
    );
    assert_eq!(
        rule.conditions[1].to_string(),
        "subject_contains = \"[secure]\""
    );
    assert_eq!(
        rule.exceptions[0].to_string(),
        "sender = \"newsletter@contoso.test\""
    );
    assert_eq!(
        rule.actions[0],
        Action::SmimeEncrypt(SmimeEncrypt::default())
    );
    assert_eq!(rule.actions[1].kind(), "add_header");
}

#[test]
fn enabled_defaults_to_true_and_actions_may_be_an_inline_array() {
    let rule = parse(
        "name = \"r\"\npriority = 5\nactions = [{ type = \"require_tls\" }, { type = \"prepend_subject\", text = \"[EXT] \" }]\n",
    )
    .unwrap();
    assert!(rule.enabled);
    assert!(!rule.stop);
    assert!(rule.conditions.is_empty());
    assert_eq!(rule.actions.len(), 2);
    assert_eq!(
        rule.actions[1].to_string(),
        "prepend_subject { text = \"[EXT] \" }"
    );
}

#[test]
fn every_condition_key_parses() {
    let cases = [
        ("sender = \"A@Contoso.test\"", "sender = \"A@Contoso.test\""),
        (
            "recipient = [\"b@x.test\", \"c@x.test\"]",
            "recipient = [\"b@x.test\", \"c@x.test\"]",
        ),
        (
            "sender_domain = \"*.contoso.test\"",
            "sender_domain = \"*.contoso.test\"",
        ),
        (
            "recipient_domain = \"Fabrikam.test\"",
            "recipient_domain = \"fabrikam.test\"",
        ),
        (
            "sender_pattern = \"*-noreply@*\"",
            "sender_pattern = \"*-noreply@*\"",
        ),
        (
            "recipient_pattern = [\"ceo@*\", \"cfo@*\"]",
            "recipient_pattern = [\"ceo@*\", \"cfo@*\"]",
        ),
        (
            "recipient_scope = \"internal\"",
            "recipient_scope = \"internal\"",
        ),
        (
            "recipient_scope = \"external\"",
            "recipient_scope = \"external\"",
        ),
        (
            "subject_contains = [\"A\", \"b\"]",
            "subject_contains = [\"a\", \"b\"]",
        ),
        (
            "body_contains = \"Top  Secret\"",
            "body_contains = \"top secret\"",
        ),
        (
            "header_matches = { name = \"X-Priority\", pattern = \"1*\" }",
            "header_matches = { name = \"X-Priority\", pattern = \"1*\" }",
        ),
        ("size_over = 1000", "size_over = 1000"),
        ("size_over = \"10MB\"", "size_over = 10485760"),
        ("has_attachment = true", "has_attachment = true"),
        (
            "attachment_name_matches = \"*.exe\"",
            "attachment_name_matches = \"*.exe\"",
        ),
        (
            "sender_authenticated = false",
            "sender_authenticated = false",
        ),
        (
            "inbound_connector = \"from-fabrikam\"",
            "inbound_connector = \"from-fabrikam\"",
        ),
    ];
    for (line, shown) in cases {
        let rule = rule_with(line);
        assert_eq!(rule.conditions.len(), 1, "{line}");
        assert_eq!(rule.conditions[0].to_string(), shown);
        assert_eq!(shown.split(' ').next(), Some(rule.conditions[0].key()));
    }
}

#[test]
fn every_action_type_parses_with_defaults_and_options() {
    assert_eq!(
        action("type = \"smime_encrypt\"").unwrap(),
        Action::SmimeEncrypt(SmimeEncrypt {
            algorithm: SmimeAlgorithm::Aes256Cbc,
            key_transport: KeyTransport::RsaOaep,
            on_missing_certificate: OnMissingCertificate::Reject,
        })
    );
    let full = action(
        "type = \"smime_encrypt\"\nalgorithm = \"aes256-gcm\"\nkey_transport = \"rsa-pkcs1\"\non_missing_certificate = \"deliver-unencrypted\"",
    )
    .unwrap();
    assert_eq!(
        full.to_string(),
        "smime_encrypt { algorithm = \"aes256-gcm\", key_transport = \"rsa-pkcs1\", on_missing_certificate = \"deliver-unencrypted\" }"
    );
    let Action::RmsProtect(rms) = action(
        "type = \"rms_protect\"\ntemplate = \"do-not-forward\"\nexpires_after = \"30d\"\nrights = { \"*@contoso.test\" = [\"view\", \"reply\"] }",
    )
    .unwrap() else {
        panic!("not rms_protect")
    };
    assert_eq!(rms.template, "do-not-forward");
    assert_eq!(rms.expires_after, Some(Duration::from_secs(30 * 86400)));
    assert_eq!(
        rms.rights["*@contoso.test"],
        vec![Right::View, Right::Reply]
    );
    let Action::SetHeader(HeaderField { name, value }) =
        action("type = \"set_header\"\nname = \"X-Class\"\nvalue = \"internal\"").unwrap()
    else {
        panic!("not set_header")
    };
    assert_eq!((name.as_str(), value.as_str()), ("X-Class", "internal"));
    assert_eq!(
        action("type = \"redirect_to\"\naddresses = [\"audit@contoso.test\"]")
            .unwrap()
            .to_string(),
        "redirect_to { addresses = [\"audit@contoso.test\"] }"
    );
    assert_eq!(
        action("type = \"reject\"").unwrap(),
        Action::Reject(Reject {
            code: 550,
            enhanced: [5, 7, 1],
            text: "Delivery not authorized, message refused".into()
        })
    );
    let Action::Reject(soft) =
        action("type = \"reject\"\ncode = 451\ntext = \"try later\"").unwrap()
    else {
        panic!("not reject")
    };
    assert_eq!((soft.code, soft.enhanced), (451, [4, 7, 1]));
    assert!(soft.is_temporary());
    assert_eq!(soft.reply().to_bytes(), b"451 4.7.1 try later\r\n");
    assert_eq!(
        action("type = \"route_via\"\nconnector = \"to-fabrikam\"")
            .unwrap()
            .to_string(),
        "route_via { connector = \"to-fabrikam\" }"
    );
    assert_eq!(
        action("type = \"require_tls\"").unwrap().kind(),
        "require_tls"
    );
}

#[test]
fn bad_toml_is_reported_with_its_line() {
    let e = err("name = \"r\"\npriority = 1\n\n[conditions\nsender = \"a@b.test\"\n");
    assert_eq!(e.line, Some(4), "{e}");
    assert!(e.to_string().starts_with("/rules/r.toml:4: "), "{e}");
}

#[test]
fn unknown_condition_key_is_named_with_its_line() {
    let e = err("name = \"r\"\npriority = 1\n[conditions]\nsubject_contain = \"x\"\n[[actions]]\ntype = \"require_tls\"\n");
    assert_eq!(e.line, Some(4), "{e}");
    assert!(e.problem.contains("subject_contain"), "{e}");
}

#[test]
fn unknown_top_level_key_and_unknown_action_option_are_refused() {
    let e = err("name = \"r\"\npriority = 1\nfoo = 1\n[[actions]]\ntype = \"require_tls\"\n");
    assert!(e.problem.contains("foo"), "{e}");
    let e = action("type = \"add_header\"\nname = \"X-A\"\nvalue = \"b\"\ncolour = \"red\"")
        .unwrap_err();
    assert!(e.problem.contains("colour"), "{e}");
    let e = action("type = \"require_tls\"\nverify = true").unwrap_err();
    assert!(e.problem.contains("verify"), "{e}");
}

#[test]
fn unknown_action_type_is_refused_with_its_line() {
    let e = err("name = \"r\"\npriority = 1\n\n[[actions]]\ntype = \"encrypt_everything\"\n");
    assert!(e.problem.contains("encrypt_everything"), "{e}");
    assert!(
        e.problem.contains("smime_encrypt"),
        "lists the known types: {e}"
    );
    assert_eq!(e.line, Some(5), "{e}");
}

#[test]
fn reject_code_must_be_4xx_or_5xx_and_agree_with_enhanced() {
    let e = err("name = \"r\"\npriority = 1\n[[actions]]\ntype = \"reject\"\ncode = 250\n");
    assert!(e.problem.contains("250"), "{e}");
    assert_eq!(e.line, Some(3), "the [[actions]] table: {e}");
    for bad in [
        "code = 699",
        "code = 570",
        "code = 450\nenhanced = \"5.7.1\"",
        "enhanced = \"5.7\"",
        "enhanced = \"5.7.1.2\"",
        "enhanced = \"55.7.1\"",
        "enhanced = \"5.x.1\"",
        "text = \"a\\r\\nb\"",
    ] {
        assert!(
            action(&format!("type = \"reject\"\n{bad}")).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn header_value_with_crlf_is_refused_with_its_line() {
    let e = err(
        "name = \"r\"\npriority = 1\n[[actions]]\ntype = \"add_header\"\nname = \"X-Tag\"\nvalue = \"yes\\r\\nBcc: evil@x.test\"\n",
    );
    assert!(e.problem.contains("CR or LF"), "{e}");
    assert_eq!(e.line, Some(3), "the [[actions]] table: {e}");
    for bad in [
        "type = \"add_header\"\nname = \"X Tag\"\nvalue = \"v\"",
        "type = \"set_header\"\nname = \"Content-Type\"\nvalue = \"text/html\"",
        "type = \"prepend_subject\"\ntext = \"a\\nb\"",
    ] {
        assert!(action(bad).is_err(), "{bad}");
    }
}

#[test]
fn bad_values_are_refused_at_their_line() {
    let cases = [
        "sender = \"not an address\"",
        "recipient_domain = \"*fabrikam.test\"",
        "recipient_scope = \"outside\"",
        "size_over = \"10 parsecs\"",
        "size_over = -1",
        "subject_contains = []",
        "attachment_name_matches = \"\"",
        "header_matches = { name = \"X-A\" }",
        "inbound_connector = \"a b\"",
        "has_attachment = \"yes\"",
    ];
    for line in cases {
        let text = format!(
            "name = \"r\"\npriority = 1\n[conditions]\n{line}\n[[actions]]\ntype = \"require_tls\"\n"
        );
        let e = err(&text);
        assert_eq!(e.line, Some(4), "{line}: {e}");
    }
    let e = action("type = \"redirect_to\"\naddresses = []").unwrap_err();
    assert!(e.problem.contains("empty list"), "{e}");
    let e =
        action("type = \"rms_protect\"\ntemplate = \"t\"\nexpires_after = \"soon\"").unwrap_err();
    assert!(e.problem.contains("duration"), "{e}");
}

#[test]
fn rule_needs_name_priority_and_an_action() {
    assert!(err("priority = 1\n[[actions]]\ntype = \"require_tls\"\n")
        .problem
        .contains("name"));
    assert!(err("name = \"r\"\n[[actions]]\ntype = \"require_tls\"\n")
        .problem
        .contains("priority"));
    assert!(
        err("name = \"\"\npriority = 1\n[[actions]]\ntype = \"require_tls\"\n")
            .problem
            .contains("rule name")
    );
    let e = err("name = \"r\"\npriority = 1\n[conditions]\nhas_attachment = true\n");
    assert!(e.problem.contains("at least one action"), "{e}");
    assert_eq!(e.line, Some(1));
    let exempt =
        parse("name = \"r\"\npriority = 1\nstop = true\n[conditions]\nsender = \"a@b.test\"\n")
            .unwrap();
    assert!(exempt.actions.is_empty() && exempt.stop);
}

#[test]
fn top_level_key_after_a_table_gets_a_hint() {
    let e = err("name = \"r\"\npriority = 1\n[[actions]]\ntype = \"require_tls\"\nstop = true\n");
    assert!(e.problem.contains("unknown field `stop`"), "{e}");
    assert!(e.problem.contains("before the first [table]"), "{e}");
}

fn write(dir: &Path, file: &str, text: &str) {
    std::fs::write(dir.join(file), text).unwrap();
}

fn simple(name: &str, priority: u32) -> String {
    format!("name = \"{name}\"\npriority = {priority}\n[[actions]]\ntype = \"require_tls\"\n")
}

#[test]
fn directory_is_loaded_in_priority_then_file_name_order() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "b.toml", &simple("b", 10));
    write(dir.path(), "a.toml", &simple("a", 10));
    write(dir.path(), "c.toml", &simple("c", 5));
    write(dir.path(), "README.md", "not a rule");
    write(dir.path(), "old.toml.bak", "not a rule");
    write(dir.path(), ".#a.toml", "editor lock file");
    std::fs::create_dir(dir.path().join("sub.toml")).unwrap();
    let set = load_dir(dir.path()).unwrap();
    let names: Vec<&str> = set.rules().iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["c", "a", "b"]);
    assert_eq!(set.len(), 3);
    assert!(set.get("a").is_some());
    let clone = set.clone();
    assert!(
        std::ptr::eq(clone.rules(), set.rules()),
        "clones share the rules"
    );
}

#[test]
fn duplicate_names_name_both_files() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "10-a.toml", &simple("same", 1));
    write(
        dir.path(),
        "20-b.toml",
        &format!("# second\n{}", simple("same", 2)),
    );
    let e = load_dir(dir.path()).unwrap_err();
    assert_eq!(e.file, dir.path().join("20-b.toml"));
    assert_eq!(e.line, Some(2));
    assert!(e.problem.contains("duplicate rule name \"same\""), "{e}");
    assert!(e.problem.contains("10-a.toml"), "{e}");
}

#[test]
fn errors_name_the_file_and_a_missing_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "10-ok.toml", &simple("ok", 1));
    write(
        dir.path(),
        "20-bad.toml",
        "name = \"bad\"\npriority = \"high\"\n",
    );
    let e = load_dir(dir.path()).unwrap_err();
    assert_eq!(e.file, dir.path().join("20-bad.toml"));
    assert_eq!(e.line, Some(2));
    assert_eq!(
        e.to_string(),
        format!(
            "{}:2: {}",
            dir.path().join("20-bad.toml").display(),
            e.problem
        )
    );
    let missing = dir.path().join("nope");
    let e = load_dir(&missing).unwrap_err();
    assert_eq!(e.line, None);
    assert!(e
        .to_string()
        .starts_with(&format!("{}: cannot read directory", missing.display())));
}

#[test]
fn empty_directory_gives_an_empty_rule_set_and_connectors_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    assert!(load_dir(dir.path()).unwrap().is_empty());
    write(
        dir.path(),
        "r.toml",
        "name = \"r\"\npriority = 1\n[conditions]\ninbound_connector = \"from-a\"\n[[actions]]\ntype = \"route_via\"\nconnector = \"to-b\"\n",
    );
    let set = load_dir(dir.path()).unwrap();
    assert_eq!(
        set.connectors().into_iter().collect::<Vec<_>>(),
        ["from-a", "to-b"]
    );
}

#[test]
fn line_of_counts_from_one() {
    assert_eq!(line_of("a\nb\nc", 0), 1);
    assert_eq!(line_of("a\nb\nc", 2), 2);
    assert_eq!(line_of("a\nb\nc", 4), 3);
    assert_eq!(line_of("a", 99), 1);
}

/// The first ```toml block after `marker` in a document (`//! ` prefixes removed).
fn toml_block(doc: &str, marker: &str) -> String {
    let after = doc.split_once(marker).expect("marker").1;
    let body = after.split_once("```toml\n").expect("toml block").1;
    let body = body.split_once("```").expect("end of block").0;
    body.lines()
        .map(|l| {
            l.trim_start_matches("//!")
                .strip_prefix(' ')
                .unwrap_or(l.trim_start_matches("//!"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn documented_examples_parse() {
    let readme = toml_block(include_str!("../../../README.md"), "## Transport rules");
    let rule = parse(&readme).unwrap_or_else(|e| panic!("README example: {e}\n{readme}"));
    assert_eq!(rule.name, "secure-subject-smime");
    let module = toml_block(include_str!("../mod.rs"), "# Rule files");
    let rule = parse(&module).unwrap_or_else(|e| panic!("module doc example: {e}\n{module}"));
    assert_eq!((rule.conditions.len(), rule.exceptions.len()), (2, 1));
}

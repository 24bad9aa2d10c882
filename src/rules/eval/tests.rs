//! Tests of evaluation and explanation: order, stop, exceptions, grouping, and each condition
//! against real MIME messages.

use std::path::Path;

use crate::rules::{explain, parse_rule_file, Outcome, Rule};

use super::*;

/// A rule from TOML lines; `file` decides the tie order.
fn rule(file: &str, text: &str) -> Rule {
    parse_rule_file(Path::new(file), text).unwrap_or_else(|e| panic!("{e}"))
}

/// `name`, `priority`, conditions text, and one `add_header X-<name>: yes` action.
fn tagger(name: &str, priority: u32, extra: &str) -> Rule {
    rule(
        &format!("{name}.toml"),
        &format!(
            "name = \"{name}\"\npriority = {priority}\n{extra}\n[[actions]]\ntype = \"add_header\"\nname = \"X-{name}\"\nvalue = \"yes\"\n"
        ),
    )
}

fn local() -> crate::mail::DomainSet {
    crate::mail::DomainSet::new(["contoso.test"])
}

struct Msg {
    from: String,
    to: Vec<String>,
    bytes: Vec<u8>,
    local: crate::mail::DomainSet,
    authenticated: bool,
    connector: Option<String>,
    auth: Option<crate::sender_auth::AuthOutcome>,
}

impl Msg {
    fn new(to: &[&str], bytes: &[u8]) -> Msg {
        Msg {
            from: "alice@contoso.test".into(),
            to: to.iter().map(|s| s.to_string()).collect(),
            bytes: bytes.to_vec(),
            local: local(),
            authenticated: false,
            connector: None,
            auth: None,
        }
    }

    fn facts(&self) -> MessageFacts<'_> {
        MessageFacts {
            mail_from: &self.from,
            recipients: &self.to,
            message: &self.bytes,
            size: self.bytes.len() as u64,
            local_domains: &self.local,
            authenticated: self.authenticated,
            inbound_connector: self.connector.as_deref(),
            sender_auth: self.auth.as_ref(),
        }
    }

    fn eval(&self, rules: Vec<Rule>) -> Evaluation {
        evaluate(&RuleSet::new(rules), &self.facts())
    }

    /// Whether a single rule with these conditions matches the first recipient.
    fn matches(&self, conditions: &str) -> bool {
        let r = tagger("t", 1, &format!("[conditions]\n{conditions}"));
        !self.eval(vec![r]).matched.is_empty()
    }
}

const PLAIN: &[u8] = b"From: alice@contoso.test\r\nTo: bob@fabrikam.test\r\nSubject: Quarterly numbers\r\n\r\nHello Bob,\r\nthe numbers are attached.\r\n";

fn names(applied: &[Applied]) -> Vec<&str> {
    applied.iter().map(|a| a.rule.as_str()).collect()
}

#[test]
fn actions_follow_priority_then_file_name() {
    let m = Msg::new(&["bob@fabrikam.test"], PLAIN);
    let ev = m.eval(vec![
        tagger("late", 30, ""),
        tagger("b-tie", 20, ""),
        tagger("a-tie", 20, ""),
        tagger("first", 10, ""),
    ]);
    assert_eq!(ev.groups.len(), 1);
    assert_eq!(
        names(&ev.groups[0].actions),
        ["first", "a-tie", "b-tie", "late"]
    );
    assert_eq!(ev.matched, ["first", "a-tie", "b-tie", "late"]);
}

#[test]
fn stop_ends_evaluation_only_for_the_recipients_it_matched() {
    let m = Msg::new(&["carol@contoso.test", "bob@fabrikam.test"], PLAIN);
    let ev = m.eval(vec![
        tagger(
            "stopper",
            10,
            "stop = true\n[conditions]\nrecipient_scope = \"internal\"",
        ),
        tagger("later", 20, ""),
        tagger("before", 5, ""),
    ]);
    assert_eq!(
        names(ev.actions_for("carol@contoso.test").unwrap()),
        ["before", "stopper"]
    );
    assert_eq!(
        names(ev.actions_for("bob@fabrikam.test").unwrap()),
        ["before", "later"]
    );
    assert_eq!(ev.matched, ["before", "stopper", "later"]);
}

#[test]
fn any_exception_cancels_and_recipient_exceptions_cancel_per_recipient() {
    let m = Msg::new(&["bob@fabrikam.test", "dave@fabrikam.test"], PLAIN);
    let r = tagger(
        "r",
        1,
        "[exceptions]\nrecipient = \"dave@fabrikam.test\"\nsubject_contains = \"nothing like this\"",
    );
    let ev = m.eval(vec![r.clone()]);
    assert_eq!(names(ev.actions_for("bob@fabrikam.test").unwrap()), ["r"]);
    assert!(ev.actions_for("dave@fabrikam.test").unwrap().is_empty());
    let r2 = tagger(
        "r2",
        1,
        "[exceptions]\nrecipient = \"x@y.test\"\nsubject_contains = \"QUARTERLY\"",
    );
    assert!(
        m.eval(vec![r2]).is_unchanged(),
        "a message-level exception cancels for everyone"
    );
}

#[test]
fn recipients_split_into_groups_by_action_list() {
    let m = Msg::new(
        &[
            "bob@fabrikam.test",
            "carol@contoso.test",
            "dave@fabrikam.test",
            "alice@contoso.test",
        ],
        PLAIN,
    );
    let encrypt = rule(
        "10.toml",
        "name = \"encrypt-external\"\npriority = 10\n[conditions]\nrecipient_scope = \"external\"\n[[actions]]\ntype = \"smime_encrypt\"\n",
    );
    let ev = m.eval(vec![encrypt]);
    assert_eq!(ev.groups.len(), 2);
    assert_eq!(
        ev.groups[0].recipients,
        ["bob@fabrikam.test", "dave@fabrikam.test"]
    );
    assert_eq!(ev.groups[0].actions[0].rule, "encrypt-external");
    assert_eq!(ev.groups[0].actions[0].action.kind(), "smime_encrypt");
    assert_eq!(
        ev.groups[1].recipients,
        ["carol@contoso.test", "alice@contoso.test"]
    );
    assert!(ev.groups[1].actions.is_empty());
    assert!(!ev.is_unchanged());
    let all: usize = ev.groups.iter().map(|g| g.recipients.len()).sum();
    assert_eq!(all, 4, "every recipient in exactly one group");
}

#[test]
fn no_rules_or_disabled_rules_leave_one_group_without_actions() {
    let m = Msg::new(&["bob@fabrikam.test", "carol@contoso.test"], PLAIN);
    let ev = m.eval(vec![]);
    assert_eq!(ev.groups.len(), 1);
    assert_eq!(ev.groups[0].recipients.len(), 2);
    assert!(ev.matched.is_empty() && ev.is_unchanged());
    let ev = m.eval(vec![tagger("off", 1, "enabled = false")]);
    assert!(ev.is_unchanged());
}

#[test]
fn recipient_conditions() {
    let m = Msg::new(&["Bob@Mail.Fabrikam.test"], PLAIN);
    assert!(m.matches("recipient = \"bob@mail.fabrikam.TEST\""));
    assert!(!m.matches("recipient = \"bob@fabrikam.test\""));
    assert!(m.matches("recipient_domain = \"*.fabrikam.test\""));
    assert!(!m.matches("recipient_domain = \"fabrikam.test\""));
    assert!(m.matches("recipient_pattern = \"bob@*\""));
    assert!(!m.matches("recipient_pattern = \"bo@*\""));
    assert!(m.matches("recipient_scope = \"external\""));
    assert!(!m.matches("recipient_scope = \"internal\""));
    let internal = Msg::new(&["carol@CONTOSO.test"], PLAIN);
    assert!(internal.matches("recipient_scope = \"internal\""));
}

#[test]
fn sender_and_session_conditions() {
    let mut m = Msg::new(&["bob@fabrikam.test"], PLAIN);
    m.from = "Alice@Sales.Contoso.test".into();
    assert!(m.matches("sender = \"alice@sales.contoso.test\""));
    assert!(!m.matches("sender = \"alice@contoso.test\""));
    assert!(m.matches("sender_domain = \"*.contoso.test\""));
    assert!(!m.matches("sender_domain = \"contoso.test\""));
    assert!(m.matches("sender_pattern = \"alice@*\""));
    assert!(m.matches("sender_authenticated = false"));
    assert!(!m.matches("sender_authenticated = true"));
    assert!(!m.matches("inbound_connector = \"from-fabrikam\""));
    m.authenticated = true;
    m.connector = Some("from-fabrikam".into());
    assert!(m.matches("sender_authenticated = true"));
    assert!(m.matches("inbound_connector = [\"other\", \"from-fabrikam\"]"));
    m.from = String::new();
    assert!(
        !m.matches("sender_domain = \"contoso.test\""),
        "null sender has no domain"
    );
    assert!(!m.matches("sender_pattern = \"?*\""));
}

#[test]
fn sender_check_conditions() {
    use crate::sender_auth::{AuthOutcome, AuthResult, Disposition};
    let mut m = Msg::new(&["bob@fabrikam.test"], PLAIN);
    assert!(
        !m.matches("dmarc = \"none\""),
        "unchecked mail matches no result"
    );
    m.auth = Some(AuthOutcome {
        spf: AuthResult::SoftFail,
        dkim: AuthResult::Pass,
        arc: AuthResult::None,
        dmarc: AuthResult::Fail,
        from_domain: "contoso.test".into(),
        header: String::new(),
        disposition: Disposition::Accept,
    });
    assert!(m.matches("dmarc = \"fail\""));
    assert!(m.matches("spf = [\"fail\", \"softfail\"]"));
    assert!(!m.matches("spf = \"pass\""));
    assert!(m.matches("dkim = \"pass\"\ndmarc = \"fail\""));
    assert!(!m.matches("dkim = \"fail\""));
}

#[test]
fn subject_is_decoded_and_compared_ignoring_case() {
    let m = Msg::new(
        &["bob@fabrikam.test"],
        b"Subject: =?UTF-8?B?W1NlY3VyZV0gR3LDvMOfZQ==?=\r\n\r\nbody\r\n",
    );
    assert!(m.matches("subject_contains = \"[secure]\""));
    assert!(m.matches("subject_contains = \"[SECURE] GRÜẞE\""));
    assert!(!m.matches("subject_contains = [\"[protect]\", \"hello\"]"));
}

const MULTIPART: &[u8] = b"From: alice@contoso.test\r\n\
To: bob@fabrikam.test\r\n\
Subject: report\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"XX\"\r\n\
X-Priority: 1\r\n\
\x20(Highest)\r\n\
\r\n\
--XX\r\n\
Content-Type: multipart/alternative; boundary=\"YY\"\r\n\
\r\n\
--YY\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
VGhpcyBpcyBUT1AgU0VDUkVUIG1hdGVyaWFsLg==\r\n\
--YY\r\n\
Content-Type: text/html; charset=utf-8\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
<p>Project <b>Blue=\r\nbird</b> caf=C3=A9</p>\r\n\
--YY--\r\n\
--XX\r\n\
Content-Type: application/octet-stream\r\n\
Content-Disposition: attachment; filename=\"Setup.EXE\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
Y29uZmlkZW50aWFsIHBheWxvYWQ=\r\n\
--XX\r\n\
Content-Type: message/rfc822\r\n\
\r\n\
Subject: inner\r\n\
Content-Type: multipart/mixed; boundary=\"ZZ\"\r\n\
\r\n\
--ZZ\r\n\
Content-Type: text/plain\r\n\
\r\n\
inner text\r\n\
--ZZ\r\n\
Content-Type: application/zip\r\n\
Content-Disposition: attachment; filename*=UTF-8''r%C3%A9sum%C3%A9.zip\r\n\
\r\n\
PK\r\n\
--ZZ--\r\n\
--XX--\r\n";

#[test]
fn body_contains_searches_decoded_base64_and_quoted_printable_parts() {
    let m = Msg::new(&["bob@fabrikam.test"], MULTIPART);
    assert!(
        m.matches("body_contains = \"top secret\""),
        "base64 text/plain"
    );
    assert!(
        m.matches("body_contains = \"project bluebird café\""),
        "QP text/html as text"
    );
    assert!(
        !m.matches("body_contains = \"VGhpcyBpcyBUT1A\""),
        "not the encoded form"
    );
    assert!(
        !m.matches("body_contains = \"<b>\""),
        "HTML markup is not text"
    );
    assert!(
        !m.matches("body_contains = \"confidential payload\""),
        "attachments are not body"
    );
    let qp = Msg::new(
        &["bob@fabrikam.test"],
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nWire the money to account=\r\n 12=3D34 before Fri=\r\nday\r\n",
    );
    assert!(qp.matches("body_contains = \"account 12=34 before friday\""));
}

#[test]
fn attachment_conditions() {
    let m = Msg::new(&["bob@fabrikam.test"], MULTIPART);
    assert!(m.matches("has_attachment = true"));
    assert!(!m.matches("has_attachment = false"));
    assert!(m.matches("attachment_name_matches = \"*.exe\""));
    assert!(
        m.matches("attachment_name_matches = \"résumé.*\""),
        "RFC 2231, inside the attached message"
    );
    assert!(!m.matches("attachment_name_matches = [\"*.bat\", \"*.scr\"]"));
    let plain = Msg::new(&["bob@fabrikam.test"], PLAIN);
    assert!(plain.matches("has_attachment = false"));
    assert!(!plain.matches("attachment_name_matches = \"*\""));
}

#[test]
fn header_matches_sees_unfolded_values() {
    let m = Msg::new(&["bob@fabrikam.test"], MULTIPART);
    assert!(m.matches("header_matches = { name = \"x-priority\", pattern = \"1 (highest)\" }"));
    assert!(m.matches("header_matches = { name = \"X-Priority\", pattern = \"1*\" }"));
    assert!(!m.matches("header_matches = { name = \"X-Priority\", pattern = \"5*\" }"));
    assert!(!m.matches("header_matches = { name = \"X-Missing\", pattern = \"*\" }"));
    let encoded = Msg::new(
        &["bob@fabrikam.test"],
        b"Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\n\r\nx\r\n",
    );
    assert!(encoded.matches("header_matches = { name = \"Subject\", pattern = \"grüße\" }"));
    assert!(encoded.matches("header_matches = { name = \"Subject\", pattern = \"=?utf-8?q?*\" }"));
}

#[test]
fn size_over_compares_the_whole_message() {
    let m = Msg::new(&["bob@fabrikam.test"], PLAIN);
    let len = PLAIN.len();
    assert!(m.matches(&format!("size_over = {}", len - 1)));
    assert!(!m.matches(&format!("size_over = {len}")));
    assert!(!m.matches("size_over = \"1KB\""));
    let big = Msg::new(&["bob@fabrikam.test"], &vec![b'x'; 2048]);
    assert!(big.matches("size_over = \"1KB\""));
}

#[test]
fn unparseable_message_only_fails_content_conditions() {
    let m = Msg::new(&["bob@fabrikam.test"], b"");
    assert!(!m.matches("subject_contains = \"x\""));
    assert!(!m.matches("body_contains = \"x\""));
    assert!(m.matches("has_attachment = false"));
    assert!(m.matches("recipient_domain = \"fabrikam.test\""));
}

#[test]
fn explain_says_why_each_rule_did_or_did_not_match() {
    let m = Msg::new(&["bob@fabrikam.test", "carol@contoso.test"], PLAIN);
    let rules = RuleSet::new(vec![
        tagger(
            "ext",
            10,
            "[conditions]\nrecipient_scope = \"external\"\nsubject_contains = \"quarterly\"",
        ),
        tagger("exc", 20, "[exceptions]\nsender_domain = \"contoso.test\""),
        tagger(
            "stop",
            30,
            "stop = true\n[conditions]\nrecipient = \"carol@contoso.test\"",
        ),
        tagger("off", 40, "enabled = false"),
        tagger("last", 50, ""),
    ]);
    let ex = explain(&rules, &m.facts());
    assert_eq!(ex.rules.len(), 5);
    assert!(ex.rules[0].recipients[0].outcome.is_match());
    assert_eq!(
        ex.rules[0].recipients[1].outcome,
        Outcome::ConditionFailed {
            condition: "recipient_scope = \"external\"".into()
        }
    );
    assert_eq!(
        ex.rules[4].recipients[1].outcome,
        Outcome::Stopped { by: "stop".into() }
    );
    assert_eq!(
        ex.to_string(),
        "rule \"ext\" (priority 10, ext.toml)\n\
         \x20 bob@fabrikam.test   matched\n\
         \x20 carol@contoso.test  no match: condition recipient_scope = \"external\" does not hold\n\
         rule \"exc\" (priority 20, exc.toml)\n\
         \x20 bob@fabrikam.test   no match: exception sender_domain = \"contoso.test\" applies\n\
         \x20 carol@contoso.test  no match: exception sender_domain = \"contoso.test\" applies\n\
         rule \"stop\" (priority 30, stop.toml, stop)\n\
         \x20 bob@fabrikam.test   no match: condition recipient = \"carol@contoso.test\" does not hold\n\
         \x20 carol@contoso.test  matched\n\
         rule \"off\" (priority 40, off.toml, disabled)\n\
         \x20 bob@fabrikam.test   skipped: rule is disabled\n\
         \x20 carol@contoso.test  skipped: rule is disabled\n\
         rule \"last\" (priority 50, last.toml)\n\
         \x20 bob@fabrikam.test   matched\n\
         \x20 carol@contoso.test  skipped: rule \"stop\" matched earlier with stop = true\n"
    );
    let ev = evaluate(&rules, &m.facts());
    assert_eq!(
        ev.matched,
        ["ext", "stop", "last"],
        "explain and evaluate agree"
    );
}

#[test]
fn domain_of_takes_the_text_after_the_last_at() {
    assert_eq!(super::domain_in("a@b.test"), Some("b.test"));
    assert_eq!(super::domain_in("\"x@y\"@b.test"), Some("b.test"));
    assert_eq!(super::domain_in(""), None);
    assert_eq!(super::domain_in("a@"), None);
}

//! Unit tests of the session state machine (scripted conversations are in conversation_tests).

use super::super::policy::LocalPolicy;
use super::*;

fn session(starttls: bool) -> Session {
    let config = SessionConfig {
        hostname: "mx.contoso.test".into(),
        starttls_available: starttls,
        ..SessionConfig::default()
    };
    let policy = LocalPolicy::new(["contoso.test"], ["alice@contoso.test"]);
    Session::new(
        Arc::new(config),
        Arc::new(policy),
        ([192, 0, 2, 7], 4000).into(),
        false,
    )
}

#[test]
fn pipelined_replies_are_merged_into_one_send() {
    let mut s = session(false);
    let actions = s.feed(b"HELO a\r\nNOOP\r\nRSET\r\n");
    let expected = b"250 mx.contoso.test\r\n250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n".to_vec();
    assert_eq!(actions, vec![Action::Send(expected)]);
    assert_eq!(s.facts().helo.as_deref(), Some("a"));
}

#[test]
fn tls_facts_are_recorded_only_after_a_starttls_request() {
    let mut s = session(true);
    let facts = TlsFacts::new("TLSv1.3", "TLS_AES_128_GCM_SHA256");
    assert!(s.tls_established(facts.clone()).is_empty());
    assert!(
        !s.is_tls(),
        "tls_established without STARTTLS must be ignored"
    );
    let actions = s.feed(b"STARTTLS\r\n");
    assert_eq!(actions.last(), Some(&Action::StartTls));
    assert!(s.tls_established(facts.clone()).is_empty());
    assert!(s.is_tls());
    assert_eq!(s.facts().tls, Some(facts));
}

#[test]
fn nothing_happens_after_close() {
    let mut s = session(false);
    assert_eq!(s.feed(b"QUIT\r\n").last(), Some(&Action::Close));
    assert!(s.feed(b"NOOP\r\n").is_empty());
    assert!(s.timeout().is_empty());
    assert!(s.delivery_result(Ok("X".into())).is_empty());
}

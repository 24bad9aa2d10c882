//! Unit tests of the session state machine (scripted conversations are in conversation_tests).

use super::super::policy::LocalPolicy;
use super::*;
use crate::queue::InFlight;

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

fn session_with(budget: &Arc<InFlight>) -> Session {
    session(false).with_in_flight(budget.clone())
}

/// The `Data` pieces among `actions`, joined, and whether a `Discard` came.
fn content(actions: &[Action]) -> (Vec<u8>, bool) {
    let mut data = Vec::new();
    let mut discarded = false;
    for a in actions {
        match a {
            Action::Data(piece) => data.extend_from_slice(piece),
            Action::Discard => discarded = true,
            _ => {}
        }
    }
    (data, discarded)
}

fn lines(n: usize) -> Vec<u8> {
    let line = [b"x".repeat(98), b"\r\n".to_vec()].concat();
    line.repeat(n)
}

const START: &[u8] = b"EHLO a\r\nMAIL FROM:<c@f.test>\r\nRCPT TO:<alice@contoso.test>\r\nDATA\r\n";

#[test]
fn content_goes_out_in_pieces_and_a_transfer_past_the_budget_gets_451_after_the_data() {
    let budget = InFlight::new(100 * 1024);
    let mut s = session_with(&budget);
    s.feed(START);
    assert_eq!(
        budget.used(),
        super::RESERVE_AT_START,
        "DATA reserves its start"
    );
    let (data, discarded) = content(&s.feed(&lines(600)));
    assert_eq!((data.len(), discarded), (60_000, false));
    assert_eq!(budget.used(), 64 * 1024);
    // Past 100 KiB: the content is dropped at once, the reply comes after the end of data.
    let actions = s.feed(&lines(600));
    assert_eq!(content(&actions), (Vec::new(), true));
    assert!(!actions.iter().any(|a| matches!(a, Action::Send(_))));
    let actions = s.feed(&[lines(10), b".\r\n".to_vec()].concat());
    assert_eq!(
        actions,
        vec![Action::Send(
            b"451 4.3.1 Insufficient system storage\r\n".to_vec()
        )]
    );
    assert_eq!(budget.used(), 0, "the reservation is given back");
    // The session goes on, and a message that fits is delivered.
    let actions =
        s.feed(b"MAIL FROM:<c@f.test>\r\nRCPT TO:<alice@contoso.test>\r\nDATA\r\nhi\r\n.\r\n");
    assert_eq!(content(&actions).0, b"hi\r\n");
    let Some(Action::Deliver(tx)) = actions.last() else {
        panic!("{actions:?}");
    };
    assert_eq!(tx.size, 4);
    assert_eq!(tx.in_flight.bytes(), super::RESERVE_AT_START);
}

#[test]
fn sessions_share_the_budget_and_give_it_back_on_every_path() {
    let budget = InFlight::new(100 * 1024);
    let mut first = session_with(&budget);
    let mut second = session_with(&budget);
    first.feed(START);
    let refused = second.feed(START);
    let Some(Action::Send(bytes)) = refused.last() else {
        panic!("{refused:?}");
    };
    assert!(bytes.ends_with(b"250 2.1.5 Ok\r\n452 4.3.1 Insufficient system storage\r\n"));
    assert!(!second.in_data());
    // A SIZE that does not fit is refused at MAIL.
    let mut third = session_with(&budget);
    let actions = third.feed(b"EHLO a\r\nMAIL FROM:<c@f.test> SIZE=40000\r\n");
    let Some(Action::Send(bytes)) = actions.last() else {
        panic!("{actions:?}");
    };
    assert!(bytes.ends_with(b"452 4.3.1 Insufficient system storage\r\n"));
    // The first transaction ends with its delivery: the bytes come back.
    let actions = first.feed(b"hello\r\n.\r\n");
    let Some(Action::Deliver(tx)) = actions.last() else {
        panic!("{actions:?}");
    };
    drop(tx.clone());
    assert_eq!(budget.used(), 64 * 1024, "held until the message is queued");
    first.delivery_result(Ok("Q1".into()));
    drop(actions);
    assert_eq!(budget.used(), 0);
    // A session dropped in the middle of its data gives its share back too.
    let actions = second.feed(b"DATA\r\nhalf a message");
    assert!(matches!(actions.last(), Some(Action::Data(_))));
    assert_eq!(budget.used(), 64 * 1024);
    drop(second);
    assert_eq!(budget.used(), 0);
}

const START_BDAT: &[u8] = b"EHLO a\r\nMAIL FROM:<c@f.test>\r\nRCPT TO:<alice@contoso.test>\r\n";

fn bdat(n: usize, last: bool) -> Vec<u8> {
    let mut b = format!("BDAT {n}{}\r\n", if last { " LAST" } else { "" }).into_bytes();
    b.extend_from_slice(&lines(n / 100 + 1)[..n]);
    b
}

#[test]
fn a_chunk_past_the_budget_gets_451_after_it_and_ends_the_transaction() {
    let budget = InFlight::new(100 * 1024);
    let mut s = session_with(&budget);
    s.feed(START_BDAT);
    let (data, discarded) = content(&s.feed(&bdat(60_000, false)));
    assert_eq!((data.len(), discarded), (60_000, false));
    // A chunk crossing the budget is dropped as it comes and refused once read.
    let actions = s.feed(&[bdat(50_000, false), bdat(10, true)].concat());
    assert_eq!(content(&actions), (Vec::new(), true));
    let Some(Action::Send(bytes)) = actions.last() else {
        panic!("{actions:?}");
    };
    assert_eq!(
        bytes.as_slice(),
        b"451 4.3.1 Insufficient system storage\r\n503 5.5.1 Error: need MAIL command\r\n"
    );
    assert_eq!(budget.used(), 0);
    assert!(!s.in_transaction());
}

#[test]
fn rset_and_ehlo_drop_the_chunks_received_and_their_share() {
    let budget = InFlight::new(1 << 20);
    let mut s = session_with(&budget);
    for reset in [&b"RSET\r\n"[..], b"EHLO again\r\n"] {
        s.feed(START_BDAT);
        let (data, discarded) = content(&s.feed(&bdat(1000, false)));
        assert_eq!((data.len(), discarded), (1000, false));
        assert_eq!(budget.used(), 64 * 1024);
        let actions = s.feed(reset);
        assert_eq!(content(&actions), (Vec::new(), true), "{reset:?}");
        assert_eq!(budget.used(), 0);
    }
    // A chunk split over many reads is waited for with the data timeout.
    s.feed(START_BDAT);
    s.feed(b"BDAT 10 LAST\r\nabc");
    assert!(s.in_data() && s.in_transaction());
    let actions = s.feed(b"defghij");
    assert!(matches!(actions.last(), Some(Action::Deliver(_))));
    assert!(!s.in_data());
}

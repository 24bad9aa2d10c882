//! Fuzz target: the SMTP session state machine fed arbitrary bytes, with STARTTLS handshakes,
//! delivery results and timeouts simulated in any order; checks the replies and actions.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use sealpost::smtp::proto::{BareNewline, Reply, MAX_TEXT_LINE};
use sealpost::smtp::server::{Action, LocalPolicy, Session, SessionConfig};
use sealpost::tls::TlsFacts;

#[derive(Arbitrary, Debug)]
struct Input {
    normalize: bool,
    starttls_available: bool,
    relay_allowed: bool,
    small_limits: bool,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// Client bytes.
    Feed(Vec<u8>),
    /// Client bytes from a list of useful commands, to reach deep states quickly.
    Canned(u8),
    /// The TLS handshake completed.
    TlsDone,
    /// The queue answered the oldest delivery: queued, or a temporary failure.
    Delivered(bool),
    Timeout,
}

const CANNED: &[&[u8]] = &[
    b"EHLO client.test\r\n",
    b"HELO client.test\r\n",
    b"MAIL FROM:<carol@fabrikam.test>\r\n",
    b"MAIL FROM:<> SMTPUTF8 BODY=8BITMIME SIZE=50\r\n",
    b"RCPT TO:<alice@contoso.test>\r\n",
    b"RCPT TO:<bob@fabrikam.test>\r\n",
    b"DATA\r\n",
    b"\r\n.\r\n",
    b"STARTTLS\r\n",
    b"RSET\r\n",
    b"QUIT\r\n",
    b"EHLO c\r\nMAIL FROM:<c@f.test>\r\nRCPT TO:<alice@contoso.test>\r\nDATA\r\n",
    b"BDAT 5\r\nhello",
    b"BDAT 7 LAST\r\n.\r\nQUIT",
    b"BDAT 0 LAST\r\n",
    b"BDAT 300\r\n",
];

/// What the session asked for and not yet got.
#[derive(Default)]
struct Model {
    closed: bool,
    awaiting_tls: bool,
    awaiting_delivery: bool,
    tls: bool,
    /// Content passed on with `Data` since the last `Deliver` or `Discard`.
    content: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let config = SessionConfig {
        hostname: "mx.contoso.test".into(),
        max_message_size: if input.small_limits { 200 } else { 35_882_577 },
        max_recipients: if input.small_limits { 2 } else { 1000 },
        starttls_available: input.starttls_available,
        bare_newline: if input.normalize {
            BareNewline::Normalize
        } else {
            BareNewline::Reject
        },
        ..SessionConfig::default()
    };
    let policy = LocalPolicy::new(["contoso.test"], ["alice@contoso.test"]);
    let peer = ([198, 51, 100, 7], 40_000).into();
    let mut session = Session::new(
        Arc::new(config.clone()),
        Arc::new(policy.clone()),
        peer,
        input.relay_allowed,
    );
    let mut model = Model::default();
    let greeting = session.greeting();
    check(&greeting, &mut model, &config, &policy, input.relay_allowed);
    for op in &input.ops {
        let before_closed = model.closed;
        let actions = match op {
            Op::Feed(_) | Op::Canned(_) => {
                let bytes = match op {
                    Op::Canned(i) => CANNED[usize::from(*i) % CANNED.len()],
                    Op::Feed(bytes) => bytes.as_slice(),
                    _ => &[],
                };
                let waiting = model.awaiting_tls || model.awaiting_delivery;
                let actions = session.feed(bytes);
                assert!(
                    !waiting || actions.is_empty(),
                    "input acted on while waiting"
                );
                actions
            }
            Op::TlsDone => {
                let expected = model.awaiting_tls;
                let actions =
                    session.tls_established(TlsFacts::new("TLSv1.3", "TLS_AES_128_GCM_SHA256"));
                assert!(actions.is_empty());
                if expected {
                    model.awaiting_tls = false;
                    model.tls = true;
                }
                actions
            }
            Op::Delivered(ok) => {
                let expected = model.awaiting_delivery;
                let result = if *ok {
                    Ok("Q1".to_string())
                } else {
                    Err(Reply::new(451, [4, 3, 0], "Error: queue file write error"))
                };
                let actions = session.delivery_result(result);
                if expected {
                    model.awaiting_delivery = false;
                    let first = actions.first();
                    assert!(
                        matches!(first, Some(Action::Send(b)) if b.starts_with(if *ok { b"250 " } else { b"451 " }))
                    );
                } else {
                    assert!(actions.is_empty(), "unasked delivery result answered");
                }
                actions
            }
            Op::Timeout => {
                let actions = session.timeout();
                if !model.closed {
                    assert!(matches!(actions.last(), Some(Action::Close)));
                }
                actions
            }
        };
        assert!(!before_closed || actions.is_empty(), "actions after close");
        check(&actions, &mut model, &config, &policy, input.relay_allowed);
        assert_eq!(session.is_tls(), model.tls);
        // Message data is only read inside a transaction (the shutdown relies on it).
        assert!(!session.in_data() || session.in_transaction());
        assert!(!model.awaiting_delivery || session.in_transaction());
    }
});

/// Replies are well formed; StartTls, Deliver and Close come last; deliveries are acceptable.
fn check(
    actions: &[Action],
    model: &mut Model,
    config: &SessionConfig,
    policy: &LocalPolicy,
    relay_allowed: bool,
) {
    for (i, action) in actions.iter().enumerate() {
        let last = i + 1 == actions.len();
        match action {
            Action::Send(bytes) => well_formed(bytes),
            Action::StartTls => {
                assert!(last && config.starttls_available && !model.tls);
                model.awaiting_tls = true;
            }
            Action::Data(piece) => {
                assert!(!piece.is_empty() && !model.awaiting_delivery);
                model.content.extend_from_slice(piece);
                assert!(model.content.len() <= config.max_message_size);
            }
            Action::Discard => model.content.clear(),
            Action::Deliver(tx) => {
                assert!(last && !model.awaiting_delivery);
                model.awaiting_delivery = true;
                let data = std::mem::take(&mut model.content);
                assert_eq!(tx.size, data.len() as u64);
                assert!(!tx.rcpt_to.is_empty() && tx.rcpt_to.len() <= config.max_recipients);
                for rcpt in &tx.rcpt_to {
                    let local = policy.mailboxes.contains(&rcpt.to_ascii_lowercase());
                    assert!(local || relay_allowed, "relayed to {rcpt}");
                }
                assert!(data.len() <= config.max_message_size);
                assert_eq!(tx.tls.is_some(), model.tls);
                for (j, &b) in data.iter().enumerate() {
                    match b {
                        b'\r' => assert_eq!(data.get(j + 1), Some(&b'\n'), "bare CR"),
                        b'\n' => assert!(j > 0 && data[j - 1] == b'\r', "bare LF"),
                        _ => {}
                    }
                }
                assert!(data.split(|&b| b == b'\n').all(|l| l.len() < MAX_TEXT_LINE));
            }
            // This listener does not offer AUTH (`SessionConfig::auth` is false).
            Action::Authenticate(_) => panic!("credentials checked though AUTH is not offered"),
            Action::Close => {
                assert!(last);
                model.closed = true;
                model.awaiting_tls = false;
                model.awaiting_delivery = false;
                model.content.clear();
            }
        }
    }
}

/// Whole CRLF lines, each `ddd-` or `ddd ` with one code, the last one with a space.
fn well_formed(bytes: &[u8]) {
    let body = bytes.strip_suffix(b"\r\n").expect("reply ends in CRLF");
    let lines: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
    let mut code = None;
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        assert!(!line.contains(&b'\r'), "bare CR in reply {bytes:?}");
        assert!(
            line.len() >= 4 && line[..3].iter().all(u8::is_ascii_digit),
            "{bytes:?}"
        );
        assert!(matches!(line[3], b' ' | b'-'), "{bytes:?}");
        if line[3] == b' ' {
            code = None;
        } else if let Some(c) = code {
            assert_eq!(c, &line[..3], "{bytes:?}");
        } else {
            code = Some(&line[..3]);
        }
    }
    // Every LF was part of a CRLF.
    let crlf = bytes.windows(2).filter(|w| w == b"\r\n").count();
    assert_eq!(
        crlf,
        bytes.iter().filter(|&&b| b == b'\n').count(),
        "{bytes:?}"
    );
}

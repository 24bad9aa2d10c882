//! Drives the session with scripted conversations from `fixtures/conversations/*.txt`.
//!
//! Format, one directive per line (blank lines and `#` comments are ignored):
//! - `! key = value` — setup: hostname, relay_allowed, starttls_available, max_message_size,
//!   max_recipients, bare_newline (reject|normalize), local_domains, mailboxes (comma-separated),
//!   peer, auth (a submission listener), `user = NAME: ADDRESS, ...` (the senders a user owns),
//!   sender_login_mismatch (reject|allow), in_flight (the in-flight budget in bytes, shared by
//!   the script's sessions).
//! - `! connector = NAME: key=value; key=value; ...` — an inbound connector
//!   (`[[connector.inbound]]`): `sender_domains`, `client_networks` and
//!   `client_certificate_names` are comma-separated lists, `require_tls` a boolean, `ca_file` a
//!   path under `fixtures/` (e.g. `pki/ca.crt`). The connectors go through the configuration
//!   like `sealpost.toml`'s, and the script's policy is then a `ConnectorPolicy` around the
//!   `LocalPolicy` of the other settings.
//! - `C: text` — client bytes, `text` + CRLF; `C| text` — the same without CRLF. Consecutive
//!   `C` lines are one `feed` call. Escapes: `\r \n \t \\ \xHH`, and `\{N}c` = N times `c`.
//! - `S: text` — one expected server line; `[STARTTLS]`, `[DELIVER]`, `[CLOSE]`, `[AUTH NAME]`
//!   are the actions. Output so far must match the expectations so far before each feed and each
//!   `@` action.
//! - `@connect [ADDRESS:PORT]` — a new connection (from `peer`, or the address given) replaces
//!   the current one, whose deliveries must all have been answered; its greeting follows.
//! - `@tls VERSION CIPHER [cert=HOST]` (handshake done; with `cert=`, the client presented
//!   `fixtures/pki/HOST.crt`), `@timeout`, `@authenticated NAME` (the credentials of the pending
//!   `[AUTH NAME]` are good), `@auth-failed [CODE X.Y.Z text]` (they are not: by default the
//!   user check's `535 5.7.8 Error: authentication failed`), `@queued ID` /
//!   `@failed CODE X.Y.Z text` (answer the oldest `Deliver`, first checking `@from <a>`,
//!   `@rcpt <a> <b>`, `@protocol P`, `@flags 8BITMIME SMTPUTF8 REQUIRETLS|-`, `@size N`,
//!   `@dsn` (RET/ENVID, then `<rcpt>` NOTIFY/ORCPT each, in wire form), `@user NAME|-` (who
//!   authenticated), `@connector NAME|-` and `@connector-detail TEXT` (the inbound connector verdict made at
//!   MAIL FROM) and the `D:`/`D|` data lines given since the last answer). The content comes in
//!   `Data` actions before `Deliver`; a `Discard` drops what came so far.
//!
//! Each script runs fed as written, byte by byte, and in pseudo-random chunks: same transcript.

mod parse;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use super::inbound::{ConnectorPolicy, InboundConnectors};
use super::policy::{LocalPolicy, Policy};
use super::session::{Action, Session, SessionConfig};
use super::transaction::Transaction;
use crate::mail::Reply;
use crate::queue::InFlight;
use crate::tls::TlsFacts;

macro_rules! conversations {
    ($($name:ident),* $(,)?) => {
        $(#[test] fn $name() { run_fixture(stringify!($name)); })*
        const ALL: &[&str] = &[$(stringify!($name)),*];
    };
}

conversations!(
    basic,
    helo,
    bad_sequence,
    pipelining,
    long_lines,
    size_limits,
    recipients,
    relay_allowed,
    null_sender,
    dot_stuffing,
    smuggling,
    starttls,
    starttls_injection,
    starttls_refused,
    garbage,
    parameters,
    address_syntax,
    timeout,
    quit,
    delivery_failure,
    forbidden_commands,
    bare_lf,
    smtputf8,
    smuggling_normalize,
    bare_newline_reject,
    bare_newline_normalize,
    too_many_errors,
    in_flight,
    chunking,
    chunking_limits,
    sender_login,
    sender_login_allow,
    auth_plain,
    auth_login,
    connector_require_tls,
    connector_client_certificate,
    connector_network,
    auth_and_connector,
    requiretls,
);

/// What the delivered transaction must look like (unset fields are not checked).
#[derive(Default, Debug)]
struct Expect {
    from: Option<String>,
    rcpt: Option<Vec<String>>,
    protocol: Option<String>,
    flags: Option<Vec<String>>,
    size: Option<usize>,
    dsn: Option<String>,
    data: Option<Vec<u8>>,
    /// The authenticated user, `-` for none.
    user: Option<String>,
    /// The inbound connector's name, `-` for none.
    connector: Option<String>,
    connector_detail: Option<String>,
}

enum Step {
    Feed(Vec<u8>),
    Server(String),
    Connect(Option<SocketAddr>),
    Tls(Box<TlsFacts>),
    Timeout,
    Authenticated(String),
    AuthFailed(Reply),
    Answer(Result<String, Reply>, Box<Expect>),
}

struct Script {
    name: String,
    config: SessionConfig,
    relay_allowed: bool,
    peer: SocketAddr,
    policy: LocalPolicy,
    /// `[[connector.inbound]]` tables from `! connector` lines, and what they give.
    connectors: Vec<String>,
    inbound: Option<Arc<InboundConnectors>>,
    in_flight: Option<u64>,
    /// Steps with the fixture line number they came from.
    steps: Vec<(usize, Step)>,
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    Whole,
    Bytes,
    Chunks(u64),
}

fn run_fixture(name: &str) {
    let script = parse::parse_script(name);
    let whole = run(&script, Mode::Whole);
    for mode in [
        Mode::Bytes,
        Mode::Chunks(1),
        Mode::Chunks(7),
        Mode::Chunks(99),
    ] {
        assert_eq!(
            run(&script, mode),
            whole,
            "{name}: {mode:?} differs from Whole"
        );
    }
}

/// Runs the script in one feeding mode and returns the whole transcript.
fn run(script: &Script, mode: Mode) -> Vec<String> {
    let budget = script.in_flight.map(InFlight::new);
    let policy: Arc<dyn Policy> = match &script.inbound {
        Some(inbound) => Arc::new(ConnectorPolicy {
            local: script.policy.clone(),
            inbound: inbound.clone(),
        }),
        None => Arc::new(script.policy.clone()),
    };
    let connect = |peer: SocketAddr| {
        let session = Session::new(
            Arc::new(script.config.clone()),
            policy.clone(),
            peer,
            script.relay_allowed,
        );
        match &budget {
            Some(budget) => session.with_in_flight(budget.clone()),
            None => session,
        }
    };
    let mut session = connect(script.peer);
    let mut delivered = Sink::default();
    let mut actual = transcript(session.greeting(), &mut delivered);
    let mut expected = Vec::new();
    let mut rng = match mode {
        Mode::Chunks(seed) => seed,
        _ => 0,
    };
    for (line, step) in &script.steps {
        let at = format!("{}.txt:{line} ({mode:?})", script.name);
        if !matches!(step, Step::Server(_)) {
            compare(&actual, &expected, &at);
        }
        match step {
            Step::Server(text) => expected.push(text.clone()),
            Step::Feed(bytes) => {
                for chunk in split(bytes, mode, &mut rng) {
                    actual.extend(transcript(session.feed(chunk), &mut delivered));
                }
            }
            Step::Connect(peer) => {
                assert!(
                    delivered.delivered.is_empty(),
                    "{at}: a delivery of the previous connection was not answered"
                );
                session = connect(peer.unwrap_or(script.peer));
                delivered.content.clear();
                actual.extend(transcript(session.greeting(), &mut delivered));
            }
            Step::Tls(facts) => {
                let facts = TlsFacts::clone(facts);
                actual.extend(transcript(session.tls_established(facts), &mut delivered));
            }
            Step::Timeout => actual.extend(transcript(session.timeout(), &mut delivered)),
            Step::Authenticated(user) => {
                let actions = session.auth_result(Ok(user.clone()));
                actual.extend(transcript(actions, &mut delivered));
            }
            Step::AuthFailed(reply) => {
                let actions = session.auth_result(Err(reply.clone()));
                actual.extend(transcript(actions, &mut delivered));
            }
            Step::Answer(result, expect) => {
                let Some((tx, data)) = delivered.delivered.pop_front() else {
                    panic!("{at}: nothing was delivered");
                };
                check_transaction(&tx, &data, expect, &at);
                drop(tx);
                let actions = session.delivery_result(result.clone());
                actual.extend(transcript(actions, &mut delivered));
            }
        }
    }
    compare(
        &actual,
        &expected,
        &format!("{}.txt: end ({mode:?})", script.name),
    );
    drop(session);
    drop(delivered);
    if let Some(budget) = budget {
        assert_eq!(
            budget.used(),
            0,
            "{}: in-flight bytes left reserved",
            script.name
        );
    }
    actual
}

/// What the actions delivered: the content passed on so far, and the transactions handed over
/// with theirs.
#[derive(Default)]
struct Sink {
    content: Vec<u8>,
    delivered: VecDeque<(Box<Transaction>, Vec<u8>)>,
}

fn split<'a>(bytes: &'a [u8], mode: Mode, rng: &mut u64) -> Vec<&'a [u8]> {
    match mode {
        Mode::Whole => vec![bytes],
        Mode::Bytes => bytes.chunks(1).collect(),
        Mode::Chunks(_) => {
            let mut out = Vec::new();
            let mut rest = bytes;
            while !rest.is_empty() {
                // xorshift64*: deterministic, good enough to vary chunk sizes.
                *rng ^= *rng << 13;
                *rng ^= *rng >> 7;
                *rng ^= *rng << 17;
                let len = (*rng % 16 + 1) as usize;
                let (head, tail) = rest.split_at(len.min(rest.len()));
                out.push(head);
                rest = tail;
            }
            out
        }
    }
}

/// Actions as transcript lines; every `Send` must be whole CRLF lines of valid replies. `Data`
/// and `Discard` are not lines (how content is cut into pieces depends on the feeding).
fn transcript(actions: Vec<Action>, sink: &mut Sink) -> Vec<String> {
    let mut lines = Vec::new();
    for action in actions {
        match action {
            Action::Send(bytes) => {
                let text = String::from_utf8(bytes).unwrap_or_else(|e| panic!("not UTF-8: {e}"));
                let Some(body) = text.strip_suffix("\r\n") else {
                    panic!("reply without CRLF: {text:?}");
                };
                for line in body.split("\r\n") {
                    let code_ok = line
                        .get(..3)
                        .is_some_and(|c| matches!(c.parse(), Ok(200..=599)));
                    let sep_ok = matches!(line.as_bytes().get(3), Some(b' ' | b'-'));
                    assert!(
                        code_ok && sep_ok && !line.contains(['\r', '\n']),
                        "bad reply {line:?}"
                    );
                    lines.push(line.to_string());
                }
            }
            Action::StartTls => lines.push("[STARTTLS]".into()),
            Action::Data(piece) => {
                assert!(!piece.is_empty(), "empty Data action");
                sink.content.extend_from_slice(&piece);
            }
            Action::Discard => sink.content.clear(),
            Action::Deliver(tx) => {
                sink.delivered
                    .push_back((tx, std::mem::take(&mut sink.content)));
                lines.push("[DELIVER]".into());
            }
            Action::Authenticate(creds) => lines.push(format!("[AUTH {}]", creds.username)),
            Action::Close => {
                sink.content.clear();
                lines.push("[CLOSE]".into())
            }
        }
    }
    lines
}

fn compare(actual: &[String], expected: &[String], at: &str) {
    if actual != expected {
        let width = expected.iter().map(String::len).max().unwrap_or(0).min(60);
        let mut report = format!("{at}: transcript differs\n{:width$} | actual\n", "expected");
        for i in 0..actual.len().max(expected.len()) {
            let e = expected.get(i).map_or("", String::as_str);
            let a = actual.get(i).map_or("", String::as_str);
            let mark = if e == a { ' ' } else { '!' };
            report.push_str(&format!("{mark}{e:width$} | {a}\n"));
        }
        panic!("{report}");
    }
}

fn check_transaction(tx: &Transaction, data: &[u8], expect: &Expect, at: &str) {
    assert_eq!(
        tx.size,
        data.len() as u64,
        "{at}: size and content disagree"
    );
    let flags = [
        (tx.eight_bit, "8BITMIME"),
        (tx.smtputf8, "SMTPUTF8"),
        (tx.requiretls, "REQUIRETLS"),
    ]
    .iter()
    .filter(|(set, _)| *set)
    .map(|(_, name)| *name)
    .collect::<Vec<_>>()
    .join(" ");
    let show = |d: &[u8]| String::from_utf8_lossy(d).into_owned();
    let mut diffs = Vec::new();
    let mut check = |what: &str, expected: Option<String>, actual: String| match expected {
        Some(expected) if expected != actual => {
            diffs.push(format!(
                "{what}: expected {expected:?}\n{:w$}       got {actual:?}",
                "",
                w = what.len()
            ));
        }
        _ => {}
    };
    check("from", expect.from.clone(), tx.mail_from.clone());
    check(
        "rcpt",
        expect.rcpt.as_ref().map(|r| r.join(" ")),
        tx.rcpt_to.join(" "),
    );
    check(
        "protocol",
        expect.protocol.clone(),
        tx.protocol.as_str().to_string(),
    );
    check("flags", expect.flags.as_ref().map(|f| f.join(" ")), flags);
    check(
        "size",
        expect.size.map(|s| s.to_string()),
        data.len().to_string(),
    );
    let mut dsn = crate::mail::dsn::mail_params(tx.dsn.ret, tx.dsn.envid.as_deref());
    for (rcpt, params) in tx.rcpt_to.iter().zip(&tx.rcpt_dsn) {
        let params = crate::mail::dsn::rcpt_params(params);
        dsn.push_str(&format!(" <{rcpt}>{params}"));
    }
    check("dsn", expect.dsn.clone(), dsn.trim_start().to_string());
    check("data", expect.data.as_deref().map(show), show(data));
    let or_none = |v: Option<&str>| v.unwrap_or("-").to_string();
    check(
        "user",
        expect.user.clone(),
        or_none(tx.authenticated.as_deref()),
    );
    let inbound = tx.inbound.as_ref();
    check(
        "connector",
        expect.connector.clone(),
        or_none(inbound.map(|v| v.connector.as_str())),
    );
    check(
        "connector detail",
        expect.connector_detail.clone(),
        or_none(inbound.map(|v| v.detail.as_str())),
    );
    assert!(
        diffs.is_empty(),
        "{at}: delivered transaction differs\n{}",
        diffs.join("\n")
    );
}

#[test]
fn every_fixture_file_is_listed() {
    let dir = format!("{}/fixtures/conversations", env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter_map(|name| name.strip_suffix(".txt").map(str::to_string))
        .collect();
    files.sort();
    let mut listed: Vec<String> = ALL.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(files, listed);
}

#[test]
fn random_input_in_any_state_gets_only_well_formed_replies() {
    let prefixes: [&[u8]; 4] = [
        b"",
        b"EHLO x\r\n",
        b"EHLO x\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<alice@contoso.test>\r\n",
        b"EHLO x\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<alice@contoso.test>\r\nDATA\r\n",
    ];
    let alphabet = b"\r\n.\r\n:<>@ MAILFROMRCPTDATAehlo\x00\xff\xc3";
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        rng = rng
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (rng >> 33) as usize
    };
    let mut replies = 0;
    for round in 0..400 {
        let mut session = Session::new(
            Arc::new(SessionConfig::default()),
            Arc::new(LocalPolicy::new(["contoso.test"], ["alice@contoso.test"])),
            ([198, 51, 100, 1], 2525).into(),
            round % 2 == 0,
        );
        let mut delivered = Sink::default();
        let mut input = prefixes[round % prefixes.len()].to_vec();
        let len = next() % 3000;
        input.extend((0..len).map(|_| alphabet[next() % alphabet.len()]));
        let mut seed = round as u64 + 1;
        for chunk in split(&input, Mode::Chunks(seed), &mut seed) {
            replies += transcript(session.feed(chunk), &mut delivered).len();
            if delivered.delivered.pop_front().is_some() {
                replies +=
                    transcript(session.delivery_result(Ok("Q".into())), &mut delivered).len();
            }
        }
    }
    assert!(
        replies > 400,
        "the random input produced almost no replies: {replies}"
    );
}

#[test]
fn transaction_and_data_phases_are_reported_for_timeouts_and_shutdown() {
    let mut s = Session::new(
        Arc::new(SessionConfig::default()),
        Arc::new(LocalPolicy::new(["contoso.test"], ["alice@contoso.test"])),
        ([198, 51, 100, 1], 2525).into(),
        false,
    );
    let phase = |s: &Session| (s.in_transaction(), s.in_data());
    s.feed(b"EHLO x\r\n");
    assert_eq!(phase(&s), (false, false), "idle after EHLO");
    s.feed(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<alice@contoso.test>\r\n");
    assert_eq!(phase(&s), (true, false), "after MAIL");
    s.feed(b"DATA\r\nSubject: x\r\n");
    assert_eq!(phase(&s), (true, true), "in DATA");
    let actions = s.feed(b"\r\nbody\r\n.\r\n");
    assert!(matches!(actions.last(), Some(Action::Deliver(_))));
    assert_eq!(phase(&s), (true, false), "until the queue answers");
    s.delivery_result(Ok("Q1".into()));
    assert_eq!(phase(&s), (false, false), "after the 250");
    s.feed(b"MAIL FROM:<a@x.test>\r\nRSET\r\n");
    assert_eq!(phase(&s), (false, false), "RSET ends the transaction");
}

//! Drives the session with scripted conversations from `fixtures/conversations/*.txt`.
//!
//! Format, one directive per line (blank lines and `#` comments are ignored):
//! - `! key = value` — setup: hostname, relay_allowed, starttls_available, max_message_size,
//!   max_recipients, bare_newline (reject|normalize), local_domains, mailboxes (comma-separated),
//!   peer, auth (a submission listener), `user = NAME: ADDRESS, ...` (the senders a user owns),
//!   sender_login_mismatch (reject|allow), in_flight (the in-flight budget in bytes, shared by
//!   the script's sessions).
//! - `C: text` — client bytes, `text` + CRLF; `C| text` — the same without CRLF. Consecutive
//!   `C` lines are one `feed` call. Escapes: `\r \n \t \\ \xHH`, and `\{N}c` = N times `c`.
//! - `S: text` — one expected server line; `[STARTTLS]`, `[DELIVER]`, `[CLOSE]` are the actions.
//!   Output so far must match the expectations so far before each feed and each `@` action.
//! - `@tls VERSION CIPHER` (handshake done), `@timeout`, `@authenticated NAME` (the credentials of
//!   the pending `[AUTH NAME]` are good), `@queued ID` / `@failed CODE X.Y.Z text`
//!   (answer the oldest `Deliver`, first checking `@from <a>`, `@rcpt <a> <b>`, `@protocol P`,
//!   `@flags 8BITMIME SMTPUTF8|-`, `@size N`, `@dsn` (RET/ENVID, then `<rcpt>` NOTIFY/ORCPT each,
//!   in wire form) and the `D:`/`D|` data lines given since the last answer). The content comes
//!   in `Data` actions before `Deliver`; a `Discard` drops what came so far.
//!
//! Each script runs fed as written, byte by byte, and in pseudo-random chunks: same transcript.

use std::collections::VecDeque;
use std::sync::Arc;

use super::policy::LocalPolicy;
use super::session::{Action, Session, SessionConfig};
use super::transaction::Transaction;
use crate::auth::SenderLogins;
use crate::queue::InFlight;
use crate::smtp::proto::{BareNewline, Reply};
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
}

enum Step {
    Feed(Vec<u8>),
    Server(String),
    Tls(TlsFacts),
    Timeout,
    Authenticated(String),
    Answer(Result<String, Reply>, Box<Expect>),
}

struct Script {
    name: String,
    config: SessionConfig,
    relay_allowed: bool,
    peer: std::net::SocketAddr,
    policy: LocalPolicy,
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
    let script = parse_script(name);
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

fn parse_script(name: &str) -> Script {
    let path = format!(
        "{}/fixtures/conversations/{name}.txt",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut script = Script {
        name: name.to_string(),
        config: SessionConfig {
            hostname: "mx.contoso.test".into(),
            ..SessionConfig::default()
        },
        relay_allowed: false,
        peer: ([192, 0, 2, 10], 41000).into(),
        policy: LocalPolicy::new(["contoso.test"], ["alice@contoso.test", "bob@contoso.test"]),
        in_flight: None,
        steps: Vec::new(),
    };
    let mut expect = Expect::default();
    let mut feeding = false;
    for (index, line) in text.lines().enumerate() {
        let n = index + 1;
        let fail = |why: &str| -> ! { panic!("{path}:{n}: {why}: {line:?}") };
        let client = line.strip_prefix("C:").map(|t| (t, true));
        if let Some((rest, crlf)) = client.or_else(|| line.strip_prefix("C|").map(|t| (t, false))) {
            let mut bytes = unescape(rest.strip_prefix(' ').unwrap_or(rest));
            if crlf {
                bytes.extend_from_slice(b"\r\n");
            }
            match script.steps.last_mut() {
                Some((_, Step::Feed(pending))) if feeding => pending.extend(bytes),
                _ => script.steps.push((n, Step::Feed(bytes))),
            }
            feeding = true;
            continue;
        }
        feeding = false;
        let (head, arg) = line.split_once(' ').unwrap_or((line, ""));
        let words = || {
            arg.split_whitespace()
                .map(|w| w.trim_matches(['<', '>']).to_string())
        };
        match head {
            "" => {}
            _ if head.starts_with('#') => {}
            "S:" => script.steps.push((n, Step::Server(arg.to_string()))),
            "D:" | "D|" => {
                let data = expect.data.get_or_insert_with(Vec::new);
                data.extend(unescape(arg));
                if head == "D:" {
                    data.extend_from_slice(b"\r\n");
                }
            }
            "!" => set(&mut script, arg).unwrap_or_else(|| fail("bad setting")),
            "@tls" => {
                let (version, cipher) = arg.split_once(' ').unwrap_or_else(|| fail("@tls V C"));
                let facts = TlsFacts::new(version, cipher);
                script.steps.push((n, Step::Tls(facts)));
            }
            "@timeout" => script.steps.push((n, Step::Timeout)),
            "@authenticated" => script.steps.push((n, Step::Authenticated(arg.to_string()))),
            "@from" => {
                let path = arg
                    .trim()
                    .strip_prefix('<')
                    .and_then(|a| a.strip_suffix('>'));
                expect.from = Some(path.unwrap_or_else(|| fail("@from <address>")).to_string());
            }
            "@rcpt" => expect.rcpt = Some(words().collect()),
            "@protocol" => expect.protocol = Some(arg.to_string()),
            "@flags" => expect.flags = Some(words().filter(|w| w != "-").collect()),
            "@dsn" => expect.dsn = Some(arg.to_string()),
            "@size" => expect.size = Some(arg.parse().unwrap_or_else(|_| fail("@size N"))),
            "@queued" | "@failed" => {
                let result = if head == "@queued" {
                    Ok(arg.to_string())
                } else {
                    Err(parse_reply(arg).unwrap_or_else(|| fail("@failed CODE X.Y.Z text")))
                };
                let expect = Box::new(std::mem::take(&mut expect));
                script.steps.push((n, Step::Answer(result, expect)));
            }
            _ => fail("unknown directive"),
        }
    }
    script
}

fn set(script: &mut Script, arg: &str) -> Option<()> {
    let (key, value) = arg.split_once('=')?;
    let value = value.trim();
    let list = || value.split(',').map(str::trim).filter(|s| !s.is_empty());
    match key.trim() {
        "hostname" => script.config.hostname = value.to_string(),
        "relay_allowed" => script.relay_allowed = value.parse().ok()?,
        "starttls_available" => script.config.starttls_available = value.parse().ok()?,
        "max_message_size" => script.config.max_message_size = value.parse().ok()?,
        "max_recipients" => script.config.max_recipients = value.parse().ok()?,
        "bare_newline" => {
            script.config.bare_newline = match value {
                "reject" => BareNewline::Reject,
                "normalize" => BareNewline::Normalize,
                _ => return None,
            }
        }
        "local_domains" => {
            script.policy = LocalPolicy::new(list(), script.policy.mailboxes.clone())
        }
        "mailboxes" => script.policy.mailboxes = LocalPolicy::new(list(), list()).mailboxes,
        "peer" => script.peer = value.parse().ok()?,
        "in_flight" => script.in_flight = Some(value.parse().ok()?),
        "auth" => script.config.auth = value.parse().ok()?,
        "user" => {
            let (name, addresses) = value.split_once(':')?;
            let SenderLogins::Owned(owners) = &mut script.policy.senders else {
                return None;
            };
            owners.insert(
                name.trim().to_string(),
                addresses.split(',').map(|a| a.trim().to_string()).collect(),
            );
        }
        "sender_login_mismatch" => {
            if value != "allow" {
                return None;
            }
            script.policy.senders = SenderLogins::Any;
        }
        _ => return None,
    }
    Some(())
}

fn parse_reply(text: &str) -> Option<Reply> {
    let (code, rest) = text.split_once(' ')?;
    let (enhanced, text) = rest.split_once(' ')?;
    let parts: Vec<u16> = enhanced
        .split('.')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    Some(Reply::new(code.parse().ok()?, parts.try_into().ok()?, text))
}

/// `\r \n \t \\ \xHH` and `\{N}c` (the character `c`, N times).
fn unescape(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
            continue;
        }
        match chars.next() {
            Some('r') => out.push(b'\r'),
            Some('n') => out.push(b'\n'),
            Some('t') => out.push(b'\t'),
            Some('\\') => out.push(b'\\'),
            Some('x') => {
                let hex: String = chars.by_ref().take(2).collect();
                out.push(u8::from_str_radix(&hex, 16).unwrap_or_else(|_| panic!("bad \\x{hex}")));
            }
            Some('{') => {
                let count: String = chars.by_ref().take_while(|&c| c != '}').collect();
                let count: usize = count
                    .parse()
                    .unwrap_or_else(|_| panic!("bad \\{{{count}}}"));
                let what = chars
                    .next()
                    .unwrap_or_else(|| panic!("\\{{N}} needs a character"));
                out.extend(what.to_string().repeat(count).into_bytes());
            }
            other => panic!("unknown escape \\{other:?} in {text:?}"),
        }
    }
    out
}

/// Runs the script in one feeding mode and returns the whole transcript.
fn run(script: &Script, mode: Mode) -> Vec<String> {
    let budget = script.in_flight.map(InFlight::new);
    let mut session = Session::new(
        Arc::new(script.config.clone()),
        Arc::new(script.policy.clone()),
        script.peer,
        script.relay_allowed,
    );
    if let Some(budget) = &budget {
        session = session.with_in_flight(budget.clone());
    }
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
            Step::Tls(facts) => {
                actual.extend(transcript(
                    session.tls_established(facts.clone()),
                    &mut delivered,
                ));
            }
            Step::Timeout => actual.extend(transcript(session.timeout(), &mut delivered)),
            Step::Authenticated(user) => {
                let actions = session.auth_result(Ok(user.clone()));
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
    let flags = [(tx.eight_bit, "8BITMIME"), (tx.smtputf8, "SMTPUTF8")]
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

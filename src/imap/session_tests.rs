//! Scripted sessions without sockets, over a real encrypted store: what is refused before TLS
//! and before login, plaintext discarded across STARTTLS, SASL PLAIN, size limits, literals,
//! APPEND and EXISTS, and a revoked mailbox.

use std::path::Path;
use std::sync::Arc;

use super::session::{plain_response, Action, Session};
use super::SessionConfig;
use crate::auth::Credentials;
use crate::config::Config;
use crate::store::{EncryptedStore, Folders, MailStore};

fn config(dir: &Path) -> Config {
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    for k in ["a", "b", "c"] {
        crate::crypto::keyfile::generate_key_file(&keys.join(format!("{k}.key"))).unwrap();
    }
    let text = "[server]\nhostname = \"mx.t.test\"\ndata_dir = \"data\"\n\
         [[domain]]\nname = \"t.test\"\nencryption_policy = \"p\"\n\
         [[mailbox]]\naddress = \"a@t.test\"\n[[mailbox]]\naddress = \"b@t.test\"\n\
         [[encryption_policy]]\nname = \"p\"\nroot_keys = [\"keys/a.key\", \"keys/b.key\"]\n\
         availability_key = \"keys/c.key\"\n";
    let path = dir.join("t.toml");
    std::fs::write(&path, text).unwrap();
    Config::load(&path, None).unwrap()
}

struct Script {
    _dir: tempfile::TempDir,
    store: Arc<EncryptedStore>,
    session: Session,
}

impl Script {
    fn new(tls: bool) -> Script {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EncryptedStore::open(&config(dir.path()), "test").unwrap());
        let cfg = Arc::new(SessionConfig {
            hostname: "mx.t.test".into(),
            starttls: true,
            max_line: super::MAX_LINE,
            max_literal: 1000,
            mailboxes: [("a@t.test".to_string(), vec!["a@t.test".to_string()])].into(),
        });
        let session = Session::new(cfg, store.clone() as Arc<dyn Folders>, tls);
        Script {
            _dir: dir,
            store,
            session,
        }
    }

    /// Feeds a line; returns the actions, with what is sent joined as text.
    fn send(&mut self, input: &str) -> (String, Vec<Action>) {
        split(self.session.feed(input.as_bytes()))
    }

    fn login(&mut self) {
        let (_, actions) = self.send("a LOGIN a@t.test secret\r\n");
        assert!(matches!(&actions[..], [Action::Authenticate(c)] if c.username == "a@t.test"));
        let (text, _) = split(self.session.auth_result(Ok("a@t.test".into())));
        assert!(text.starts_with("a OK [CAPABILITY"), "{text}");
    }
}

fn split(actions: Vec<Action>) -> (String, Vec<Action>) {
    let mut text = String::new();
    let mut rest = Vec::new();
    for a in actions {
        match a {
            Action::Send(b) => text.push_str(&String::from_utf8_lossy(&b)),
            other => rest.push(other),
        }
    }
    (text, rest)
}

#[test]
fn before_tls_logins_are_refused_and_starttls_discards_what_follows() {
    let mut s = Script::new(false);
    let (text, _) = s.send("1 CAPABILITY\r\n");
    assert!(
        text.contains("STARTTLS") && text.contains("LOGINDISABLED"),
        "{text}"
    );
    assert!(!text.contains("AUTH=PLAIN"), "{text}");
    let (text, actions) = s.send("2 LOGIN a@t.test secret\r\n");
    assert_eq!(
        text,
        "2 NO [PRIVACYREQUIRED] LOGIN is disabled until STARTTLS\r\n"
    );
    assert!(actions.is_empty(), "no password check in clear");
    let (text, _) = s.send("3 AUTHENTICATE PLAIN\r\n");
    assert!(text.starts_with("3 NO [PRIVACYREQUIRED]"), "{text}");
    let (text, _) = s.send("4 SELECT INBOX\r\n");
    assert!(text.starts_with("4 BAD"), "{text}");

    // A command injected behind STARTTLS in the same packet is never answered.
    let (text, actions) = s.send("5 STARTTLS\r\n6 LOGIN a@t.test secret\r\n");
    assert_eq!(text, "5 OK Begin TLS negotiation now\r\n");
    assert!(matches!(&actions[..], [Action::StartTls]));
    s.session.tls_established();
    let (text, actions) = s.send("");
    assert!(text.is_empty() && actions.is_empty(), "{text} {actions:?}");
    let (text, _) = s.send("7 CAPABILITY\r\n");
    assert!(
        text.contains("AUTH=PLAIN") && !text.contains("LOGINDISABLED"),
        "{text}"
    );
}

#[test]
fn authenticate_plain_hands_the_credentials_over_and_reports_failure() {
    let mut s = Script::new(true);
    let (text, _) = s.send("1 AUTHENTICATE PLAIN\r\n");
    assert_eq!(text, "+ \r\n");
    let (_, actions) = s.send(&format!("{}\r\n", plain_response("a@t.test", "pw")));
    match &actions[..] {
        [Action::Authenticate(Credentials { username, password })] => {
            assert_eq!((username.as_str(), password.as_str()), ("a@t.test", "pw"));
        }
        other => panic!("{other:?}"),
    }
    let (text, _) = split(s.session.auth_result(Err(())));
    assert_eq!(
        text,
        "1 NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
    );
    assert!(s.session.user().is_none());
    let (_, actions) = s.send(&format!(
        "2 AUTHENTICATE PLAIN {}\r\n",
        plain_response("a@t.test", "pw")
    ));
    assert!(matches!(&actions[..], [Action::Authenticate(_)]));
    s.session.auth_result(Ok("a@t.test".into()));
    assert_eq!(s.session.user(), Some("a@t.test"));
}

#[test]
fn long_lines_and_large_literals_are_refused_and_the_session_goes_on() {
    let mut s = Script::new(true);
    s.login();
    let long = format!("1 NOOP {}\r\n", "x".repeat(super::MAX_LINE + 10));
    let (text, _) = s.send(&long);
    assert!(text.starts_with("1 BAD"), "{text}");
    let (text, _) = s.send("2 APPEND INBOX {5000}\r\n");
    assert!(text.starts_with("2 NO [TOOBIG]"), "{text}");
    assert!(!text.contains('+'), "no continuation for a refused literal");
    let (text, _) = s.send("3 NOOP\r\n");
    assert_eq!(text, "3 OK NOOP completed\r\n");
}

#[test]
fn appended_mail_is_announced_and_fetched() {
    let mut s = Script::new(true);
    s.login();
    let (text, _) = s.send("0 ENABLE IMAP4rev2 CONDSTORE\r\n");
    assert_eq!(text, "* ENABLED IMAP4rev2\r\n0 OK Completed\r\n");
    let (text, _) = s.send("1 SELECT INBOX\r\n");
    assert!(
        text.contains("* 0 EXISTS") && text.contains("1 OK [READ-WRITE]"),
        "{text}"
    );
    let msg = "Subject: hello\r\n\r\nbody\r\n";
    let (text, _) = s.send(&format!("2 APPEND INBOX (\\Flagged) {{{}}}\r\n", msg.len()));
    assert_eq!(text, "+ Ready\r\n");
    let (text, _) = s.send(&format!("{msg}\r\n"));
    assert!(
        text.contains("* 1 EXISTS") && text.contains("2 OK"),
        "{text}"
    );
    let (text, _) = s.send("3 FETCH 1 (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n");
    assert!(text.contains("FLAGS (\\Flagged)"), "{text}");
    assert!(text.contains("Subject: hello\r\n\r\n"), "{text}");
    s.store
        .deliver("a@t.test", b"Subject: two\r\n\r\nx\r\n")
        .unwrap();
    let (text, _) = s.send("4 NOOP\r\n");
    assert!(text.starts_with("* 2 EXISTS\r\n"), "{text}");
    let (text, _) = s.send("5 UID SEARCH UNFLAGGED\r\n");
    assert!(text.starts_with("* SEARCH 2\r\n"), "{text}");
    // Another session flags message 2: the next NOOP says so.
    let seen = crate::store::Flags {
        system: crate::store::folders::system::SEEN,
        ..Default::default()
    };
    s.store
        .set_flags("a@t.test", "INBOX", &[2], crate::store::FlagOp::Add, &seen)
        .unwrap();
    let (text, _) = s.send("6 NOOP\r\n");
    assert_eq!(
        text,
        "* 2 FETCH (FLAGS (\\Seen))\r\n6 OK NOOP completed\r\n"
    );
    let (text, _) = s.send("7 NOOP\r\n");
    assert_eq!(text, "7 OK NOOP completed\r\n", "told once");
}

#[test]
fn a_revoked_mailbox_answers_no() {
    let mut s = Script::new(true);
    s.login();
    s.store
        .deliver("a@t.test", b"Subject: x\r\n\r\nx\r\n")
        .unwrap();
    crate::store::ops::revoke_policy(&s.store, "p", true).unwrap();
    let (text, _) = s.send("1 SELECT INBOX\r\n");
    assert_eq!(text, "1 NO Mailbox unavailable: its keys were revoked\r\n");
}

#[test]
fn multipart_structure_and_part_sections() {
    let mut s = Script::new(true);
    s.login();
    let msg = "From: A <a@b.test>\r\nSubject: parts\r\nMIME-Version: 1.0\r\n\
               Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n\
               preamble\r\n--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhello text\r\n\
               --XX\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n\
               AAEC\r\n--XX--\r\n";
    s.session
        .store
        .append("a@t.test", "INBOX", msg.as_bytes(), &Default::default())
        .unwrap();
    s.send("1 SELECT INBOX\r\n");
    // The CRLF before a boundary belongs to the boundary (RFC 2046): BODY[1] is "hello text".
    let (text, _) = s.send("2 FETCH 1 (BODYSTRUCTURE)\r\n");
    assert!(
        text.contains(
            "BODYSTRUCTURE ((\"TEXT\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"7BIT\" 10 0)\
             (\"application\" \"octet-stream\" NIL NIL NIL \"BASE64\" 4) \"mixed\")"
        ),
        "{text}"
    );
    let (text, _) = s.send("3 FETCH 1 (BODY.PEEK[1] BODY.PEEK[2] BODY.PEEK[2.MIME])\r\n");
    assert!(
        text.contains("BODY[1] {10}\r\nhello text BODY[2]"),
        "{text}"
    );
    assert!(text.contains("BODY[2] {4}\r\nAAEC BODY[2.MIME]"), "{text}");
    assert!(
        text.contains("Content-Transfer-Encoding: base64\r\n\r\n"),
        "{text}"
    );
    let (text, _) = s.send("4 FETCH 1 (BODY.PEEK[3])\r\n");
    assert!(
        text.contains("BODY[3] {0}\r\n"),
        "a missing part is empty: {text}"
    );
    let (text, _) = s.send("5 COPY 1 Nowhere\r\n");
    assert!(text.starts_with("5 NO [TRYCREATE]"), "{text}");
}

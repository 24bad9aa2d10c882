//! IMAP over real TLS on loopback, driven by Python's imaplib (a client nobody here wrote):
//! STARTTLS and imaps logins, SELECT, FETCH of headers and bodies, flags, SEARCH, MOVE to Trash,
//! EXPUNGE, IDLE seeing new SMTP mail, plaintext logins refused, users kept out of each other's
//! mailboxes, wrong passwords delayed and logged, and nothing in clear in the data directory.

use crate::support;

use std::time::Duration;

use support::admin::{http, metric, serve_log};
use support::imap::{in_clear, json, Imap};

#[test]
fn a_client_reads_flags_moves_and_expunges_over_starttls_and_imaps() {
    let s = Imap::start();
    let out = s.python(
        r#"
send("alice@contoso.test", "first-subject", "BODYMARKER-one")
wait_for("alice@contoso.test", "alice-pw", 1)
send("alice@contoso.test", "second-subject", "BODYMARKER-two")
wait_for("alice@contoso.test", "alice-pw", 2)
out = {}
M = imaplib.IMAP4("127.0.0.1", IMAP)
out["caps_plain"] = sorted(M.capabilities)
M.starttls(ssl_context=ctx)
M.login("alice@contoso.test", "alice-pw")
typ, data = M.select("INBOX")
out["exists"] = int(data[0])
out["uidvalidity"] = M.untagged_responses.get("UIDVALIDITY", [b"0"])[0].decode()
typ, data = M.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
out["subject_header"] = data[0][1].decode()
typ, data = M.fetch("1:2", "(UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE BODYSTRUCTURE)")
out["meta"] = [d.decode() if isinstance(d, bytes) else d[0].decode() for d in data]
typ, data = M.fetch("1", "(FLAGS)")
out["flags_before"] = data[0].decode()
typ, data = M.fetch("1", "(BODY[TEXT])")
out["text"] = data[0][1].decode()
typ, data = M.fetch("1", "(BODY[]<0.5>)")
out["partial"] = data[0][1].decode()
typ, data = M.store("1", "+FLAGS", "(\\Flagged)")
out["store"] = data[0].decode()
out["seen"] = M.search(None, "SEEN")[1][0].decode()
out["unseen"] = M.search(None, "UNSEEN")[1][0].decode()
out["flagged"] = M.uid("SEARCH", "FLAGGED")[1][0].decode()
out["subject_search"] = M.search(None, "SUBJECT", "second")[1][0].decode()
out["from_search"] = M.search(None, "FROM", "carol@fabrikam")[1][0].decode()
out["list"] = [l.decode() for l in M.list()[1]]
typ, data = M.uid("MOVE", "2", "Trash")
out["move"] = typ
out["status"] = M.status("INBOX", "(MESSAGES UNSEEN)")[1][0].decode()
M.select("Trash")
M.store("1", "+FLAGS", "(\\Deleted)")
typ, data = M.expunge()
out["expunged"] = [d.decode() for d in data if d]
out["trash_after"] = int(M.select("Trash")[1][0])
M.logout()
M = imaplib.IMAP4_SSL("127.0.0.1", IMAPS, ssl_context=ctx)
M.login("alice@contoso.test", "alice-pw")
typ, data = M.select("INBOX", readonly=True)
out["exists_after"] = int(data[0])
out["uidvalidity_after"] = M.untagged_responses.get("UIDVALIDITY", [b"0"])[0].decode()
typ, data = M.fetch("1", "(FLAGS)")
out["flags_after"] = data[0].decode()
M.logout()
print(json.dumps(out))
"#,
    );
    let o = json(&out);
    let caps = o["caps_plain"].to_string();
    assert!(
        caps.contains("STARTTLS") && caps.contains("LOGINDISABLED"),
        "{caps}"
    );
    assert!(caps.contains("IMAP4REV2"), "{caps}");
    assert_eq!(o["exists"], 2);
    assert!(
        o["subject_header"]
            .as_str()
            .unwrap()
            .starts_with("Subject: first-subject"),
        "{o}"
    );
    let meta: Vec<&str> = o["meta"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    let meta = meta.join("\n");
    assert!(
        meta.contains("RFC822.SIZE") && meta.contains("INTERNALDATE"),
        "{meta}"
    );
    assert!(meta.contains("ENVELOPE (\"Sun, 06 Dec 2026 10:00:00 +0000\" \"first-subject\" ((\"Carol Sender\" NIL \"carol\" \"fabrikam.test\"))"), "envelope: {meta}");
    assert!(
        meta.to_ascii_uppercase()
            .contains("BODYSTRUCTURE (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\")"),
        "bodystructure: {meta}"
    );
    assert!(
        !o["flags_before"].as_str().unwrap().contains("\\Seen"),
        "{o}"
    );
    assert!(
        o["text"].as_str().unwrap().contains("BODYMARKER-one"),
        "{o}"
    );
    assert_eq!(o["partial"], "Recei", "BODY[]<0.5> is the first five bytes");
    let store = o["store"].as_str().unwrap();
    assert!(
        store.contains("\\Seen") && store.contains("\\Flagged"),
        "BODY[TEXT] set \\Seen: {store}"
    );
    assert_eq!(
        (o["seen"].as_str(), o["unseen"].as_str()),
        (Some("1"), Some("2"))
    );
    assert_eq!(o["flagged"], "1");
    assert_eq!(
        (o["subject_search"].as_str(), o["from_search"].as_str()),
        (Some("2"), Some("1 2"))
    );
    let list = o["list"].to_string();
    for f in ["INBOX", "\\\\Sent", "\\\\Drafts", "\\\\Trash", "\\\\Junk"] {
        assert!(list.contains(f), "LIST lacks {f}: {list}");
    }
    assert_eq!(o["move"], "OK");
    assert!(o["status"].as_str().unwrap().contains("MESSAGES 1"), "{o}");
    assert_eq!(o["expunged"], serde_json::json!(["1"]));
    assert_eq!(o["trash_after"], 0);
    assert_eq!(o["exists_after"], 1);
    assert_eq!(
        o["uidvalidity_after"], o["uidvalidity"],
        "UIDVALIDITY persists"
    );
    let flags = o["flags_after"].as_str().unwrap();
    assert!(
        flags.contains("\\Seen") && flags.contains("\\Flagged"),
        "flags persist: {flags}"
    );

    // The client read and flagged messages: their content is still nowhere in clear.
    for marker in ["BODYMARKER", "first-subject", "second-subject"] {
        let found = in_clear(&s.data, marker);
        assert!(found.is_empty(), "{marker} in clear in {found:?}");
    }
    drop(s.server);
}

#[test]
fn plaintext_logins_are_refused_and_users_stay_in_their_own_mailboxes() {
    let s = Imap::start();
    let out = s.python(
        r#"
send("bob@contoso.test", "for-bob-only", "BOBMARKER")
wait_for("bob@contoso.test", "bob-pw", 1)
out = {}
M = imaplib.IMAP4("127.0.0.1", IMAP)
try:
    M.login("alice@contoso.test", "alice-pw")
    out["plain"] = "accepted"
except imaplib.IMAP4.error as e:
    out["plain"] = str(e)
M.logout()
M = imaplib.IMAP4_SSL("127.0.0.1", IMAPS, ssl_context=ctx)
M.authenticate("PLAIN", lambda _: b"\0alice@contoso.test\0alice-pw")
out["selects"] = {}
for name in ["bob@contoso.test/INBOX", "bob@contoso.test", "../bob@contoso.test/INBOX"]:
    typ, data = M.select('"%s"' % name)
    out["selects"][name] = typ
out["own"] = M.select("INBOX")[0]
out["own_exists"] = int(M.select("INBOX")[1][0])
out["list"] = [l.decode() for l in M.list()[1]]
M.logout()
print(json.dumps(out))
"#,
    );
    let o = json(&out);
    assert!(
        o["plain"].as_str().unwrap().contains("PRIVACYREQUIRED"),
        "{o}"
    );
    for (name, typ) in o["selects"].as_object().unwrap() {
        assert_eq!(typ, "NO", "alice selected {name}");
    }
    assert_eq!(
        (o["own"].as_str(), o["own_exists"].as_i64()),
        (Some("OK"), Some(0))
    );
    assert!(!o["list"].to_string().contains("bob"), "{o}");
}

#[test]
fn wrong_passwords_are_delayed_and_logged_without_the_password() {
    let s = Imap::start();
    let out = s.python(
        r#"
out = {"delays": []}
for i in range(3):
    M = imaplib.IMAP4_SSL("127.0.0.1", IMAPS, ssl_context=ctx)
    t = time.monotonic()
    try:
        M.login("alice@contoso.test", "Wr0ngSecret%d" % i)
        out["delays"].append(-1)
    except imaplib.IMAP4.error as e:
        out["delays"].append(time.monotonic() - t)
        out["error"] = str(e)
    M.logout()
M = imaplib.IMAP4_SSL("127.0.0.1", IMAPS, ssl_context=ctx)
t = time.monotonic()
M.login("alice@contoso.test", "alice-pw")
out["ok_delay"] = time.monotonic() - t
M.logout()
print(json.dumps(out))
"#,
    );
    let o = json(&out);
    let delays: Vec<f64> = o["delays"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_f64().unwrap())
        .collect();
    assert!(
        o["error"]
            .as_str()
            .unwrap()
            .contains("AUTHENTICATIONFAILED"),
        "{o}"
    );
    for (i, d) in delays.iter().enumerate() {
        assert!(
            *d >= (i + 1) as f64 * 0.95,
            "failure {} answered after {d:.2}s",
            i + 1
        );
    }
    assert!(
        o["ok_delay"].as_f64().unwrap() < 1.0,
        "a right password is not delayed: {o}"
    );
    let log = support::admin::wait_log(
        &serve_log(&s.config),
        "IMAP login failed",
        3,
        Duration::from_secs(5),
    );
    assert!(log.contains("failures=3"), "{log}");
    assert!(!log.contains("Wr0ngSecret"), "a password reached the log");
    assert!(!s.log().contains("alice-pw"));
    let text = http(s.admin, "GET", "/metrics").body;
    let count = |name: &str, labels: &[(&str, &str)]| metric(&text, name, labels).unwrap_or(0.0);
    assert_eq!(
        count("sealpost_imap_logins_total", &[("result", "failed")]),
        3.0,
        "{text}"
    );
    assert_eq!(
        count("sealpost_imap_logins_total", &[("result", "ok")]),
        1.0
    );
    // Four logins, plus the probe that waited for the port.
    assert!(count("sealpost_imap_sessions_total", &[("listener", "imaps")]) >= 4.0);
    assert!(
        count("sealpost_imap_bytes_served_total", &[]) > 100.0,
        "{text}"
    );
}

#[test]
fn idle_sees_mail_delivered_over_smtp_within_two_seconds() {
    let s = Imap::start();
    let out = s.python(
        r#"
out = {}
M = imaplib.IMAP4("127.0.0.1", IMAP)
M.starttls(ssl_context=ctx)
M.login("alice@contoso.test", "alice-pw")
out["exists"] = int(M.select("INBOX")[1][0])
tag = M._new_tag()
M.send(tag + b" IDLE\r\n")
out["continuation"] = M.readline().decode().strip()
t = time.monotonic()
send("alice@contoso.test", "idle-subject", "IDLEMARKER")
line = M.readline().decode().strip()
out["news"] = line
out["after"] = time.monotonic() - t
M.send(b"DONE\r\n")
out["done"] = M.readline().decode().strip()
M.logout()
print(json.dumps(out))
"#,
    );
    let o = json(&out);
    assert_eq!(o["exists"], 0);
    assert!(o["continuation"].as_str().unwrap().starts_with('+'), "{o}");
    assert_eq!(o["news"], "* 1 EXISTS");
    assert!(o["after"].as_f64().unwrap() < 2.0, "{o}");
    assert!(o["done"].as_str().unwrap().contains("OK"), "{o}");
}

#[test]
fn a_session_in_idle_is_told_bye_and_does_not_hold_the_shutdown() {
    let mut s = Imap::start();
    let pid = s.server.child.id();
    let out = s.python(&format!(
        r#"
import subprocess
M = imaplib.IMAP4_SSL("127.0.0.1", IMAPS, ssl_context=ctx)
M.login("alice@contoso.test", "alice-pw")
M.select("INBOX")
tag = M._new_tag()
M.send(tag + b" IDLE\r\n")
M.readline()
t = time.monotonic()
subprocess.run(["kill", "-TERM", "{pid}"], check=True)
line = M.readline().decode().strip()
print(json.dumps({{"line": line, "after": time.monotonic() - t}}))
"#
    ));
    let o = json(&out);
    assert!(o["line"].as_str().unwrap().starts_with("* BYE"), "{o}");
    assert!(o["after"].as_f64().unwrap() < 2.0, "{o}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = s.server.child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "serve did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

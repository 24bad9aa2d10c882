//! A large message read over IMAP (Python's imaplib, real TLS on loopback) is sent from the store
//! piece by piece: whole, in ranges, with the items a client asks for alongside; and a blob
//! altered on disk gets a NO before any of its bytes are sent, the session going on.

use crate::support;

use std::path::{Path, PathBuf};

use support::admin::{http, metric};
use support::imap::{json, Imap};

/// Sends alice a small message, then one of about 3 MB (message 2 of her INBOX).
const SEND_LARGE: &str = r#"
send("alice@contoso.test", "small", "SMALLMARK")
wait_for("alice@contoso.test", "alice-pw", 1)
body = "".join("L%07d abcdefghijklmnopqrstuvwxyz0123456789 LARGEMARK\r\n" % i for i in range(60000))
msg = "From: carol@fabrikam.test\r\nTo: alice@contoso.test\r\nSubject: large\r\nMessage-ID: <large@fabrikam.test>\r\n\r\n" + body
s = smtplib.SMTP("127.0.0.1", SMTP, local_hostname="client.test", timeout=30)
s.sendmail("carol@fabrikam.test", ["alice@contoso.test"], msg.encode())
s.quit()
wait_for("alice@contoso.test", "alice-pw", 2)
"#;

fn streamed(s: &Imap) -> f64 {
    let body = http(s.admin, "GET", "/metrics").body;
    metric(&body, "sealpost_imap_streamed_messages_total", &[]).unwrap_or(0.0)
}

/// The largest blob file of the store (the large message's).
fn largest_blob(data: &Path) -> PathBuf {
    let mut files = Vec::new();
    let mut dirs = vec![data.join("store/blobs")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                files.push((e.metadata().unwrap().len(), p));
            }
        }
    }
    files.into_iter().max().expect("a blob").1
}

#[test]
fn a_large_message_is_streamed_whole_and_in_ranges_and_an_altered_one_gets_no() {
    let s = Imap::start();
    let out = s.python(&format!(
        "{SEND_LARGE}{}",
        r#"
out = {}
M = imaplib.IMAP4_SSL("127.0.0.1", IMAPS, ssl_context=ctx)
M.login("alice@contoso.test", "alice-pw")
M.select("INBOX")
typ, data = M.fetch("2", "(UID RFC822.SIZE FLAGS BODY.PEEK[])")
head, whole = data[0][0].decode(), data[0][1]
out["head"] = head
out["size"] = int(head.split("RFC822.SIZE ")[1].split()[0])
out["len"] = len(whole)
out["lines"] = whole.count(b"LARGEMARK\r\n")
out["last_line"] = whole.rstrip(b"\r\n").rsplit(b"\r\n", 1)[1].decode()
out["unseen_after_peek"] = M.search(None, "UNSEEN")[1][0].decode()
typ, data = M.fetch("2", "(BODY.PEEK[]<1000000.300000>)")
out["range_ok"] = data[0][1] == whole[1000000:1300000]
out["range_head"] = data[0][0].decode()
typ, data = M.fetch("2", "(BODY.PEEK[]<%d.1000>)" % (len(whole) - 10))
out["tail_ok"] = data[0][1] == whole[-10:]
typ, data = M.fetch("2", "(BODY.PEEK[]<%d.10>)" % (len(whole) + 5))
out["beyond"] = data[0][0].decode() if isinstance(data[0], tuple) else data[0].decode()
typ, data = M.fetch("2", "(RFC822)")
out["rfc822_same"] = data[0][1] == whole
out["seen_after_rfc822"] = M.search(None, "SEEN")[1][0].decode()
typ, data = M.fetch("1:2", "(BODY.PEEK[])")
out["both"] = [len(d[1]) for d in data if isinstance(d, tuple)]
M.logout()
print(json.dumps(out))
"#
    ));
    let o = json(&out);
    assert!(o["len"].as_u64().unwrap() > 3_000_000, "{o}");
    assert_eq!(o["len"], o["size"], "literal length is RFC822.SIZE: {o}");
    assert_eq!(o["lines"], 60000, "{o}");
    assert!(
        o["last_line"].as_str().unwrap().starts_with("L0059999 "),
        "{o}"
    );
    assert!(o["head"].as_str().unwrap().contains("UID 2"), "{o}");
    assert_eq!(
        o["unseen_after_peek"], "1 2",
        "PEEK leaves \\Seen unset: {o}"
    );
    assert_eq!(o["range_ok"], true, "{o}");
    assert!(
        o["range_head"]
            .as_str()
            .unwrap()
            .contains("BODY[]<1000000> {300000}"),
        "{o}"
    );
    assert_eq!(o["tail_ok"], true, "{o}");
    assert!(o["beyond"].as_str().unwrap().contains("{0}"), "{o}");
    assert_eq!(o["rfc822_same"], true, "{o}");
    assert_eq!(o["seen_after_rfc822"], "2", "{o}");
    let both = o["both"].as_array().unwrap();
    assert_eq!(both.len(), 2, "{o}");
    assert!(both[0].as_u64().unwrap() < 1000, "the small one: {o}");
    // Six FETCHes of the large message went out piece by piece (the small one did not).
    assert_eq!(streamed(&s), 6.0);

    // One byte of the blob altered on disk: the FETCH gets NO, nothing of the message is sent,
    // and the session goes on.
    let blob = largest_blob(&s.data);
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[1_500_000] ^= 0x20;
    std::fs::write(&blob, bytes).unwrap();
    let out = s.python(
        r#"
out = {}
M = imaplib.IMAP4_SSL("127.0.0.1", IMAPS, ssl_context=ctx)
M.login("alice@contoso.test", "alice-pw")
M.select("INBOX")
try:
    typ, data = M.fetch("2", "(BODY.PEEK[])")
    out["fetch"] = [typ, repr(data)[:200]]
except imaplib.IMAP4.error as e:
    out["fetch"] = ["error", str(e)]
typ, data = M.fetch("2", "(BODY.PEEK[]<0.1000>)")
out["before_damage"] = len(data[0][1])
typ, data = M.fetch("1", "(BODY.PEEK[TEXT])")
out["small"] = data[0][1].decode()
M.logout()
print(json.dumps(out))
"#,
    );
    let o = json(&out);
    let fetch = o["fetch"].to_string();
    assert!(fetch.contains("NO") || fetch.contains("error"), "{o}");
    assert!(!fetch.contains("LARGEMARK"), "no byte of it was sent: {o}");
    assert_eq!(
        o["before_damage"], 1000,
        "a range before the altered chunk still reads: {o}"
    );
    assert!(o["small"].as_str().unwrap().contains("SMALLMARK"), "{o}");
    assert!(
        s.log().contains("altered"),
        "the failure is logged as an integrity failure"
    );
}

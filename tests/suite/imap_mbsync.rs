//! A real mail client run non-interactively against the imaps listener: isync's `mbsync` syncs
//! alice's mailbox to a Maildir with the flags set over IMAP, and a flag set in the Maildir goes
//! back to the server (read again with imaplib).

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::domains::pki;
use support::imap::{json, Imap};

/// Runs `mbsync -a` with a configuration syncing alice's folders into `<dir>/mail`.
fn mbsync(s: &Imap, dir: &Path) -> String {
    let mail = dir.join("mail");
    std::fs::create_dir_all(&mail).unwrap();
    let rc = dir.join("mbsyncrc");
    std::fs::write(
        &rc,
        format!(
            "IMAPAccount alice\nHost 127.0.0.1\nPort {}\nUser alice@contoso.test\nPass alice-pw\n\
             SSLType IMAPS\nSystemCertificates no\nCertificateFile {}\n\n\
             IMAPStore remote\nAccount alice\n\n\
             MaildirStore local\nPath {}/\nInbox {}/INBOX\nSubFolders Verbatim\n\n\
             Channel alice\nFar :remote:\nNear :local:\nPatterns *\nCreate Near\nSync All\n\
             SyncState *\nExpunge None\n",
            s.imaps,
            pki().join("mx.contoso.test.crt").display(),
            mail.display(),
            mail.display(),
        ),
    )
    .unwrap();
    let out = Command::new("mbsync")
        .arg("-c")
        .arg(&rc)
        .arg("-a")
        .env("HOME", dir)
        .output()
        .expect("run mbsync (Debian package isync)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "mbsync failed:\n{text}");
    text
}

/// The Maildir file of INBOX holding `needle`.
fn find(mail: &Path, needle: &str) -> PathBuf {
    for sub in ["cur", "new"] {
        for e in std::fs::read_dir(mail.join("INBOX").join(sub)).unwrap() {
            let p = e.unwrap().path();
            if std::fs::read_to_string(&p).unwrap().contains(needle) {
                return p;
            }
        }
    }
    panic!("no message with {needle} in {}", mail.display());
}

fn maildir_flags(p: &Path) -> String {
    let name = p.file_name().unwrap().to_string_lossy().into_owned();
    name.rsplit_once(":2,")
        .map(|(_, f)| f.to_string())
        .unwrap_or_default()
}

#[test]
fn mbsync_sees_the_same_messages_and_flags_and_sends_flags_back() {
    let s = Imap::start();
    s.python(
        r#"
send("alice@contoso.test", "mbsync-one", "first body")
wait_for("alice@contoso.test", "alice-pw", 1)
send("alice@contoso.test", "mbsync-two", "second body")
wait_for("alice@contoso.test", "alice-pw", 2)
M = imaplib.IMAP4_SSL("127.0.0.1", IMAPS, ssl_context=ctx)
M.login("alice@contoso.test", "alice-pw")
M.select("INBOX")
M.store("1", "+FLAGS", "(\\Seen \\Flagged)")
M.logout()
"#,
    );
    let dir = tempfile::tempdir().unwrap();
    mbsync(&s, dir.path());
    let mail = dir.path().join("mail");
    let one = find(&mail, "Subject: mbsync-one");
    let two = find(&mail, "Subject: mbsync-two");
    assert_eq!(maildir_flags(&one), "FS", "{}", one.display());
    assert_eq!(maildir_flags(&two), "", "{}", two.display());
    for folder in ["Sent", "Drafts", "Trash", "Junk"] {
        assert!(mail.join(folder).is_dir(), "{folder} was not synced");
    }

    // Flag the second message in the Maildir (as a client would): the server learns it.
    let flagged = two
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("cur")
        .join(format!(
            "{}:2,F",
            two.file_name()
                .unwrap()
                .to_string_lossy()
                .split(":2,")
                .next()
                .unwrap()
        ));
    std::fs::rename(&two, &flagged).unwrap();
    mbsync(&s, dir.path());
    let out = s.python(
        r#"
M = imaplib.IMAP4_SSL("127.0.0.1", IMAPS, ssl_context=ctx)
M.login("alice@contoso.test", "alice-pw")
M.select("INBOX", readonly=True)
print(json.dumps({"flags": [d.decode() for d in M.fetch("1:2", "(FLAGS)")[1]]}))
M.logout()
"#,
    );
    let o = json(&out);
    assert_eq!(
        o["flags"],
        serde_json::json!(["1 (FLAGS (\\Seen \\Flagged))", "2 (FLAGS (\\Flagged))"]),
        "{o}"
    );
}

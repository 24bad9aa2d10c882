//! Messages are bound to their mailbox: a row moved to another mailbox in the index (within its
//! policy, across policies, onto a relabelled key row or a copied key wrap) fails as an integrity
//! error, never as plaintext, through the store and through the binary.

mod support;

use rusqlite::{params, Connection};
use sealpost::store::ops::{self, NoProgress};
use sealpost::store::{MailStore, StoreError};
use support::domains::sealpost;
use support::stores::{deliver, grep, message, StoreFixture, ALICE, BOSS, CAROL};

const SECRET: &str = "CAROL-SECRET-4b1d";

/// The index, opened directly as someone holding data_dir would.
fn index(f: &StoreFixture) -> Connection {
    Connection::open(f.data_dir.join("store/index.sqlite")).expect("open index")
}

fn key_id(c: &Connection, mailbox: &str) -> i64 {
    c.query_row(
        "SELECT id FROM mailbox_keys WHERE mailbox = ?1",
        [mailbox],
        |r| r.get(0),
    )
    .expect("mailbox key row")
}

fn exec(c: &Connection, sql: &str, p: impl rusqlite::Params) {
    let n = c.execute(sql, p).expect(sql);
    assert!(n > 0, "{sql}: no row changed");
}

/// One way of moving carol's message `id` into `to` by editing the index.
struct Tamper {
    what: &'static str,
    to: &'static str,
    edit: fn(&Connection, &str, &str),
}

fn move_row(c: &Connection, id: &str, to: &str) {
    exec(
        c,
        "UPDATE messages SET mailbox = ?2 WHERE id = ?1",
        params![id, to],
    );
}

fn relabel_keys(c: &Connection, id: &str, to: &str) {
    // The two key rows swap owners, so the moved row's key now says it is `to`'s.
    let (carol, other) = (key_id(c, CAROL), key_id(c, to));
    exec(
        c,
        "UPDATE mailbox_keys SET mailbox = ?2 WHERE id = ?1",
        params![carol, to],
    );
    exec(
        c,
        "UPDATE mailbox_keys SET mailbox = ?2 WHERE id = ?1",
        params![other, CAROL],
    );
    move_row(c, id, to);
}

fn copy_key_wrap(c: &Connection, id: &str, to: &str) {
    // `to`'s own key row gets carol's wrapped key (and policy key), and the row points at it.
    let carol = key_id(c, CAROL);
    let other = key_id(c, to);
    exec(
        c,
        "UPDATE mailbox_keys SET (policy_key_id, wrapped) =
           (SELECT policy_key_id, wrapped FROM mailbox_keys WHERE id = ?1) WHERE id = ?2",
        params![carol, other],
    );
    exec(
        c,
        "UPDATE messages SET mailbox = ?2, mailbox_key_id = ?3 WHERE id = ?1",
        params![id, to, other],
    );
}

const TAMPERS: &[Tamper] = &[
    Tamper {
        what: "moved within its policy",
        to: ALICE,
        edit: move_row,
    },
    Tamper {
        what: "moved across policies",
        to: BOSS,
        edit: move_row,
    },
    Tamper {
        what: "moved with the key rows' owners swapped",
        to: ALICE,
        edit: relabel_keys,
    },
    Tamper {
        what: "moved onto a key row holding a copy of carol's wrap",
        to: ALICE,
        edit: copy_key_wrap,
    },
    Tamper {
        what: "moved across policies onto a copy of carol's wrap",
        to: BOSS,
        edit: copy_key_wrap,
    },
];

/// Carol's secret message, and a message in each other encrypted mailbox (so they have keys).
fn setup(f: &StoreFixture) -> String {
    let store = f.store();
    deliver(&store, ALICE, &message("alice-own", 300));
    deliver(&store, BOSS, &message("boss-own", 300));
    deliver(&store, CAROL, &message(SECRET, 70_000))
}

/// Why an error is not the expected one: an integrity error about a binding, naming `id`, without
/// any of carol's plaintext. (A listing may stop at the mailbox's own message first, when the
/// tamper also changed that message's key row.)
fn wrong_error(e: &StoreError, id: Option<&str>) -> Option<String> {
    let text = e.to_string();
    let ok = matches!(e, StoreError::Integrity(_))
        && text.contains("not bound to")
        && id.is_none_or(|id| text.contains(id))
        && !text.contains(SECRET);
    (!ok).then_some(text)
}

/// Runs every tamper on a fresh store; `check` returns the problems it found. Collects them all,
/// so a failure names every variant that let the message through.
fn each_tamper(check: impl Fn(&StoreFixture, &Tamper, &str) -> Vec<String>) {
    let mut problems = Vec::new();
    for t in TAMPERS {
        let f = StoreFixture::new();
        let id = setup(&f);
        (t.edit)(&index(&f), &id, t.to);
        for p in check(&f, t, &id) {
            problems.push(format!("{}: {p}", t.what));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn a_message_moved_to_another_mailbox_does_not_read_through_the_store() {
    each_tamper(|f, t, id| {
        let mut problems = Vec::new();
        let store = f.store();
        match store.read(t.to, id) {
            Ok(bytes) => problems.push(format!("read gave {} bytes", bytes.len())),
            Err(e) => problems.extend(wrong_error(&e, Some(id)).map(|e| format!("read: {e}"))),
        }
        match store.list(t.to) {
            Ok(list) if list.iter().any(|m| m.subject.contains(SECRET)) => {
                problems.push("list shows carol's subject".into())
            }
            Ok(_) => problems.push("list succeeded".into()),
            Err(e) => problems.extend(wrong_error(&e, None).map(|e| format!("list: {e}"))),
        }
        let maildir = f.dir.path().join("export");
        match ops::export(&store, t.to, &maildir, &NoProgress) {
            Ok((_, p)) if p.iter().any(|p| p.contains(id) && !p.contains(SECRET)) => {}
            Ok((n, p)) => problems.push(format!("export wrote {n}: {p:?}")),
            Err(e) => problems.push(format!("export: {e}")),
        }
        if !grep(&maildir, SECRET.as_bytes()).is_empty() {
            problems.push("export wrote carol's message".into());
        }
        match ops::verify(&store, &NoProgress) {
            Ok(v)
                if v.failures
                    .iter()
                    .any(|l| l.contains(id) && l.contains("not bound to")) => {}
            Ok(v) => problems.push(format!("verify: {v:?}")),
            Err(e) => problems.push(format!("verify: {e}")),
        }
        problems
    });
}

#[test]
fn a_message_moved_to_another_mailbox_does_not_read_through_the_binary() {
    each_tamper(|f, t, id| {
        let mut problems = Vec::new();
        let c = f.config_arg();
        let (code, out, err) = sealpost(&[
            "mailbox",
            "read",
            "--config",
            c,
            "--mailbox",
            t.to,
            "--id",
            id,
        ]);
        if code != 1 || out.contains(SECRET) || err.contains(SECRET) {
            problems.push(format!(
                "mailbox read: exit {code}, {} bytes out",
                out.len()
            ));
        } else if !(err.contains("integrity error")
            && err.contains("not bound to")
            && err.contains(id))
        {
            problems.push(format!("mailbox read: {err}"));
        }
        let (code, out, err) = sealpost(&["mailbox", "list", "--config", c, "--mailbox", t.to]);
        if code != 1 || out.contains(SECRET) || err.contains(SECRET) {
            problems.push(format!("mailbox list: exit {code}: {out}"));
        } else if !err.contains("not bound to") {
            problems.push(format!("mailbox list: {err}"));
        }
        let (code, out, _) = sealpost(&["store", "verify", "--config", c]);
        if code != 1 || !out.contains(&format!("FAILED  {} {id}", t.to)) {
            problems.push(format!("store verify: exit {code}: {out}"));
        }
        problems
    });
}

#[test]
fn carols_own_messages_still_read_when_nothing_was_moved() {
    // The control for the tests above: the same setup, untouched, reads and verifies.
    let f = StoreFixture::new();
    let id = setup(&f);
    let store = f.store();
    assert_eq!(
        store.read(CAROL, &id).expect("read"),
        message(SECRET, 70_000)
    );
    assert_eq!(store.list(CAROL).expect("list")[0].id, id);
    let v = ops::verify(&store, &NoProgress).expect("verify");
    assert_eq!((v.checked, v.ok), (3, 3), "{v:?}");
}

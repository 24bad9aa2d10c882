//! Messages are bound to their mailbox: a row moved to another mailbox in the index (within its
//! policy, across policies, onto a relabelled key row or a copied key wrap) fails as an integrity
//! error, never as plaintext, through the store and through the binary. Messages stored in the
//! legacy form still read, are bound when the store opens, and the legacy form is refused after.

use crate::support;

use rusqlite::{params, Connection};
use sealpost::store::ops::{self, NoProgress};
use sealpost::store::{MailStore, StoreError};
use support::domains::sealpost;
use support::stores::{deliver, grep, message, LegacyWriter, StoreFixture, ALICE, BOSS, CAROL};

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
            Ok(e)
                if e.problems
                    .iter()
                    .any(|p| p.contains(id) && !p.contains(SECRET)) => {}
            Ok(e) => problems.push(format!("export wrote {}: {:?}", e.written, e.problems)),
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

/// The marker that makes a bound store refuse the legacy form.
fn marker(f: &StoreFixture) -> std::path::PathBuf {
    f.dir.path().join("data.keystore/store-bindings")
}

/// (wrap length, first byte) of every message's content key and every active mailbox key.
fn wrap_forms(c: &Connection) -> Vec<(String, usize, u8)> {
    let mut st = c
        .prepare(
            "SELECT 'message ' || id, wrapped_key FROM messages
             UNION ALL SELECT 'key of ' || mailbox, wrapped FROM mailbox_keys WHERE state = 'active'
             ORDER BY 1",
        )
        .expect("prepare");
    let rows = st
        .query_map([], |r| {
            let w: Vec<u8> = r.get(1)?;
            Ok((r.get::<_, String>(0)?, w.len(), w[0]))
        })
        .expect("query");
    rows.collect::<Result<_, _>>().expect("rows")
}

fn column(c: &Connection, sql: &str, mailbox: &str) -> Vec<u8> {
    c.query_row(sql, [mailbox], |r| r.get(0)).expect(sql)
}

/// A store holding carol's, alice's and boss's messages in the legacy form, not opened yet.
/// Mailbox, message id and message.
type Stored = (&'static str, String, Vec<u8>);

fn legacy_store() -> (StoreFixture, LegacyWriter, [Stored; 3]) {
    let f = StoreFixture::new();
    let mut legacy = LegacyWriter::new(&f);
    let msgs = [
        (CAROL, "p1", message(SECRET, 70_000)),
        (ALICE, "p1", message("alice-old", 300)),
        (BOSS, "p2", message("boss-old", 300)),
    ]
    .map(|(m, p, msg)| (m, legacy.deliver(&f, m, p, &msg), msg));
    (f, legacy, msgs)
}

#[test]
fn legacy_messages_read_and_are_bound_to_their_mailbox_when_the_store_opens() {
    let (f, _, msgs) = legacy_store();
    let blobs = f.blob_hashes();
    assert!(wrap_forms(&index(&f)).iter().all(|(_, len, _)| *len == 40));

    let store = f.store();
    for (m, id, msg) in &msgs {
        assert_eq!(&store.read(m, id).expect("read"), msg, "{m}");
        let subject = store.list(m).expect("list")[0].subject.clone();
        assert!(subject.starts_with("report "), "{m}: {subject}");
        assert!(
            msg.windows(subject.len()).any(|w| w == subject.as_bytes()),
            "{m}: {subject}"
        );
    }
    drop(store);
    // Opening bound every wrap to its mailbox, without rewriting a blob, and recorded it.
    let forms = wrap_forms(&index(&f));
    assert_eq!(forms.len(), 6, "{forms:?}");
    assert!(
        forms.iter().all(|(_, len, v)| (*len, *v) == (41, 2)),
        "{forms:?}"
    );
    assert_eq!(f.blob_hashes(), blobs, "no blob rewritten");
    assert!(marker(&f).is_file());
    let audit = std::fs::read_to_string(f.dir.path().join("data.keystore/audit.log")).expect("log");
    assert!(
        audit.contains("\"event\":\"rebind\"")
            && audit.contains("3 message(s) and 3 mailbox key(s) bound"),
        "{audit}"
    );
    let store = f.store();
    for (m, id, msg) in &msgs {
        assert_eq!(&store.read(m, id).expect("read"), msg, "{m}");
    }
    let v = ops::verify(&store, &NoProgress).expect("verify");
    assert_eq!((v.checked, v.ok), (3, 3), "{v:?}");
}

#[test]
fn a_bound_legacy_message_moved_to_another_mailbox_does_not_read() {
    for edit in [move_row, relabel_keys, copy_key_wrap] {
        let (f, _, msgs) = legacy_store();
        let carol = &msgs[0].1;
        drop(f.store()); // binds
        edit(&index(&f), carol, ALICE);
        let store = f.store();
        match store.read(ALICE, carol) {
            Ok(b) => panic!("read {} bytes", b.len()),
            Err(e) => assert!(wrong_error(&e, Some(carol)).is_none(), "{e}"),
        }
        assert!(store.list(ALICE).is_err());
    }
}

#[test]
fn the_legacy_form_put_back_into_a_bound_store_is_refused() {
    let (f, mut legacy, msgs) = legacy_store();
    let (carol, alice) = (&msgs[0].1, &msgs[1].1);
    let c = index(&f);
    let key_sql = "SELECT wrapped FROM mailbox_keys WHERE mailbox = ?1";
    let old_wrap = column(&c, key_sql, CAROL);
    drop(f.store()); // binds
    assert_ne!(column(&c, key_sql, CAROL), old_wrap);

    // A legacy row made with carol's real key after the store was bound (as a row restored from
    // an older copy of the index would be): refused in carol's mailbox, and moved.
    let spliced = legacy.deliver(&f, CAROL, "p1", &message("spliced", 200));
    let store = f.store();
    let e = store.read(CAROL, &spliced).expect_err("legacy row read");
    assert!(wrong_error(&e, Some(&spliced)).is_none(), "{e}");
    assert!(e.to_string().contains("legacy form"), "{e}");
    assert!(store.list(CAROL).is_err());
    assert_eq!(
        store.read(CAROL, carol).expect("read"),
        message(SECRET, 70_000)
    );
    let v = ops::verify(&store, &NoProgress).expect("verify");
    assert!(v.failures.iter().any(|l| l.contains(&spliced)), "{v:?}");
    assert_eq!(v.ok, 3, "{v:?}");
    drop(store);
    move_row(&c, &spliced, ALICE);
    assert!(f.store().read(ALICE, &spliced).is_err());
    // Reopening does not bind it: the keystore says the store is bound.
    assert_eq!(
        column(
            &c,
            "SELECT wrapped_key FROM messages WHERE id = ?1",
            &spliced
        )
        .len(),
        40
    );

    // Carol's key row given back its legacy wrap: refused too.
    exec(
        &c,
        "UPDATE mailbox_keys SET wrapped = ?2 WHERE mailbox = ?1",
        params![CAROL, old_wrap],
    );
    let store = f.store();
    let e = store.read(CAROL, carol).expect_err("legacy key read");
    assert!(matches!(e, StoreError::Integrity(_)), "{e}");
    assert!(e.to_string().contains("legacy form"), "{e}");
    assert!(store.read(ALICE, alice).is_ok());
}

#[test]
fn binding_waits_for_keys_that_are_unavailable() {
    let (f, _, msgs) = legacy_store();
    let config = f.config();
    let hidden = ["p2-a.key", "p2-b.key", "p2-availability.key"];
    for k in hidden {
        std::fs::rename(f.key(k), f.key(&format!("{k}.hidden"))).expect("hide");
    }
    let store = sealpost::store::EncryptedStore::open(&config, "test").expect("open");
    let forms = wrap_forms(&index(&f));
    let unbound: Vec<&str> = forms
        .iter()
        .filter(|(_, len, _)| *len == 40)
        .map(|(what, _, _)| what.as_str())
        .collect();
    assert_eq!(
        unbound,
        [format!("key of {BOSS}"), format!("message {}", msgs[2].1)],
        "{forms:?}"
    );
    assert!(
        !marker(&f).exists(),
        "not bound while boss's keys are missing"
    );
    let r = store.rebinding();
    assert_eq!(
        (r.messages, r.mailbox_keys, r.complete),
        (2, 2, false),
        "{r:?}"
    );
    assert_eq!(r.pending.len(), 2, "{r:?}");
    assert!(
        r.pending
            .iter()
            .all(|p| p.contains(BOSS) && p.contains("policy p2")),
        "{r:?}"
    );
    assert_eq!(store.read(CAROL, &msgs[0].1).expect("read"), msgs[0].2);
    assert!(matches!(
        store.read(BOSS, &msgs[2].1),
        Err(StoreError::KeyUnavailable { .. })
    ));
    drop(store);

    for k in hidden {
        std::fs::rename(f.key(&format!("{k}.hidden")), f.key(k)).expect("restore");
    }
    let store = f.store();
    let r = store.rebinding();
    assert_eq!(
        (r.messages, r.mailbox_keys, r.complete),
        (1, 1, true),
        "{r:?}"
    );
    assert!(r.pending.is_empty() && r.failed.is_empty(), "{r:?}");
    assert!(wrap_forms(&index(&f)).iter().all(|(_, len, _)| *len == 41));
    assert!(marker(&f).is_file());
    assert_eq!(store.read(BOSS, &msgs[2].1).expect("read"), msgs[2].2);
}

#[test]
fn verify_names_each_moved_message_in_its_own_failure() {
    let f = StoreFixture::new();
    let ids = setup_two(&f);
    let c = index(&f);
    for id in &ids {
        move_row(&c, id, ALICE);
    }
    let v = ops::verify(&f.store(), &NoProgress).expect("verify");
    assert_eq!(v.failures.len(), 2, "{v:?}");
    for (line, (mine, other)) in v.failures.iter().zip([(0, 1), (1, 0)]) {
        let (mine, other) = (&ids[mine], &ids[other]);
        assert!(
            line.starts_with(&format!("{ALICE} {mine}: ")) && !line.contains(other.as_str()),
            "{line}"
        );
        assert!(line.contains("not bound to mailbox"), "{line}");
    }
}

/// Two messages of carol's, and one of alice's.
fn setup_two(f: &StoreFixture) -> [String; 2] {
    let store = f.store();
    deliver(&store, ALICE, &message("alice-own", 300));
    [1, 2].map(|i| deliver(&store, CAROL, &message(&format!("{SECRET}-{i}"), 300)))
}

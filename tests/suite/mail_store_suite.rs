//! The mail store suite: what every `MailStore` must do, seen only through the trait. The store is
//! named by `SEALPOST_MAIL_STORE_BACKEND` (default `encrypted`; also `maildir`); each test starts
//! from an empty store.

use crate::support;

use std::path::PathBuf;

use sealpost::store::{EncryptedStore, MailStore, PlainMaildirStore, StoreError};
use support::stores::{message, StoreFixture, ALICE, CAROL, PLAIN};

const BACKEND_VAR: &str = "SEALPOST_MAIL_STORE_BACKEND";
const KNOWN: &[&str] = &["encrypted", "maildir"];

/// An empty store of one backend, which can be opened again as a new process would.
struct Backend {
    name: &'static str,
    fixture: StoreFixture,
}

impl Backend {
    fn open(&self) -> Box<dyn MailStore> {
        match self.name {
            "encrypted" => Box::new(
                EncryptedStore::open(&self.fixture.config(), "test")
                    .unwrap_or_else(|e| panic!("{e}")),
            ),
            _ => Box::new(PlainMaildirStore::new(&self.data_dir())),
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.fixture.data_dir.clone()
    }
}

fn backend() -> Backend {
    let name = std::env::var(BACKEND_VAR).unwrap_or_else(|_| "encrypted".into());
    let name = match KNOWN.iter().find(|k| **k == name) {
        Some(k) => *k,
        None => panic!(
            "{BACKEND_VAR}={name}: no such mail store backend (known: {})",
            KNOWN.join(", ")
        ),
    };
    eprintln!("mail store backend: {name}");
    Backend {
        name,
        fixture: StoreFixture::new(),
    }
}

fn ids(store: &dyn MailStore, mailbox: &str) -> Vec<String> {
    store
        .list(mailbox)
        .unwrap_or_else(|e| panic!("list {mailbox}: {e}"))
        .into_iter()
        .map(|s| s.id)
        .collect()
}

#[test]
fn delivered_messages_are_listed_read_and_counted() {
    let b = backend();
    let store = b.open();
    let store = &*store;
    assert!(store.list(ALICE).unwrap().is_empty());
    assert_eq!(store.count(ALICE).unwrap(), 0);
    let (m1, m2) = (message("one", 300), message("two", 900));
    let id1 = store.deliver(ALICE, &m1).unwrap();
    let id2 = store.deliver(ALICE, &m2).unwrap();
    assert_ne!(id1, id2);
    let list = store.list(ALICE).unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(
        (list[0].id.as_str(), list[1].id.as_str()),
        (&*id1, &*id2),
        "oldest first"
    );
    assert_eq!(list[0].subject, "report one");
    assert_eq!(list[0].from, "s@b.test");
    assert!(
        list[0].date.starts_with("2026-11-22T10:00:00"),
        "{}",
        list[0].date
    );
    assert_eq!(list[1].size, m2.len() as u64);
    assert_eq!(store.read(ALICE, &id1).unwrap(), m1);
    assert_eq!(store.read(ALICE, &id2).unwrap(), m2);
    assert_eq!(store.count(ALICE).unwrap(), 2);
    // Mailbox names are addresses: case does not make another mailbox.
    let id3 = store
        .deliver("Alice@A.TEST", b"Subject: 3\r\n\r\nx\r\n")
        .unwrap();
    assert_eq!(ids(store, ALICE), vec![id1, id2, id3.clone()]);
    assert_eq!(
        store.read("ALICE@a.test", &id3).unwrap(),
        b"Subject: 3\r\n\r\nx\r\n"
    );
}

#[test]
fn deliver_once_stores_a_key_once_per_mailbox() {
    let b = backend();
    let store = b.open();
    let store = &*store;
    let m = message("once", 500);
    let id = store.deliver_once(ALICE, &m, "Q1/alice@a.test").unwrap();
    assert_eq!(
        store.deliver_once(ALICE, &m, "Q1/alice@a.test").unwrap(),
        id,
        "the same key returns the first id"
    );
    assert_eq!(store.count(ALICE).unwrap(), 1);
    assert_eq!(store.read(ALICE, &id).unwrap(), m);

    let other = store.deliver_once(ALICE, &m, "Q2/alice@a.test").unwrap();
    assert_ne!(other, id, "another key is another delivery");
    assert_eq!(ids(store, ALICE), vec![id.clone(), other]);
    // Keys are per mailbox.
    let carol = store.deliver_once(CAROL, &m, "Q1/alice@a.test").unwrap();
    assert_eq!(ids(store, CAROL), vec![carol]);
    // A plain `deliver` is not held back by a key.
    store.deliver(ALICE, &m).unwrap();
    assert_eq!(store.count(ALICE).unwrap(), 3);
}

#[test]
fn deliveries_and_their_keys_survive_reopening() {
    let b = backend();
    let (m, key) = (message("durable", 700), "Q9/plain@a.test");
    let id = {
        let store = b.open();
        store.deliver_once(PLAIN, &m, key).unwrap()
    };
    let store = b.open();
    assert_eq!(store.read(PLAIN, &id).unwrap(), m);
    assert_eq!(
        store.deliver_once(PLAIN, &m, key).unwrap(),
        id,
        "a redelivery after a restart is not stored again"
    );
    assert_eq!(ids(&*store, PLAIN), vec![id]);
}

#[test]
fn mailboxes_are_isolated() {
    let b = backend();
    let store = b.open();
    let store = &*store;
    let a = store.deliver(ALICE, &message("for alice", 200)).unwrap();
    let c = store.deliver(CAROL, &message("for carol", 200)).unwrap();
    assert_eq!(ids(store, ALICE), vec![a.clone()]);
    assert_eq!(ids(store, CAROL), vec![c.clone()]);
    assert_eq!(store.count(PLAIN).unwrap(), 0);
    assert!(matches!(
        store.read(CAROL, &a),
        Err(StoreError::NoSuchMessage { .. })
    ));
    assert!(matches!(
        store.read(ALICE, &c),
        Err(StoreError::NoSuchMessage { .. })
    ));
}

#[test]
fn a_large_message_comes_back_byte_for_byte() {
    let b = backend();
    let store = b.open();
    let mut m = message("large", 0);
    // Over 5 MiB, not a multiple of anything, every byte value.
    m.extend((0..5 * 1024 * 1024 + 4099).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    let id = store.deliver(ALICE, &m).unwrap();
    let back = store.read(ALICE, &id).unwrap();
    assert_eq!(back.len(), m.len());
    assert!(back == m, "content differs");
    let list = store.list(ALICE).unwrap();
    assert_eq!(
        (list[0].size, list[0].subject.as_str()),
        (m.len() as u64, "report large")
    );
}

#[test]
fn reading_an_unknown_message_is_an_error() {
    let b = backend();
    let store = b.open();
    let id = store.deliver(ALICE, &message("known", 100)).unwrap();
    for unknown in ["0123456789ABCDEF", "", "../../etc/passwd"] {
        assert!(
            matches!(
                store.read(ALICE, unknown),
                Err(StoreError::NoSuchMessage { .. })
            ),
            "{unknown:?}"
        );
    }
    // Not found in a mailbox that has no messages either.
    assert!(store.read(CAROL, &id).is_err());
}

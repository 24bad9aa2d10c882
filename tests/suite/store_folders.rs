//! Folders, UIDs and flags of the encrypted store, seen through the `Folders` trait: persistent
//! UIDVALIDITY, strictly increasing UIDs, flags and moves as index metadata, copies sealed anew,
//! nothing in clear on disk, and a revoked mailbox refused plainly.

use crate::support;

use sealpost::store::folders::{system, INBOX};
use sealpost::store::ops;
use sealpost::store::{FlagOp, Flags, Folders, MailStore, StoreError};
use support::stores::{deliver, grep, message, StoreFixture, ALICE, CAROL};

fn uids(store: &dyn Folders, folder: &str) -> Vec<u32> {
    store
        .select(ALICE, folder)
        .unwrap_or_else(|e| panic!("select {folder}: {e}"))
        .messages
        .iter()
        .map(|m| m.uid)
        .collect()
}

fn flag(bit: i64) -> Flags {
    Flags {
        system: bit,
        ..Flags::default()
    }
}

#[test]
fn uids_are_strictly_increasing_and_uidvalidity_persists() {
    let f = StoreFixture::new();
    let store = f.store();
    for i in 0..3 {
        deliver(&store, ALICE, &message(&format!("m{i}"), 200));
    }
    store.ensure_default_folders(ALICE).unwrap();
    let names: Vec<String> = store
        .folders(ALICE)
        .unwrap()
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert_eq!(names, ["INBOX", "Drafts", "Junk", "Sent", "Trash"]);
    let trash = store
        .folders(ALICE)
        .unwrap()
        .into_iter()
        .find(|f| f.name == "Trash")
        .unwrap();
    assert_eq!(trash.special.as_deref(), Some("\\Trash"));
    let inbox = store.select(ALICE, "inbox").unwrap();
    assert_eq!((inbox.name.as_str(), inbox.uid_next), (INBOX, 4));
    assert_eq!(uids(&store, INBOX), [1, 2, 3]);

    // Moving keeps the message (same bytes) under a new UID in the target; UIDs are not reused.
    let moved = store.move_to(ALICE, INBOX, &[2], "Trash").unwrap();
    assert_eq!(moved, [(2, 1)]);
    assert_eq!(uids(&store, INBOX), [1, 3]);
    assert_eq!(
        store.message(ALICE, "Trash", 1).unwrap(),
        message("m1", 200)
    );
    deliver(&store, ALICE, &message("m3", 200));
    assert_eq!(uids(&store, INBOX), [1, 3, 4]);
    assert!(
        store.message(ALICE, INBOX, 2).is_err(),
        "a moved UID is gone from its folder"
    );

    // Another process sees the same UIDVALIDITY; a folder made again gets a new, higher one.
    let again = f.store();
    assert_eq!(
        again.select(ALICE, INBOX).unwrap().uid_validity,
        inbox.uid_validity
    );
    let old = again.select(ALICE, "Junk").unwrap().uid_validity;
    again.delete_folder(ALICE, "Junk").unwrap();
    again.create_folder(ALICE, "Junk").unwrap();
    assert!(again.select(ALICE, "Junk").unwrap().uid_validity > old);
    assert!(again.delete_folder(ALICE, "INBOX").is_err());
    again.rename_folder(ALICE, "Junk", "Spam").unwrap();
    assert!(again.select(ALICE, "Junk").is_err());
    assert!(again.select(ALICE, "Spam").unwrap().messages.is_empty());
}

#[test]
fn flags_copies_and_expunge() {
    let f = StoreFixture::new();
    let store = f.store();
    let id = deliver(&store, ALICE, &message("keep", 300));
    deliver(&store, ALICE, &message("gone", 300));
    store.ensure_default_folders(ALICE).unwrap();

    let mut label = flag(system::SEEN | system::FLAGGED);
    label.keywords.insert("$Label1".into());
    let changed = store
        .set_flags(ALICE, INBOX, &[1], FlagOp::Add, &label)
        .unwrap();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].flags, label);
    let after = store
        .set_flags(ALICE, INBOX, &[1], FlagOp::Remove, &flag(system::FLAGGED))
        .unwrap();
    assert!(after[0].flags.has(system::SEEN) && !after[0].flags.has(system::FLAGGED));
    assert!(
        after[0].modseq > changed[0].modseq,
        "each change has a new modseq"
    );
    assert_eq!(after[0].flags.keywords.len(), 1);

    // A copy is a new message with the same bytes and flags; the original stays.
    let copied = store.copy(ALICE, INBOX, &[1], "Sent").unwrap();
    assert_eq!(copied, [(1, 1)]);
    let sent = store.select(ALICE, "Sent").unwrap();
    assert_eq!(sent.messages[0].flags, after[0].flags);
    assert_eq!(
        store.message(ALICE, "Sent", 1).unwrap(),
        message("keep", 300)
    );
    assert_eq!(store.count(ALICE).unwrap(), 3);
    assert!(store.copy(ALICE, INBOX, &[1], "Nowhere").is_err());

    // Only messages flagged \Deleted go, and only those asked for with UID EXPUNGE.
    store
        .set_flags(ALICE, INBOX, &[1, 2], FlagOp::Add, &flag(system::DELETED))
        .unwrap();
    assert_eq!(store.expunge(ALICE, INBOX, Some(&[2])).unwrap(), [2]);
    assert_eq!(uids(&store, INBOX), [1]);
    assert_eq!(store.expunge(ALICE, INBOX, None).unwrap(), [1]);
    assert!(uids(&store, INBOX).is_empty());
    assert!(
        store.read(ALICE, &id).is_err(),
        "an expunged message is gone from the store"
    );
    assert_eq!(store.count(ALICE).unwrap(), 1);

    let (validity, uid) = store
        .append(
            ALICE,
            "Drafts",
            &message("draft", 100),
            &flag(system::DRAFT),
        )
        .unwrap();
    assert_eq!(
        validity,
        store.select(ALICE, "Drafts").unwrap().uid_validity
    );
    assert_eq!(store.select(ALICE, "Drafts").unwrap().messages[0].uid, uid);
    assert!(store.select(ALICE, "Drafts").unwrap().messages[0]
        .flags
        .has(system::DRAFT));

    // Folder names and flags are index metadata; message content stays sealed.
    for marker in ["keep", "draft"] {
        let found = grep(&f.data_dir, format!("body {marker}").as_bytes());
        assert!(found.is_empty(), "{marker} in clear in {found:?}");
    }
}

#[test]
fn a_revoked_mailbox_is_refused_plainly() {
    let f = StoreFixture::new();
    let store = f.store();
    deliver(&store, ALICE, &message("a", 100));
    deliver(&store, CAROL, &message("c", 100));
    assert_eq!(uids(&store, INBOX), [1]);
    ops::revoke_policy(&store, "p1", true).unwrap();
    for e in [
        store.select(ALICE, INBOX).unwrap_err(),
        store.message(ALICE, INBOX, 1).unwrap_err(),
        store.folders(CAROL).unwrap_err(),
    ] {
        assert!(matches!(e, StoreError::Revoked { .. }), "{e}");
    }
    assert!(matches!(
        store.select("nobody@a.test", INBOX),
        Err(StoreError::NoSuchMailbox(_))
    ));
}

#[test]
fn folders_created_renamed_and_deleted_wake_the_mailbox_watchers() {
    use sealpost::store::folders::changes;
    let f = StoreFixture::new();
    let store = f.store();
    store.ensure_default_folders(ALICE).unwrap();
    let mut watcher = changes::subscribe(ALICE);
    let other = changes::subscribe("folder-watcher-elsewhere@a.test");
    store.create_folder(ALICE, "Projects").unwrap();
    assert!(watcher.has_changed().unwrap(), "CREATE woke nobody");
    watcher.mark_unchanged();
    store.rename_folder(ALICE, "Projects", "Archive").unwrap();
    assert!(watcher.has_changed().unwrap(), "RENAME woke nobody");
    watcher.mark_unchanged();
    store.delete_folder(ALICE, "Archive").unwrap();
    assert!(watcher.has_changed().unwrap(), "DELETE woke nobody");
    // None of it wakes another mailbox's watchers.
    assert!(!other.has_changed().unwrap());
}

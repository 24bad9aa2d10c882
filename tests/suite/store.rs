//! The encrypted mailbox store on real files and a real SQLite index: nothing in clear on disk,
//! tampering detected per message, rotations that rewrite no blob, crypto-shred, audit chain,
//! availability-key fallback, and configuration errors.

use crate::support;

use sealpost::config::Config;
use sealpost::store::backend::sqlite::SqliteKeyIndex;
use sealpost::store::backend::KeyIndex;
use sealpost::store::ops::{self, NoProgress};
use sealpost::store::{index, MailStore, StoreError};
use support::stores::{deliver, grep, message, StoreFixture, ALICE, BOSS, CAROL, PLAIN};

#[test]
fn encrypted_mailboxes_leave_no_marker_on_disk() {
    let f = StoreFixture::new();
    let store = f.store();
    let secret = message("MARKER-7f3a9c", 2000);
    let ids: Vec<String> = [ALICE, CAROL, BOSS]
        .iter()
        .map(|m| deliver(&store, m, &secret))
        .collect();
    // The plain mailbox is the control: its marker must be found, or the grep proves nothing.
    deliver(&store, PLAIN, &message("CLEARTEXT-5d2e", 100));
    drop(store);

    assert_eq!(
        grep(&f.data_dir, b"MARKER-7f3a9c"),
        Vec::<std::path::PathBuf>::new()
    );
    assert_eq!(grep(&f.data_dir, b"report MARKER").len(), 0);
    // (found in its blob, and in the index's plain metadata)
    let control = grep(&f.data_dir, b"CLEARTEXT-5d2e");
    assert!(
        control
            .iter()
            .any(|p| p.starts_with(f.data_dir.join("store/blobs"))),
        "{control:?}"
    );
    let store = f.store();
    for (m, id) in [ALICE, CAROL, BOSS].iter().zip(&ids) {
        assert_eq!(store.read(m, id).unwrap(), secret);
        let list = store.list(m).unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].subject, "report MARKER-7f3a9c");
        assert_eq!(list[0].from, "s@b.test");
        assert_eq!(list[0].size, secret.len() as u64);
    }
    assert_eq!(store.count(PLAIN).unwrap(), 1);
    assert!(matches!(
        store.deliver("nobody@a.test", b"x"),
        Err(StoreError::NoSuchMailbox(_))
    ));
}

#[test]
fn one_flipped_byte_fails_that_message_only() {
    let f = StoreFixture::new();
    let store = f.store();
    let ids: Vec<String> = (0..3)
        .map(|i| deliver(&store, ALICE, &message(&format!("m{i}"), 5000)))
        .collect();
    let plain_id = deliver(&store, PLAIN, &message("p", 300));
    for (mailbox, id) in [(ALICE, &ids[1]), (PLAIN, &plain_id)] {
        let path = f.blob_path(&store, mailbox, id);
        let mut data = std::fs::read(&path).unwrap();
        let at = data.len() / 2;
        data[at] ^= 0x01;
        std::fs::write(&path, data).unwrap();
    }
    let e = store.read(ALICE, &ids[1]).unwrap_err();
    assert!(matches!(e, StoreError::Integrity(_)), "{e}");
    assert!(e.to_string().contains(&ids[1]), "{e}");
    assert!(matches!(
        store.read(PLAIN, &plain_id),
        Err(StoreError::Integrity(_))
    ));
    for id in [&ids[0], &ids[2]] {
        assert!(store.read(ALICE, id).is_ok());
    }
    assert_eq!(store.list(ALICE).unwrap().len(), 3, "list still shows all");
    let v = ops::verify(&store, &NoProgress).unwrap();
    assert_eq!(
        (v.checked, v.ok, v.failures.len()),
        (4, 2, 2),
        "{:?}",
        v.failures
    );
    assert!(v.failures.iter().any(|l| l.contains(&ids[1])));
}

#[test]
fn swapped_blobs_and_dropped_or_reordered_chunks_are_detected() {
    let f = StoreFixture::new();
    let store = f.store();
    let big = message("big", 200 * 1024); // four chunks
    let (x, y) = (deliver(&store, ALICE, &big), deliver(&store, ALICE, &big));
    let (px, py) = (
        f.blob_path(&store, ALICE, &x),
        f.blob_path(&store, ALICE, &y),
    );
    let (dx, dy) = (std::fs::read(&px).unwrap(), std::fs::read(&py).unwrap());
    let fails = |what: &str| {
        let e = store.read(ALICE, &x).unwrap_err();
        assert!(matches!(e, StoreError::Integrity(_)), "{what}: {e}");
    };

    std::fs::write(&px, &dy).unwrap();
    std::fs::write(&py, &dx).unwrap();
    fails("swapped blobs");
    assert!(store.read(ALICE, &y).is_err());

    let stride = 64 * 1024 + 16;
    let header = 5;
    let chunk = |i: usize| &dx[header + i * stride..(header + (i + 1) * stride).min(dx.len())];
    let rebuild = |order: &[usize]| {
        let mut v = dx[..header].to_vec();
        for &i in order {
            v.extend_from_slice(chunk(i));
        }
        v
    };
    for (what, order) in [
        ("dropped middle chunk", vec![0, 2, 3]),
        ("dropped last chunk", vec![0, 1, 2]),
        ("reordered chunks", vec![1, 0, 2, 3]),
        ("repeated chunk", vec![0, 1, 1, 2, 3]),
    ] {
        std::fs::write(&px, rebuild(&order)).unwrap();
        fails(what);
    }
    std::fs::write(&px, &dx[..dx.len() - 1]).unwrap();
    fails("truncated");
    std::fs::write(&px, rebuild(&[0, 1, 2, 3])).unwrap();
    assert_eq!(
        store.read(ALICE, &x).unwrap(),
        big,
        "the original still reads"
    );

    // Plain mailbox: swapped blobs are caught by the index's checksums.
    let (p1, p2) = (
        deliver(&store, PLAIN, &message("one", 10)),
        deliver(&store, PLAIN, &message("two", 10)),
    );
    let (q1, q2) = (
        f.blob_path(&store, PLAIN, &p1),
        f.blob_path(&store, PLAIN, &p2),
    );
    let (d1, d2) = (std::fs::read(&q1).unwrap(), std::fs::read(&q2).unwrap());
    std::fs::write(&q1, d2).unwrap();
    std::fs::write(&q2, d1).unwrap();
    assert!(matches!(
        store.read(PLAIN, &p1),
        Err(StoreError::Integrity(_))
    ));
}

#[test]
fn rotations_and_moves_keep_every_message_and_rewrite_no_blob() {
    let f = StoreFixture::new();
    let store = f.store();
    let mut all = Vec::new();
    for (i, m) in [ALICE, ALICE, CAROL, BOSS].iter().enumerate() {
        let msg = message(&format!("r{i}"), 1000 + i * 70_000);
        all.push((*m, deliver(&store, m, &msg), msg));
    }
    let before = f.blob_hashes();
    assert_eq!(before.len(), 4);
    let check = |what: &str, config: &Config| {
        // A new process: nothing cached.
        let store = sealpost::store::EncryptedStore::open(config, "test").unwrap();
        for (m, id, msg) in &all {
            let got = store.read(m, id).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(&got, msg, "{what}");
        }
        assert_eq!(f.blob_hashes(), before, "{what}: blobs changed");
    };

    let r = ops::rotate_policy(&store, "p1", &NoProgress).unwrap();
    assert_eq!(
        (r.old_generation, r.new_generation, r.mailbox_keys),
        (1, 2, 2)
    );
    check("policy rotate", &f.config());

    let new_root = f.key("p1-a2.key");
    sealpost::crypto::keyfile::generate_key_file(&new_root).unwrap();
    let file = |p: std::path::PathBuf| sealpost::keys::KekRef::File(p);
    ops::rotate_root(&store, "p1", &file(f.key("p1-a.key")), &file(new_root)).unwrap();
    f.write_config("keys/p1-a2.key", "none");
    std::fs::remove_file(f.key("p1-a.key")).unwrap();
    // Only the new root key can open p1 now (b hidden; the availability key is not tried
    // because a root key works).
    let config = f.config();
    std::fs::rename(f.key("p1-b.key"), f.key("p1-b.hidden")).unwrap();
    check("root rotate", &config);
    std::fs::rename(f.key("p1-b.hidden"), f.key("p1-b.key")).unwrap();
    let audit =
        std::fs::read_to_string(f.store().audit_path().expect("the audit log file")).unwrap();
    assert!(audit.contains("p1-a2.key"), "{audit}");
    assert!(!audit.contains("\"key\":\"availability"), "{audit}");

    assert!(matches!(
        ops::set_policy(&store, "nobody@a.test", "p2"),
        Err(StoreError::NoSuchMailbox(_))
    ));
    assert!(ops::set_policy(&store, ALICE, "none").is_err());
    assert!(ops::set_policy(&store, ALICE, "p9").is_err());
    let moved = ops::set_policy(&store, ALICE, "p2").unwrap();
    assert_eq!((moved.from.as_str(), moved.to.as_str()), ("p1", "p2"));
    check("set-policy", &f.config());
    // ALICE is now under p2: revoking p1 leaves her readable, CAROL not.
    ops::revoke_policy(&store, "p1", true).unwrap();
    let s = f.store();
    assert!(s.read(ALICE, &all[0].1).is_ok());
    assert!(matches!(
        s.read(CAROL, &all[2].1),
        Err(StoreError::Revoked { .. })
    ));
}

#[test]
fn revoking_a_policy_shreds_its_keys_and_spares_the_others() {
    let f = StoreFixture::new();
    let store = f.store();
    let a = deliver(&store, ALICE, &message("a", 100));
    deliver(&store, CAROL, &message("c", 100));
    let b = deliver(&store, BOSS, &message("b", 100));
    let index_path = f.data_dir.join("store/index.sqlite");
    let wraps: Vec<Vec<u8>> = {
        let c = index::open(&index_path).unwrap();
        let c = SqliteKeyIndex::new(&c);
        let pk = c.active_policy_key("p1").unwrap().unwrap();
        let mut w: Vec<Vec<u8>> = c
            .wraps(pk.id)
            .unwrap()
            .into_iter()
            .map(|w| w.wrapped)
            .collect();
        w.push(
            c.current_mailbox_key(ALICE)
                .unwrap()
                .unwrap()
                .wrapped
                .unwrap(),
        );
        w
    };
    assert_eq!(wraps.len(), 4);

    let preview = ops::revoke_policy(&store, "p1", false).unwrap();
    assert_eq!(preview.messages, 2);
    assert!(store.read(ALICE, &a).is_ok(), "a preview changes nothing");

    let r = ops::revoke_policy(&store, "p1", true).unwrap();
    assert_eq!((r.generations, r.mailbox_keys, r.messages), (1, 2, 2));
    for s in [&store, &f.store()] {
        let e = s.read(ALICE, &a).unwrap_err();
        assert!(e.to_string().contains("policy p1 was revoked"), "{e}");
        assert!(s.list(CAROL).is_err());
        assert_eq!(s.read(BOSS, &b).unwrap(), message("b", 100));
    }
    assert!(matches!(
        store.deliver(ALICE, b"Subject: new\r\n\r\nx\r\n"),
        Err(StoreError::Revoked { .. })
    ));
    // The destroyed wraps are gone from the database files, not just unlinked from rows.
    for file in ["index.sqlite", "index.sqlite-wal"] {
        let data = std::fs::read(f.data_dir.join("store").join(file)).unwrap_or_default();
        for w in &wraps {
            assert!(
                !data.windows(w.len()).any(|x| x == &w[..]),
                "{file} still holds a wrap"
            );
        }
    }
    let v = ops::verify(&store, &NoProgress).unwrap();
    assert_eq!((v.ok, v.unreadable.len(), v.failures.len()), (1, 2, 0));
}

#[test]
fn availability_key_only_when_both_root_keys_are_unavailable() {
    let f = StoreFixture::new();
    let id = deliver(&f.store(), ALICE, &message("av", 100));
    // Validated while every key was present; the keys then vanish, as a running server sees it.
    let config = f.config();
    let open = || sealpost::store::EncryptedStore::open(&config, "test").unwrap();
    let hide = |k: &str| std::fs::rename(f.key(k), f.key(&format!("{k}.hidden"))).unwrap();
    hide("p1-a.key");
    hide("p1-b.key");
    let store = open();
    assert!(store.read(ALICE, &id).is_ok(), "availability key opens");
    let audit = std::fs::read_to_string(store.audit_path().expect("the audit log file")).unwrap();
    let line = audit.lines().last().unwrap();
    assert!(line.contains("\"key\":\"availability"), "{line}");
    assert!(line.contains("both root keys unavailable"), "{line}");

    // A wrong key where a root key should be is an integrity alarm: no fallback.
    sealpost::crypto::keyfile::generate_key_file(&f.key("p1-a.key")).unwrap();
    let store = open();
    let e = store.read(ALICE, &id).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, StoreError::KeyUnavailable { .. }), "{text}");
    assert!(text.contains("policy p1"), "{text}");
    assert!(
        text.contains("p1-a.key") && text.contains("p1-b.key"),
        "{text}"
    );
    assert!(text.contains("not a key of this policy"), "{text}");
    let after = std::fs::read_to_string(store.audit_path().expect("the audit log file")).unwrap();
    assert_eq!(
        after.lines().count(),
        audit.lines().count(),
        "no unwrap recorded"
    );
}

#[test]
fn audit_log_verifies_and_an_edited_line_fails() {
    let f = StoreFixture::new();
    let store = f.store();
    deliver(&store, ALICE, &message("x", 10));
    deliver(&store, BOSS, &message("y", 10));
    ops::rotate_policy(&store, "p1", &NoProgress).unwrap();
    let r = ops::verify_audit(&store).unwrap();
    assert!(r.lines >= 4, "{}", r.lines);
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    let path = store
        .audit_path()
        .expect("the audit log file")
        .to_path_buf();
    assert!(
        !path.starts_with(&f.data_dir),
        "audit log lives in the keystore"
    );
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replacen("deliver to alice", "deliver to mallory", 1),
    )
    .unwrap();
    let r = ops::verify_audit(&store).unwrap();
    assert!(!r.problems.is_empty());
}

#[test]
fn reencrypt_moves_a_plain_mailbox_onto_its_policy() {
    let f = StoreFixture::new();
    let store = f.store();
    let old = message("PLAIN-OLD-42", 70_000);
    let id = deliver(&store, PLAIN, &old);
    assert!(!grep(&f.data_dir, b"PLAIN-OLD-42").is_empty());
    drop(store);
    f.write_config("keys/p1-a.key", "p2");
    let store = f.store();
    let new = message("PLAIN-NEW-43", 10);
    let id2 = deliver(&store, PLAIN, &new);
    assert_eq!(
        grep(&f.data_dir, b"PLAIN-NEW-43").len(),
        0,
        "never downgraded"
    );
    let r = ops::reencrypt(&store, &NoProgress).unwrap();
    assert_eq!(r.messages_encrypted, 1);
    assert_eq!(grep(&f.data_dir, b"PLAIN-OLD-42").len(), 0);
    assert_eq!(store.read(PLAIN, &id).unwrap(), old);
    assert_eq!(store.read(PLAIN, &id2).unwrap(), new);
    assert_eq!(
        ops::reencrypt(&store, &NoProgress).unwrap(),
        ops::Reencryption::default()
    );
    let v = ops::verify(&store, &NoProgress).unwrap();
    assert!(v.failures.is_empty() && v.orphans.is_empty(), "{v:?}");
}

#[test]
fn export_writes_a_standard_maildir_with_lf_endings_and_only_once() {
    let f = StoreFixture::new();
    let store = f.store();
    let msgs = [message("e1", 100), message("e2", 90_000)];
    for m in &msgs {
        deliver(&store, ALICE, m);
    }
    let out = f.dir.path().join("export");
    let e = ops::export(&store, ALICE, &out, &NoProgress).unwrap();
    assert_eq!((e.written, e.present, e.problems.len()), (2, 0, 0));
    let new_files = support::stores::files_under(&out.join("new"));
    let mut got: Vec<Vec<u8>> = new_files
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    got.sort_by_key(|m| m.len());
    let lf = |m: &[u8]| {
        String::from_utf8_lossy(m)
            .replace("\r\n", "\n")
            .into_bytes()
    };
    assert_eq!(got, msgs.iter().map(|m| lf(m)).collect::<Vec<_>>());
    assert!(got.iter().all(|m| !m.contains(&b'\r')));
    assert!(out.join("cur").is_dir() && out.join("tmp").is_dir());
    // A reader moves one to cur/ and flags it seen; a new message arrives; export again.
    let read = &new_files[0];
    let seen = out.join("cur").join(format!(
        "{}:2,S",
        read.file_name().unwrap().to_str().unwrap()
    ));
    std::fs::rename(read, &seen).unwrap();
    deliver(&store, ALICE, &message("e3", 200));
    let e = ops::export(&store, ALICE, &out, &NoProgress).unwrap();
    assert_eq!((e.written, e.present), (1, 2));
    assert!(seen.exists());
    let all = support::stores::files_under(&out.join("new")).len()
        + support::stores::files_under(&out.join("cur")).len();
    assert_eq!(all, 3);
    // Flags set over IMAP travel into a fresh export: such a message goes to cur/ with them.
    use sealpost::store::folders::{system, FlagOp, Flags, Folders};
    let flags = Flags {
        system: system::SEEN | system::FLAGGED,
        ..Flags::default()
    };
    store
        .set_flags(ALICE, "INBOX", &[1], FlagOp::Add, &flags)
        .unwrap();
    let fresh = f.dir.path().join("export2");
    let e = ops::export(&store, ALICE, &fresh, &NoProgress).unwrap();
    assert_eq!((e.written, e.present), (3, 0));
    let cur = support::stores::files_under(&fresh.join("cur"));
    assert_eq!(cur.len(), 1, "{cur:?}");
    assert!(cur[0].to_str().unwrap().ends_with(":2,FS"), "{cur:?}");
    assert_eq!(support::stores::files_under(&fresh.join("new")).len(), 2);
}

fn config_error(f: &StoreFixture, text: &str) -> sealpost::config::ConfigError {
    Config::from_toml(&f.config_path, text, None).unwrap_err()
}

#[test]
fn config_errors_name_the_file_and_the_key() {
    let f = StoreFixture::new();
    let base = std::fs::read_to_string(&f.config_path).unwrap();
    let file = f.config_path.display().to_string();

    let e = config_error(&f, &base.replace("encryption_policy = \"p1\"\n", ""));
    assert_eq!(e.key, "mailbox[0].encryption_policy");
    assert!(
        e.to_string()
            .starts_with(&format!("{file}: mailbox[0].encryption_policy: ")),
        "{e}"
    );
    assert!(e.problem.contains("alice@a.test"), "{e}");

    let e = config_error(&f, &base.replace("keys/p1-b.key", "keys/missing.key"));
    assert_eq!(e.key, "encryption_policy[0].root_keys[1]");
    assert!(
        e.problem.contains("file not found: keys/missing.key"),
        "{e}"
    );

    let e = config_error(
        &f,
        &base.replace("encryption_policy = \"p2\"", "encryption_policy = \"p3\""),
    );
    assert_eq!(e.key, "mailbox[2].encryption_policy");

    let e = config_error(
        &f,
        &base.replace("\"keys/p1-b.key\"", "\"keys/p1-b.key\", \"keys/p2-b.key\""),
    );
    assert_eq!(e.key, "encryption_policy[0].root_keys");

    let e = config_error(&f, &base.replace("keys/p1-b.key", "keys/p1-a.key"));
    assert!(e.problem.contains("same key"), "{e}");

    std::fs::write(f.key("junk.key"), "not a key\n").unwrap();
    let e = config_error(
        &f,
        &base.replace("keys/p1-availability.key", "keys/junk.key"),
    );
    assert_eq!(e.key, "encryption_policy[0].availability_key");

    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(f.key("p2-a.key"), std::fs::Permissions::from_mode(0o666)).unwrap();
    let e = config_error(&f, &base);
    assert_eq!(e.key, "encryption_policy[1].root_keys[0]");
    assert!(e.problem.contains("writable"), "{e}");
    std::fs::set_permissions(f.key("p2-a.key"), std::fs::Permissions::from_mode(0o600)).unwrap();

    let e = config_error(
        &f,
        &format!("{base}\n[store]\nkeystore_dir = \"data/keys\"\n"),
    );
    assert_eq!(e.key, "store.keystore_dir");

    let c = Config::from_toml(&f.config_path, &base, None).unwrap();
    assert_eq!(c.store.keystore_dir, f.dir.path().join("data.keystore"));
    assert_eq!(
        c.mailbox_policy("Boss@A.test"),
        Some(sealpost::config::PolicyRef::Named("p2".into()))
    );
    assert_eq!(
        c.mailbox_policy(PLAIN),
        Some(sealpost::config::PolicyRef::None)
    );
    assert_eq!(c.mailbox_policy("x@b.test"), None);
    assert!(c.encryption_policies["p1"]
        .availability_key
        .file()
        .is_some_and(|p| p.is_file()));
}

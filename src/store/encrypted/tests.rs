//! Unit tests of `EncryptedStore`: concurrency, no downgrade, delivery keys.

use super::*;
use crate::store::backend::sqlite::SqliteKeyIndex;

/// A second connection to a store's SQLite index, for looking at or altering rows directly.
fn conn(store: &EncryptedStore) -> rusqlite::Connection {
    index::open(&store.dir().join("index.sqlite")).unwrap()
}

fn config(dir: &Path, plain_policy: &str) -> Config {
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    for k in ["a", "b", "c"] {
        let f = keys.join(format!("{k}.key"));
        if !f.exists() {
            crate::crypto::keyfile::generate_key_file(&f).unwrap();
        }
    }
    let text = format!(
        "[server]\nhostname = \"mx.t.test\"\ndata_dir = \"data\"\n\
         [[domain]]\nname = \"t.test\"\nencryption_policy = \"p\"\n\
         [[mailbox]]\naddress = \"a@t.test\"\n[[mailbox]]\naddress = \"b@t.test\"\n\
         [[mailbox]]\naddress = \"c@t.test\"\nencryption_policy = \"{plain_policy}\"\n\
         [[encryption_policy]]\nname = \"p\"\nroot_keys = [\"keys/a.key\", \"keys/b.key\"]\n\
         availability_key = \"keys/c.key\"\n"
    );
    let path = dir.join("t.toml");
    std::fs::write(&path, text).unwrap();
    Config::load(&path, None).unwrap()
}

#[test]
fn concurrent_deliveries_share_one_policy_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EncryptedStore::open(&config(dir.path(), "none"), "test").unwrap());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                (0..5)
                    .map(|i| {
                        let mailbox = if t % 2 == 0 { "a@t.test" } else { "B@t.test" };
                        let msg = format!("Subject: {t}-{i}\r\n\r\nbody\r\n");
                        (
                            mailbox,
                            store.deliver(mailbox, msg.as_bytes()).unwrap(),
                            msg,
                        )
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for t in threads {
        for (mailbox, id, msg) in t.join().unwrap() {
            assert_eq!(store.read(mailbox, &id).unwrap(), msg.as_bytes());
        }
    }
    assert_eq!(store.count("a@t.test").unwrap(), 10);
    assert_eq!(store.list("b@t.test").unwrap().len(), 10);
    let audit = std::fs::read_to_string(store.audit_path().unwrap()).unwrap();
    assert_eq!(audit.matches("policy-key-create").count(), 1, "{audit}");
    let keys = SqliteKeyIndex::new(&conn(&store))
        .current_mailbox_key("b@t.test")
        .unwrap();
    assert!(keys.is_some_and(|k| k.state == "active"));
}

#[test]
fn delivery_never_downgrades_an_encrypted_mailbox() {
    let dir = tempfile::tempdir().unwrap();
    let store = EncryptedStore::open(&config(dir.path(), "p"), "test").unwrap();
    store
        .deliver("c@t.test", b"Subject: one\r\n\r\nx\r\n")
        .unwrap();
    drop(store);
    // The configuration now says "none": the mailbox keeps its key.
    let store = EncryptedStore::open(&config(dir.path(), "none"), "test").unwrap();
    let id = store
        .deliver("c@t.test", b"Subject: two\r\n\r\nx\r\n")
        .unwrap();
    let row = index::message(&conn(&store), "c@t.test", &id)
        .unwrap()
        .unwrap();
    assert!(row.mailbox_key_id.is_some() && row.digest.is_none());
    assert_eq!(store.list("c@t.test").unwrap()[1].subject, "two");
}

#[test]
fn deliver_once_stores_one_message_per_key_and_mailbox() {
    let dir = tempfile::tempdir().unwrap();
    let store = EncryptedStore::open(&config(dir.path(), "none"), "test").unwrap();
    let msg = b"Subject: once\r\n\r\nx\r\n";
    for mailbox in ["a@t.test", "c@t.test"] {
        let key = format!("0660DE4CFD9C65C1038B/{mailbox}");
        let first = store.deliver_once(mailbox, msg, &key).unwrap();
        let blobs = store.blobs.list().unwrap().len();
        assert_eq!(store.deliver_once(mailbox, msg, &key).unwrap(), first);
        assert_eq!(store.count(mailbox).unwrap(), 1);
        assert_eq!(store.blobs.list().unwrap().len(), blobs, "no second blob");
        assert_eq!(store.read(mailbox, &first).unwrap(), msg);
        let other = store
            .deliver_once(mailbox, msg, &format!("{key}x"))
            .unwrap();
        assert_ne!(other, first);
        assert_eq!(store.count(mailbox).unwrap(), 2);
    }
    // The same key in another mailbox is another delivery.
    let key = "0660DE4CFD9C65C1038B/a@t.test";
    let in_b = store.deliver_once("B@t.test", msg, key).unwrap();
    assert_eq!(store.count("b@t.test").unwrap(), 1);
    assert_eq!(store.deliver_once("b@t.test", msg, key).unwrap(), in_b);
    assert_eq!(store.blobs.list().unwrap().len(), 5);
    // Plain `deliver` is not deduplicated.
    store.deliver("b@t.test", msg).unwrap();
    store.deliver("b@t.test", msg).unwrap();
    assert_eq!(store.count("b@t.test").unwrap(), 3);
}

#[test]
fn delivery_keys_survive_reopening_and_are_not_kept_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let msg = b"Subject: once\r\n\r\nx\r\n";
    let (a_key, c_key) = (
        "07A1B2C3D4E5F6A7B8C9/a@t.test",
        "07A1B2C3D4E5F6A7B8D0/c@t.test",
    );
    let store = EncryptedStore::open(&config(dir.path(), "none"), "test").unwrap();
    let a = store.deliver_once("a@t.test", msg, a_key).unwrap();
    let c = store.deliver_once("c@t.test", msg, c_key).unwrap();
    let index_dir = store.dir().to_path_buf();
    drop(store);
    for name in ["index.sqlite", "index.sqlite-wal"] {
        let bytes = std::fs::read(index_dir.join(name)).unwrap_or_default();
        for id in ["07A1B2C3D4E5F6A7B8C9", "07A1B2C3D4E5F6A7B8D0"] {
            assert!(
                !bytes.windows(id.len()).any(|w| w == id.as_bytes()),
                "{name}"
            );
        }
    }
    let store = EncryptedStore::open(&config(dir.path(), "none"), "test").unwrap();
    assert_eq!(store.deliver_once("a@t.test", msg, a_key).unwrap(), a);
    assert_eq!(store.deliver_once("c@t.test", msg, c_key).unwrap(), c);
    assert_eq!(
        store.count("a@t.test").unwrap() + store.count("c@t.test").unwrap(),
        2
    );
    // The encrypted mailbox's tag is keyed: not the plain hash the plain mailbox gets.
    let plain = delivery_tag(None, a_key);
    assert!(index::delivered(&conn(&store), "a@t.test", &plain)
        .unwrap()
        .is_none());
    let c_tag = delivery_tag(None, c_key);
    assert!(index::delivered(&conn(&store), "c@t.test", &c_tag)
        .unwrap()
        .is_some());
    // Tags older than DELIVERY_TAG_DAYS are forgotten when the store opens.
    let old = index::now() - index::DELIVERY_TAG_DAYS * 86_400 - 60;
    let n = conn(&store).execute(
        "UPDATE deliveries SET created = ?1 WHERE mailbox = 'a@t.test'",
        [old],
    );
    assert_eq!(n.unwrap(), 1);
    drop(store);
    let store = EncryptedStore::open(&config(dir.path(), "none"), "test").unwrap();
    assert_ne!(store.deliver_once("a@t.test", msg, a_key).unwrap(), a);
    assert_eq!(store.deliver_once("c@t.test", msg, c_key).unwrap(), c);
}

#[test]
fn new_messages_are_written_in_the_bound_form() {
    let dir = tempfile::tempdir().unwrap();
    let store = EncryptedStore::open(&config(dir.path(), "none"), "test").unwrap();
    assert!(store.rebinding().complete && !store.keyring.accepts_legacy());
    let id = store
        .deliver("a@t.test", b"Subject: s\r\n\r\nx\r\n")
        .unwrap();
    let row = index::message(&conn(&store), "a@t.test", &id)
        .unwrap()
        .unwrap();
    let wrapped = row.wrapped_key.as_deref().unwrap();
    assert_eq!((wrapped.len(), wrapped[0]), (41, 2));
    let key = SqliteKeyIndex::new(&conn(&store))
        .mailbox_key(row.mailbox_key_id.unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(key.wrapped.map(|w| (w.len(), w[0])), Some((41, 2)));
    let blob = store.blobs.read(&row.blob).unwrap().unwrap();
    assert_eq!(blobs::kind(&blob), Some(BlobKind::MailboxBound));
    // The chunks bind the mailbox: opened with a content key, the id alone does not do.
    let mkey = store
        .message_key(&SqliteKeyIndex::new(&conn(&store)), &row, "test")
        .unwrap()
        .unwrap();
    let (content, _) = binding::unwrap_content_key(&mkey, "a@t.test", &id, wrapped, false).unwrap();
    let body = blob[HEADER_LEN..].to_vec();
    assert!(open_chunks(&content, id.as_bytes(), body.clone()).is_err());
    let context = binding::chunk_context("a@t.test", &id);
    assert_eq!(
        open_chunks(&content, &context, body).unwrap(),
        b"Subject: s\r\n\r\nx\r\n"
    );
    assert_eq!(store.list("a@t.test").unwrap()[0].subject, "s");
}

/// Every range of a message read piece by piece is the same bytes as the message in memory, for
/// an encrypted and a plain mailbox; an altered or truncated blob fails `verify`.
#[test]
fn message_sources_give_every_range_and_refuse_altered_blobs() {
    use crate::crypto::sealing::CHUNK_SIZE;
    let dir = tempfile::tempdir().unwrap();
    let store = EncryptedStore::open(&config(dir.path(), "none"), "test").unwrap();
    let msg: Vec<u8> = (0..3 * CHUNK_SIZE + 777)
        .map(|i| b'a' + (i % 23) as u8)
        .collect();
    let c = CHUNK_SIZE as u64;
    let size = msg.len() as u64;
    for mailbox in ["a@t.test", "c@t.test"] {
        let id = store.deliver(mailbox, &msg).unwrap();
        let source = store.source_of(mailbox, &id).unwrap();
        assert_eq!(source.size(), size);
        source.verify().unwrap();
        for (skip, len) in [
            (0, size),
            (0, 10),
            (c - 1, 2),
            (c, c),
            (2 * c + 5, size),
            (size - 1, 100),
            (size, 10),
        ] {
            source.verify_range(skip, len).unwrap();
            let mut chunks = source.range(skip, len).unwrap();
            let mut got = Vec::new();
            while let Some(piece) = chunks.next_chunk().unwrap() {
                assert!(piece.len() <= CHUNK_SIZE);
                got.extend_from_slice(piece);
            }
            let from = skip.min(size) as usize;
            let to = (skip + len).min(size) as usize;
            assert_eq!(got, &msg[from..to], "{mailbox} range {skip}+{len}");
        }
    }
    // Alter one byte of the encrypted blob in its third chunk, then cut it short.
    let id = store.deliver("a@t.test", &msg).unwrap();
    let row = index::message(&conn(&store), "a@t.test", &id)
        .unwrap()
        .unwrap();
    let path = Blobs::new(store.dir()).path(&row.blob).unwrap();
    let good = std::fs::read(&path).unwrap();
    let mut bad = good.clone();
    bad[HEADER_LEN + 2 * (CHUNK_SIZE + 16) + 9] ^= 1;
    std::fs::write(&path, &bad).unwrap();
    let source = store.source_of("a@t.test", &id).unwrap();
    let e = source.verify().unwrap_err().to_string();
    assert!(e.contains("chunk 2") && e.contains("altered"), "{e}");
    source.verify_range(0, 2 * c).unwrap();
    let e = source.verify_range(2 * c, 10).unwrap_err().to_string();
    assert!(e.contains("chunk 2"), "{e}");
    std::fs::write(&path, &good[..HEADER_LEN + 2 * (CHUNK_SIZE + 16)]).unwrap();
    let e = source.verify().unwrap_err().to_string();
    assert!(e.contains("chunk 1") || e.contains("truncated"), "{e}");
    // A plain blob altered anywhere fails its checksum, whatever range is asked for.
    let id = store.deliver("c@t.test", &msg).unwrap();
    let row = index::message(&conn(&store), "c@t.test", &id)
        .unwrap()
        .unwrap();
    let path = Blobs::new(store.dir()).path(&row.blob).unwrap();
    let mut bad = std::fs::read(&path).unwrap();
    *bad.last_mut().unwrap() ^= 1;
    std::fs::write(&path, &bad).unwrap();
    let source = store.source_of("c@t.test", &id).unwrap();
    let e = source.verify_range(0, 10).unwrap_err().to_string();
    assert!(e.contains("checksum"), "{e}");
}

#[test]
fn key_unwraps_made_to_list_or_read_are_anchored() {
    let dir = tempfile::tempdir().unwrap();
    let open = || EncryptedStore::open(&config(dir.path(), "none"), "test").unwrap();
    let id = open()
        .deliver("a@t.test", b"Subject: s\r\n\r\nx\r\n")
        .unwrap();
    // A fresh store unwraps the policy key again, once to list and once to read.
    assert_eq!(open().list("a@t.test").unwrap().len(), 1);
    open().read("a@t.test", &id).unwrap();
    let store = open();
    let audit = std::fs::read_to_string(store.audit_path().unwrap()).unwrap();
    assert!(
        audit.contains("list a@t.test") && audit.contains(&format!("read a@t.test {id}")),
        "{audit}"
    );
    let report = crate::store::ops::verify_audit(&store).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

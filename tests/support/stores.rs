//! A store fixture: a config with two policies and a plain mailbox, real key files, a data dir.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sealpost::config::Config;
use sealpost::crypto::keyfile::read_key_file;
use sealpost::crypto::sealing::{self, SecretKey};
use sealpost::store::backend::sqlite::SqliteKeyIndex;
use sealpost::store::backend::{KeyIndex, WrapRow};
use sealpost::store::index::{self, MessageRow};
use sealpost::store::{EncryptedStore, MailStore};
use sha2::{Digest, Sha256};

/// `alice@a.test` and `carol@a.test` under `p1` (the domain's), `boss@a.test` under `p2`,
/// `plain@a.test` under "none".
pub struct StoreFixture {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub data_dir: PathBuf,
    pub keys: PathBuf,
}

pub const ALICE: &str = "alice@a.test";
pub const CAROL: &str = "carol@a.test";
pub const BOSS: &str = "boss@a.test";
pub const PLAIN: &str = "plain@a.test";

impl StoreFixture {
    pub fn new() -> StoreFixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = dir.path().join("keys");
        std::fs::create_dir_all(&keys).expect("keys dir");
        for p in ["p1", "p2"] {
            for k in ["a", "b", "availability"] {
                sealpost::crypto::keyfile::generate_key_file(&keys.join(format!("{p}-{k}.key")))
                    .expect("key file");
            }
        }
        let f = StoreFixture {
            config_path: dir.path().join("a.toml"),
            data_dir: dir.path().join("data"),
            keys,
            dir,
        };
        f.write_config("keys/p1-a.key", "none");
        f
    }

    /// (Re)writes the config: `p1_root_a` is p1's first root key, `plain_policy` plain@'s policy.
    pub fn write_config(&self, p1_root_a: &str, plain_policy: &str) {
        let text = format!(
            r#"[server]
hostname = "mx.a.test"
data_dir = "data"

[[domain]]
name = "a.test"
encryption_policy = "p1"

[[mailbox]]
address = "alice@a.test"
[[mailbox]]
address = "carol@a.test"
[[mailbox]]
address = "boss@a.test"
encryption_policy = "p2"
[[mailbox]]
address = "plain@a.test"
encryption_policy = "{plain_policy}"

[[encryption_policy]]
name = "p1"
root_keys = ["{p1_root_a}", "keys/p1-b.key"]
availability_key = "keys/p1-availability.key"

[[encryption_policy]]
name = "p2"
root_keys = ["keys/p2-a.key", "keys/p2-b.key"]
availability_key = "keys/p2-availability.key"
"#
        );
        std::fs::write(&self.config_path, text).expect("write config");
    }

    pub fn config(&self) -> Config {
        Config::load(&self.config_path, None).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A fresh store (empty key caches), as a new process would open it.
    pub fn store(&self) -> EncryptedStore {
        EncryptedStore::open(&self.config(), "test").unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn key(&self, name: &str) -> PathBuf {
        self.keys.join(name)
    }

    pub fn config_arg(&self) -> &str {
        self.config_path.to_str().expect("utf-8 path")
    }

    /// The file of a message's blob.
    pub fn blob_path(&self, store: &EncryptedStore, mailbox: &str, id: &str) -> PathBuf {
        let row = store
            .rows(mailbox)
            .expect("rows")
            .into_iter()
            .find(|r| r.id == id)
            .expect("message row");
        store
            .dir()
            .join("blobs")
            .join(&row.blob[..2])
            .join(&row.blob)
    }

    /// SHA-256 of every blob file, by path.
    pub fn blob_hashes(&self) -> BTreeMap<PathBuf, String> {
        files_under(&self.data_dir.join("store/blobs"))
            .into_iter()
            .map(|p| {
                let h = hex::encode(Sha256::digest(std::fs::read(&p).expect("read blob")));
                (p, h)
            })
            .collect()
    }
}

/// A message with a marker in From, Subject and body; `body_len` pads the body.
pub fn message(marker: &str, body_len: usize) -> Vec<u8> {
    let mut m = format!(
        "From: Sender {marker} <s@b.test>\r\nTo: x@a.test\r\nSubject: report {marker}\r\n\
         Date: Sun, 22 Nov 2026 10:00:00 +0000\r\n\r\nbody {marker}\r\n"
    )
    .into_bytes();
    let mut i = 0u32;
    while m.len() < body_len {
        m.extend_from_slice(format!("line {i} of the body\r\n").as_bytes());
        i += 1;
    }
    m
}

/// Every regular file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Files under `dir` whose bytes contain `needle` (like `grep -r -l`).
pub fn grep(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| {
            std::fs::read(p)
                .map(|d| d.windows(needle.len()).any(|w| w == needle))
                .unwrap_or(false)
        })
        .collect()
}

/// Delivers and returns the id.
pub fn deliver(store: &EncryptedStore, mailbox: &str, message: &[u8]) -> String {
    store
        .deliver(mailbox, message)
        .unwrap_or_else(|e| panic!("deliver to {mailbox}: {e}"))
}

/// Writes messages exactly as sealpost stored them before messages were bound to their mailbox,
/// from the public primitives: the policy key wrapped under the policy's three key files, the
/// mailbox key as plain AES-KW (40 bytes) under the policy key, the content key likewise under the
/// mailbox key, the metadata sealed with AAD `"sealpost meta v1\0" ‖ id`, and a kind 1 blob whose
/// chunks bind the message id alone. Start it on a data_dir no store has opened yet; it keeps the
/// keys it made, so it can also put a legacy row into a store that was bound since.
pub struct LegacyWriter {
    conn: rusqlite::Connection,
    blobs: sealpost::store::blobs::Blobs,
    policies: BTreeMap<String, (i64, SecretKey)>,
    mailbox_keys: BTreeMap<String, (i64, SecretKey)>,
}

impl LegacyWriter {
    pub fn new(f: &StoreFixture) -> LegacyWriter {
        let dir = f.data_dir.join("store");
        std::fs::create_dir_all(&dir).expect("store dir");
        LegacyWriter {
            conn: index::open(&dir.join("index.sqlite")).expect("index"),
            blobs: sealpost::store::blobs::Blobs::new(&dir),
            policies: BTreeMap::new(),
            mailbox_keys: BTreeMap::new(),
        }
    }

    fn policy_key(&mut self, f: &StoreFixture, policy: &str) -> (i64, SecretKey) {
        if let Some(k) = self.policies.get(policy) {
            return k.clone();
        }
        let key = SecretKey::generate().expect("key");
        let wraps: Vec<WrapRow> = [
            ("root", "a"),
            ("root", "b"),
            ("availability", "availability"),
        ]
        .iter()
        .map(|(kind, file)| {
            let kek = read_key_file(&f.key(&format!("{policy}-{file}.key"))).expect("key file");
            WrapRow {
                kind: kind.to_string(),
                key_id: kek.id(),
                wrapped: kek.wrap(&key).expect("wrap"),
            }
        })
        .collect();
        let row = SqliteKeyIndex::new(&self.conn)
            .insert_policy_key(policy, &wraps)
            .expect("policy key");
        self.policies.insert(policy.into(), (row.id, key.clone()));
        (row.id, key)
    }

    /// The row id and key of `mailbox`'s key under `policy`, made on first use.
    pub fn mailbox_key(
        &mut self,
        f: &StoreFixture,
        mailbox: &str,
        policy: &str,
    ) -> (i64, SecretKey) {
        if let Some(k) = self.mailbox_keys.get(mailbox) {
            return k.clone();
        }
        let (pk_id, pkey) = self.policy_key(f, policy);
        let key = SecretKey::generate().expect("key");
        let wrapped = pkey.wrap(&key).expect("wrap");
        let id = SqliteKeyIndex::new(&self.conn)
            .insert_mailbox_key(mailbox, pk_id, &wrapped)
            .expect("insert");
        self.mailbox_keys.insert(mailbox.into(), (id, key.clone()));
        (id, key)
    }

    /// Stores `message` in `mailbox` (under `policy`) in the legacy form; returns its id.
    pub fn deliver(
        &mut self,
        f: &StoreFixture,
        mailbox: &str,
        policy: &str,
        message: &[u8],
    ) -> String {
        let (mk_id, mkey) = self.mailbox_key(f, mailbox, policy);
        let id = sealpost::queue::new_queue_id();
        let content = SecretKey::generate().expect("key");
        let mut framed = b"SPB1\x01".to_vec();
        sealing::seal_chunks(&content, id.as_bytes(), message, &mut framed).expect("seal");
        let blob = sealpost::store::blobs::Blobs::new_name().expect("name");
        self.blobs.write(&blob, &framed).expect("blob");
        let s = sealpost::store::summarize(&id, message);
        let meta = serde_json::json!({"date": s.date, "from": s.from, "subject": s.subject});
        let context = [&b"sealpost meta v1\0"[..], id.as_bytes()].concat();
        let row = MessageRow {
            seq: 0,
            id: id.clone(),
            mailbox: mailbox.into(),
            received: index::now(),
            size: message.len() as i64,
            flags: 0,
            blob,
            mailbox_key_id: Some(mk_id),
            wrapped_key: Some(mkey.wrap(&content).expect("wrap")),
            meta: mkey
                .seal_record(&context, meta.to_string().as_bytes())
                .expect("seal meta"),
            digest: None,
        };
        index::insert_message(&self.conn, &row).expect("insert message");
        id
    }
}

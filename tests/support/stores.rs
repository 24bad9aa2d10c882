//! A store fixture: a config with two policies and a plain mailbox, real key files, a data dir.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sealpost::config::Config;
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
                sealpost::store::keyfile::generate_key_file(&keys.join(format!("{p}-{k}.key")))
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

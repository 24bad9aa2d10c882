//! Storage backends of the mailbox store. The key hierarchy (root keys → policy keys → mailbox
//! keys) is kept in a [`KeyIndex`], the message rows, delivery tags and folders in a
//! [`MessageIndex`], both views of one [`IndexTransaction`] of an [`IndexBackend`]: the store's
//! SQLite index ([`sqlite`]) or a PostgreSQL database shared by several nodes ([`postgres`]).
//! Every backend must pass `tests/suite/key_index_suite.rs` and `tests/suite/message_index_suite.rs`.

pub mod pg_blobs;
pub mod pg_changes;
pub mod pg_copy;
pub mod pg_messages;
pub mod postgres;
pub mod sqlite;
pub mod sqlite_index;

use std::sync::Arc;

use super::audit::pg::PgLog;
use super::audit::{Anchor, AuditLog};
use super::blobs::{BlobStore, Blobs};
use super::folders::{Flags, FolderMessage};
use super::index::MessageRow;
use super::StoreError;

/// A policy key generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyKeyRow {
    pub id: i64,
    pub policy: String,
    pub generation: i64,
    /// `active`, `retired` or `revoked`.
    pub state: String,
}

/// One wrap of a policy key under a root or availability key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrapRow {
    /// `root` or `availability`.
    pub kind: String,
    pub key_id: String,
    pub wrapped: Vec<u8>,
}

/// A mailbox key; `wrapped` under its policy key, both gone once revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxKeyRow {
    pub id: i64,
    pub mailbox: String,
    pub policy_key_id: Option<i64>,
    pub wrapped: Option<Vec<u8>>,
    /// `active` or `revoked`.
    pub state: String,
}

/// What a policy revocation destroyed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shredded {
    /// Policy key generations marked revoked (0: the policy had no live key).
    pub generations: u64,
    /// Mailbox keys whose wrap was destroyed.
    pub mailbox_keys: u64,
    /// Messages under those mailbox keys, now unreadable.
    pub messages: u64,
}

/// The key hierarchy's index: policy key generations with their wraps, mailbox keys wrapped under
/// them, revocations, and the audit log's anchor. It holds no key that opens anything by itself.
///
/// A value is a view of one connection or transaction, and transaction control stays with the
/// caller: `ops` opens a transaction, runs several calls through a `KeyIndex` borrowed from it,
/// then commits, or drops it to roll back (a revocation preview relies on that). A backend must
/// therefore make every call part of the caller's transaction (a client whose queries need
/// `&mut` keeps its transaction in a `RefCell`).
///
/// Invariants callers rely on (checked by `tests/suite/key_index_suite.rs`):
/// - ids of policy keys and of mailbox keys strictly increase with insertion and are never
///   reused; the newest mailbox key of a mailbox is the one with the highest id;
/// - a policy's generations count 1, 2, 3… and a new one never reuses a number, whatever the
///   state of the earlier ones;
/// - retiring or revoking destroys wraps (nothing of them is readable afterwards), and the rows
///   themselves stay readable by id with their new state;
/// - a revoked mailbox key keeps its `policy_key_id`, so an error can name the policy.
pub trait KeyIndex {
    /// The active policy key of a policy with the highest generation, if it has one.
    fn active_policy_key(&self, policy: &str) -> Result<Option<PolicyKeyRow>, StoreError>;
    /// Whether a policy was revoked (crypto-shredded).
    fn policy_revoked(&self, policy: &str) -> Result<bool, StoreError>;
    /// A policy key generation by id, whatever its state.
    fn policy_key(&self, id: i64) -> Result<Option<PolicyKeyRow>, StoreError>;
    /// Records the next generation of a policy key, active, with its wraps.
    fn insert_policy_key(
        &self,
        policy: &str,
        wraps: &[WrapRow],
    ) -> Result<PolicyKeyRow, StoreError>;
    /// The wraps of a policy key: root wraps first, then availability, each by key id.
    fn wraps(&self, policy_key_id: i64) -> Result<Vec<WrapRow>, StoreError>;
    /// Replaces the root wrap made with `old_key_id` by one made with `new_key_id`; false when the
    /// policy key has no root wrap with that key id (nothing changes).
    fn replace_root_wrap(
        &self,
        policy_key_id: i64,
        old_key_id: &str,
        new_key_id: &str,
        wrapped: &[u8],
    ) -> Result<bool, StoreError>;
    /// Marks a policy key generation retired and destroys its wraps.
    fn retire_policy_key(&self, id: i64) -> Result<(), StoreError>;
    /// The newest mailbox key of a mailbox (active or revoked).
    fn current_mailbox_key(&self, mailbox: &str) -> Result<Option<MailboxKeyRow>, StoreError>;
    /// A mailbox key by id, whatever its state.
    fn mailbox_key(&self, id: i64) -> Result<Option<MailboxKeyRow>, StoreError>;
    /// Records a new active mailbox key wrapped under a policy key; returns its id.
    fn insert_mailbox_key(
        &self,
        mailbox: &str,
        policy_key_id: i64,
        wrapped: &[u8],
    ) -> Result<i64, StoreError>;
    /// Points an active mailbox key at another policy key with a new wrap (rotation,
    /// set-policy); a revoked mailbox key is left as it is.
    fn rewrap_mailbox_key(
        &self,
        id: i64,
        policy_key_id: i64,
        wrapped: &[u8],
    ) -> Result<(), StoreError>;
    /// Active mailbox keys wrapped under a policy key, by id.
    fn mailbox_keys_under(&self, policy_key_id: i64) -> Result<Vec<MailboxKeyRow>, StoreError>;
    /// Crypto-shreds a policy: destroys every wrap of its policy keys and of the active mailbox
    /// keys under them, and marks them revoked. Revoking again destroys nothing more.
    fn revoke_policy(&self, policy: &str) -> Result<Shredded, StoreError>;
    /// Makes the caller's transaction the only one creating policy or mailbox keys until it
    /// ends, so that nodes delivering the first message of a mailbox at once create one key, not
    /// one each: the caller reads the current keys again after it. A backend whose write
    /// transactions already exclude each other (SQLite's) does nothing.
    fn lock_key_creation(&self) -> Result<(), StoreError>;
    /// The audit log's newest line as last anchored, if any.
    fn audit_anchor(&self) -> Result<Option<Anchor>, StoreError>;
    /// Anchors the audit log's newest line (in the caller's transaction, with the change it
    /// records). The anchor only moves forward: an anchor older than the one recorded (two
    /// appends whose transactions commit in the other order) leaves the newer one in place, so
    /// the index never stops covering lines it once covered.
    fn set_audit_anchor(&self, anchor: &Anchor) -> Result<(), StoreError>;
}

/// Where a new message row was filed: its row number (`MessageRow::seq`) and its UID in the
/// folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filed {
    pub seq: i64,
    pub uid: u32,
}

/// A message of a folder found by UID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub seq: i64,
    pub id: String,
    pub received: i64,
    pub flags: Flags,
}

/// The message rows of the store: the rows themselves (blob name, wrapped content key, sealed
/// metadata), the delivery tags that make a delivery happen once, and the IMAP view of them
/// (folders, UIDVALIDITY and UIDNEXT, UIDs, flags, modification sequences). Like [`KeyIndex`],
/// a value is a view of one connection or transaction, and transaction control stays with the
/// caller.
///
/// Invariants callers rely on (checked by `tests/suite/message_index_suite.rs`):
/// - a folder's UIDs strictly increase in the order the transactions filing them commit, even
///   when several nodes file into one folder at once, and are never reused; UIDNEXT is above
///   every UID given;
/// - a folder's UIDVALIDITY is never given again to a folder of the same mailbox;
/// - every change of a message's flags or folder gives it a modification sequence above every
///   one given before in its mailbox;
/// - a delivery tag is recorded at most once per mailbox: [`MessageIndex::insert_delivery`] of a
///   tag another transaction holds waits for it and answers with that delivery's message id.
pub trait MessageIndex {
    /// Inserts a message row and files it into a folder of its mailbox (made if missing).
    fn insert_message(&self, m: &MessageRow, folder: &str) -> Result<Filed, StoreError>;
    /// Replaces a message's blob and crypto fields (`seq` names the row).
    fn update_message_crypto(&self, m: &MessageRow) -> Result<(), StoreError>;
    /// A mailbox's messages, oldest first.
    fn messages(&self, mailbox: &str) -> Result<Vec<MessageRow>, StoreError>;
    /// Every message, in delivery order.
    fn all_messages(&self) -> Result<Vec<MessageRow>, StoreError>;
    /// A message of a mailbox by id.
    fn message(&self, mailbox: &str, id: &str) -> Result<Option<MessageRow>, StoreError>;
    /// How many messages a mailbox has.
    fn count(&self, mailbox: &str) -> Result<usize, StoreError>;
    /// Every mailbox the index knows (with messages or keys), sorted.
    fn mailboxes(&self) -> Result<Vec<String>, StoreError>;

    /// The message already delivered to `mailbox` under a delivery tag, if any.
    fn delivered(&self, mailbox: &str, tag: &[u8]) -> Result<Option<String>, StoreError>;
    /// Records that a delivery tag produced `message_id`, unless another delivery holds the tag:
    /// then nothing is recorded and its message id is returned (the caller rolls back).
    fn insert_delivery(
        &self,
        mailbox: &str,
        tag: &[u8],
        message_id: &str,
    ) -> Result<Option<String>, StoreError>;
    /// Forgets delivery tags recorded before `before` (seconds since the epoch); returns how many.
    fn prune_deliveries(&self, before: i64) -> Result<u64, StoreError>;

    /// The folder's id, made if missing (with a UIDVALIDITY above any the mailbox was given).
    fn ensure_folder(
        &self,
        mailbox: &str,
        name: &str,
        special: Option<&str>,
    ) -> Result<i64, StoreError>;
    /// A folder's id.
    fn folder_id(&self, mailbox: &str, name: &str) -> Result<Option<i64>, StoreError>;
    /// A mailbox's folders (name, special-use attribute), INBOX first then by name.
    fn folder_list(&self, mailbox: &str) -> Result<Vec<(String, Option<String>)>, StoreError>;
    /// Renames a folder and the folders under it (`from/…`).
    fn rename_folder(&self, mailbox: &str, from: &str, to: &str) -> Result<(), StoreError>;
    /// Deletes a folder with its messages; returns the blob names of the messages.
    fn delete_folder(&self, folder_id: i64) -> Result<Vec<String>, StoreError>;
    /// (UIDVALIDITY, UIDNEXT) of a folder.
    fn folder_uids(&self, folder_id: i64) -> Result<(u32, u32), StoreError>;
    /// The messages of a folder, ascending UID.
    fn folder_messages(&self, folder_id: i64) -> Result<Vec<FolderMessage>, StoreError>;
    /// The message at a UID of a folder.
    fn message_at(&self, folder_id: i64, uid: u32) -> Result<Option<Located>, StoreError>;
    /// Writes a message's flags with a new modification sequence.
    fn write_flags(&self, seq: i64, flags: &Flags) -> Result<(), StoreError>;
    /// Moves a message into a folder of its mailbox under the folder's next UID; returns the UID.
    fn file_message(&self, seq: i64, mailbox: &str, folder: &str) -> Result<u32, StoreError>;
    /// Removes the messages of a folder flagged \Deleted (only the one at `uid` when given);
    /// returns their UIDs and blob names.
    fn expunge(&self, folder_id: i64, uid: Option<u32>) -> Result<Vec<(u32, String)>, StoreError>;
    /// Announces to the other processes sharing the index that `mailbox` changed, once (and
    /// only if) the transaction commits, so that their IMAP IDLE sessions look at once
    /// ([`IndexBackend::relay_changes`]). The store calls it in every transaction that changes
    /// what IMAP shows of a mailbox. SQLite has no way to announce: its processes poll.
    fn announce(&self, mailbox: &str) -> Result<(), StoreError>;
}

/// One transaction of an index backend: the key index and the message index inside it, so that
/// a delivery records its key, row and tag atomically. Dropped without [`commit`], it rolls
/// back.
///
/// [`commit`]: IndexTransaction::commit
pub trait IndexTransaction {
    fn keys(&self) -> Box<dyn KeyIndex + '_>;
    fn messages(&self) -> Box<dyn MessageIndex + '_>;
    /// Commits; the changes are durable once this returns `Ok`.
    fn commit(self: Box<Self>) -> Result<(), StoreError>;
}

/// Where the index lives: the store's SQLite file ([`sqlite::SqliteIndex`]) or a PostgreSQL
/// database shared by several nodes ([`pg_messages::PgIndex`]).
pub trait IndexBackend: Send + Sync {
    /// A transaction that writes (SQLite takes its write lock at once).
    fn write(&self) -> Result<Box<dyn IndexTransaction + '_>, StoreError>;
    /// A transaction that reads rows. Unwrapping a key records an audit line whose anchor is
    /// written in the transaction given to the keyring: commit a read transaction that did.
    fn read(&self) -> Result<Box<dyn IndexTransaction + '_>, StoreError>;
    /// Makes destroyed rows unrecoverable from the backend's own files where it keeps old page
    /// images (SQLite's WAL); nothing to do where the server manages that.
    fn checkpoint(&self) -> Result<(), StoreError>;
    /// Starts passing on the changes other processes announce ([`MessageIndex::announce`]) to
    /// this process's watchers (`folders::changes`), in the background, for as long as the
    /// backend is open; a second call does nothing. Nothing to do for SQLite (its processes
    /// poll).
    fn relay_changes(&self);
}

/// A store's index, blobs and audit log, as [`open`] gives them.
pub type Backends = (Box<dyn IndexBackend>, Arc<dyn BlobStore>, AuditLog);

/// The index, blob store and audit log `[storage]` names for the store of `config`: the SQLite
/// index and blob files under `<data_dir>/store` with the audit log file in the keystore, or the
/// PostgreSQL database (connected, its schema migrated), shared with the other nodes, with the
/// audit chain they share, where this node writes under its node id (`[storage] node_id`, or the
/// one kept in `<data_dir>/node-id`). The one place that looks at the backend.
pub fn open(config: &crate::config::Config) -> Result<Backends, StoreError> {
    use crate::config::StorageSettings;
    let dir = config.data_dir.join("store");
    match &config.storage {
        StorageSettings::Embedded => Ok((
            Box::new(sqlite_index::SqliteIndex::open(&dir.join("index.sqlite"))?),
            Arc::new(Blobs::new(&dir)),
            AuditLog::new(&config.store.keystore_dir),
        )),
        StorageSettings::Postgres(pg) => {
            let node = node_id(config, pg)?;
            let key = service_key(config)?;
            let changes = Arc::new(pg_changes::MailboxChanges::new(
                key.fingerprint_key(pg_changes::PURPOSE),
            ));
            let db = crate::pg::Database::open(pg)?;
            // The audit chain on a pool of its own: a key unwrap appends its line while its
            // index transaction holds a connection, and appends must not wait for a connection
            // that such transactions hold (one writer at a time: it keeps one connection busy).
            let audit_db = crate::pg::Database::open(pg)?;
            let audit = PgLog::new(audit_db, &node, &key, &config.store.keystore_dir);
            Ok((
                Box::new(pg_messages::PgIndex::new(db.clone(), &node, changes)),
                Arc::new(pg_blobs::PgBlobs::new(db)),
                AuditLog::Postgres(Box::new(audit)),
            ))
        }
    }
}

/// The audit log alone (for commands that only read it): the file, or the database's chain.
pub fn open_audit(config: &crate::config::Config) -> Result<AuditLog, StoreError> {
    use crate::config::StorageSettings;
    match &config.storage {
        StorageSettings::Embedded => Ok(AuditLog::new(&config.store.keystore_dir)),
        StorageSettings::Postgres(pg) => {
            let node = node_id(config, pg)?;
            let key = service_key(config)?;
            let db = crate::pg::Database::open(pg)?;
            Ok(AuditLog::Postgres(Box::new(PgLog::new(
                db,
                &node,
                &key,
                &config.store.keystore_dir,
            ))))
        }
    }
}

/// The service key (`<keystore_dir>/service.key`, made on first use), which every node of one
/// database holds: it keys the tokens naming mailboxes in change announcements and the MACs of
/// the audit chain.
fn service_key(
    config: &crate::config::Config,
) -> Result<crate::crypto::keyfile::ServiceKey, StoreError> {
    let dir = &config.store.keystore_dir;
    crate::crypto::keyfile::ServiceKey::load_or_create(dir)
        .map_err(|e| StoreError::Internal(format!("service key in {}: {e}", dir.display())))
}

/// This node's id in the database: `[storage] node_id`, or the one kept in `<data_dir>/node-id`
/// (made on first use).
pub fn node_id(
    config: &crate::config::Config,
    pg: &crate::pg::PgSettings,
) -> Result<String, StoreError> {
    match &pg.node_id {
        Some(node) => Ok(node.clone()),
        None => {
            let path = config.data_dir.join("node-id");
            crate::pg::node_id_file(&path).map_err(|e| StoreError::io(&path, e))
        }
    }
}

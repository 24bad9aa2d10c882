//! Storage backends of the mailbox store. The key hierarchy (root keys → policy keys → mailbox
//! keys) is kept in a [`KeyIndex`]; [`sqlite::SqliteKeyIndex`] keeps it in the store's SQLite
//! index, [`postgres::PgKeyIndex`] in a PostgreSQL database shared by several nodes. Every
//! backend must pass `tests/key_index_suite.rs`.

pub mod postgres;
pub mod sqlite;

use super::audit::Anchor;
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
/// Invariants callers rely on (checked by `tests/key_index_suite.rs`):
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
    /// The audit log's newest line as last anchored, if any.
    fn audit_anchor(&self) -> Result<Option<Anchor>, StoreError>;
    /// Anchors the audit log's newest line (in the caller's transaction, with the change it
    /// records). The anchor only moves forward: an anchor older than the one recorded (two
    /// appends whose transactions commit in the other order) leaves the newer one in place, so
    /// the index never stops covering lines it once covered.
    fn set_audit_anchor(&self, anchor: &Anchor) -> Result<(), StoreError>;
}

//! The index: an SQLite database (`store/index.sqlite`) mapping mailboxes and message ids to blob
//! names, wrapped keys and encrypted metadata. Holds no key that opens anything by itself. Its
//! schema and the message and delivery rows are here; the key hierarchy in it is reached through
//! `backend::sqlite::SqliteKeyIndex`.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::StoreError;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS policy_keys(
    id INTEGER PRIMARY KEY,
    policy TEXT NOT NULL,
    generation INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('active', 'retired', 'revoked')),
    created INTEGER NOT NULL,
    UNIQUE (policy, generation));
CREATE TABLE IF NOT EXISTS policy_key_wraps(
    policy_key_id INTEGER NOT NULL REFERENCES policy_keys(id),
    kind TEXT NOT NULL CHECK (kind IN ('root', 'availability')),
    key_id TEXT NOT NULL,
    wrapped BLOB NOT NULL,
    PRIMARY KEY (policy_key_id, key_id));
CREATE TABLE IF NOT EXISTS mailbox_keys(
    id INTEGER PRIMARY KEY,
    mailbox TEXT NOT NULL,
    policy_key_id INTEGER REFERENCES policy_keys(id),
    wrapped BLOB,
    state TEXT NOT NULL CHECK (state IN ('active', 'revoked')),
    created INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS mailbox_keys_by_mailbox ON mailbox_keys(mailbox, id);
CREATE TABLE IF NOT EXISTS messages(
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    mailbox TEXT NOT NULL,
    received INTEGER NOT NULL,
    size INTEGER NOT NULL,
    flags INTEGER NOT NULL DEFAULT 0,
    blob TEXT NOT NULL UNIQUE,
    mailbox_key_id INTEGER REFERENCES mailbox_keys(id),
    wrapped_key BLOB,
    meta BLOB NOT NULL,
    digest BLOB);
CREATE INDEX IF NOT EXISTS messages_by_mailbox ON messages(mailbox, seq);
CREATE TABLE IF NOT EXISTS audit_anchor(
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS deliveries(
    mailbox TEXT NOT NULL,
    tag BLOB NOT NULL,
    message_id TEXT NOT NULL,
    created INTEGER NOT NULL,
    PRIMARY KEY (mailbox, tag));
CREATE INDEX IF NOT EXISTS deliveries_by_created ON deliveries(created);
"#;

/// How long a delivery tag is kept: a queue file redelivered after a crash is redelivered at the
/// next start, long before this.
pub const DELIVERY_TAG_DAYS: i64 = 30;

/// One message. Encrypted: `mailbox_key_id`, `wrapped_key` (content key under the mailbox key),
/// `meta` sealed under the mailbox key, no digest. Plain: `meta` in clear and a SHA-256 digest.
#[derive(Debug, Clone)]
pub struct MessageRow {
    pub seq: i64,
    pub id: String,
    pub mailbox: String,
    pub received: i64,
    pub size: i64,
    pub flags: i64,
    pub blob: String,
    pub mailbox_key_id: Option<i64>,
    pub wrapped_key: Option<Vec<u8>>,
    pub meta: Vec<u8>,
    pub digest: Option<Vec<u8>>,
}

/// Opens (creating) the index with durable settings: WAL, synchronous FULL, secure_delete so that
/// destroyed wraps are overwritten rather than left in free pages.
pub fn open(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Version 2 adds `deliveries` to version 1; every statement is idempotent, so this also
    // upgrades a version 1 index in place. Version 3 adds folders, UIDs and keywords (IMAP).
    let mut conn = conn;
    conn.execute_batch(SCHEMA)?;
    super::folder_index::migrate(&mut conn)?;
    Ok(conn)
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

pub(super) const MESSAGE_COLUMNS: &str =
    "seq, id, mailbox, received, size, flags, blob, mailbox_key_id, wrapped_key, meta, digest";

pub(super) fn message_row(r: &Row<'_>) -> rusqlite::Result<MessageRow> {
    Ok(MessageRow {
        seq: r.get(0)?,
        id: r.get(1)?,
        mailbox: r.get(2)?,
        received: r.get(3)?,
        size: r.get(4)?,
        flags: r.get(5)?,
        blob: r.get(6)?,
        mailbox_key_id: r.get(7)?,
        wrapped_key: r.get(8)?,
        meta: r.get(9)?,
        digest: r.get(10)?,
    })
}

/// Inserts a message row into its mailbox's INBOX.
pub fn insert_message(c: &Connection, m: &MessageRow) -> Result<(), StoreError> {
    insert_message_in(c, m, super::folders::INBOX).map(|_| ())
}

/// Inserts a message row into a folder of its mailbox (made if missing); returns its seq and UID.
pub fn insert_message_in(
    c: &Connection,
    m: &MessageRow,
    folder: &str,
) -> Result<(i64, u32), StoreError> {
    c.execute(
        "INSERT INTO messages(id, mailbox, received, size, flags, blob, mailbox_key_id, wrapped_key, meta, digest)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            m.id,
            m.mailbox,
            m.received,
            m.size,
            m.flags,
            m.blob,
            m.mailbox_key_id,
            m.wrapped_key,
            m.meta,
            m.digest
        ],
    )?;
    let seq = c.last_insert_rowid();
    let uid = super::folder_index::file_message(c, seq, &m.mailbox, folder)?;
    Ok((seq, uid))
}

/// The message already delivered to `mailbox` under a delivery tag, if any.
pub fn delivered(c: &Connection, mailbox: &str, tag: &[u8]) -> Result<Option<String>, StoreError> {
    Ok(c.query_row(
        "SELECT message_id FROM deliveries WHERE mailbox = ?1 AND tag = ?2",
        params![mailbox, tag],
        |r| r.get(0),
    )
    .optional()?)
}

/// Records that a delivery tag produced a message; commit it with the message row.
pub fn insert_delivery(
    c: &Connection,
    mailbox: &str,
    tag: &[u8],
    message_id: &str,
) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO deliveries(mailbox, tag, message_id, created) VALUES (?1, ?2, ?3, ?4)",
        params![mailbox, tag, message_id, now()],
    )?;
    Ok(())
}

/// Forgets delivery tags recorded before `before` (seconds since the epoch); returns how many.
pub fn prune_deliveries(c: &Connection, before: i64) -> Result<usize, StoreError> {
    Ok(c.execute("DELETE FROM deliveries WHERE created < ?1", [before])?)
}

/// Replaces a message's blob and crypto fields (reencrypt from "none").
pub fn update_message_crypto(c: &Connection, m: &MessageRow) -> Result<(), StoreError> {
    c.execute(
        "UPDATE messages SET blob = ?2, mailbox_key_id = ?3, wrapped_key = ?4, meta = ?5, digest = ?6
         WHERE seq = ?1",
        params![m.seq, m.blob, m.mailbox_key_id, m.wrapped_key, m.meta, m.digest],
    )?;
    Ok(())
}

/// A mailbox's messages, oldest first.
pub fn messages(c: &Connection, mailbox: &str) -> Result<Vec<MessageRow>, StoreError> {
    let mut st = c.prepare(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE mailbox = ?1 ORDER BY seq"
    ))?;
    let rows = st.query_map([mailbox], message_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Every message, in delivery order.
pub fn all_messages(c: &Connection) -> Result<Vec<MessageRow>, StoreError> {
    let mut st = c.prepare(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages ORDER BY seq"
    ))?;
    let rows = st.query_map([], message_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn message(c: &Connection, mailbox: &str, id: &str) -> Result<Option<MessageRow>, StoreError> {
    Ok(c.query_row(
        &format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE mailbox = ?1 AND id = ?2"),
        [mailbox, id],
        message_row,
    )
    .optional()?)
}

pub fn count(c: &Connection, mailbox: &str) -> Result<usize, StoreError> {
    let n: i64 = c.query_row(
        "SELECT COUNT(*) FROM messages WHERE mailbox = ?1",
        [mailbox],
        |r| r.get(0),
    )?;
    Ok(n as usize)
}

/// Every mailbox the index knows (with messages or keys).
pub fn mailboxes(c: &Connection) -> Result<Vec<String>, StoreError> {
    let mut st = c.prepare(
        "SELECT mailbox FROM messages UNION SELECT mailbox FROM mailbox_keys ORDER BY 1",
    )?;
    let rows = st.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Forces the WAL into the main file and truncates it, so destroyed wraps do not linger there.
pub fn checkpoint(c: &Connection) -> Result<(), StoreError> {
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(c: &Connection) -> i64 {
        c.query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_version_1_index_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        let old = Connection::open(&path).unwrap();
        old.pragma_update(None, "journal_mode", "WAL").unwrap();
        old.execute_batch(include_str!("../../fixtures/store/index-v1.sql"))
            .unwrap();
        old.execute(
            "INSERT INTO messages(id, mailbox, received, size, blob, meta)
             VALUES ('M1', 'a@t.test', 5, 1, 'blob-M1', x'7b7d')",
            [],
        )
        .unwrap();
        assert_eq!(version(&old), 1);
        drop(old);

        let c = open(&path).unwrap();
        assert_eq!(version(&c), 3);
        assert_eq!(messages(&c, "a@t.test").unwrap()[0].id, "M1");
        assert_eq!(delivered(&c, "a@t.test", b"tag").unwrap(), None);
        insert_delivery(&c, "a@t.test", b"tag", "M1").unwrap();
        drop(c);
        // Opening an upgraded index again changes nothing.
        let c = open(&path).unwrap();
        assert_eq!(version(&c), 3);
        assert_eq!(
            delivered(&c, "a@t.test", b"tag").unwrap().as_deref(),
            Some("M1")
        );
        assert_eq!(count(&c, "a@t.test").unwrap(), 1);
    }

    #[test]
    fn delivery_tags_are_per_mailbox_unique_and_pruned_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let c = open(&dir.path().join("index.sqlite")).unwrap();
        insert_delivery(&c, "a@t.test", b"t1", "M1").unwrap();
        insert_delivery(&c, "b@t.test", b"t1", "M2").unwrap();
        insert_delivery(&c, "a@t.test", b"t2", "M3").unwrap();
        let dup = insert_delivery(&c, "a@t.test", b"t1", "M4").unwrap_err();
        assert_eq!(
            dup.index_kind(),
            Some(super::super::IndexErrorKind::Conflict)
        );
        assert_eq!(
            delivered(&c, "b@t.test", b"t1").unwrap().as_deref(),
            Some("M2")
        );
        c.execute(
            "UPDATE deliveries SET created = 1000 WHERE message_id = 'M3'",
            [],
        )
        .unwrap();
        assert_eq!(prune_deliveries(&c, 1001).unwrap(), 1);
        assert_eq!(delivered(&c, "a@t.test", b"t2").unwrap(), None);
        assert_eq!(
            delivered(&c, "a@t.test", b"t1").unwrap().as_deref(),
            Some("M1")
        );
        assert_eq!(prune_deliveries(&c, now() - 60).unwrap(), 0);
    }
}

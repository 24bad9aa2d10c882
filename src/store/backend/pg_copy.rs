//! Copies a node's mailbox store (the SQLite index and blob files under `<data_dir>/store`) into
//! PostgreSQL as it is: every row with its ids, every blob byte for byte, nothing decrypted, in
//! one transaction. Only into a database that holds no mailbox store yet: key hierarchies of two
//! stores do not merge (each has its own policy keys). Likewise the node's audit log file starts
//! the database's audit chain only while that chain is empty.

use std::path::Path;
use std::sync::Arc;

use rusqlite::Connection;
use tokio_postgres::types::ToSql;

use super::postgres::PgTransaction;
use crate::pg::Database;
use crate::store::blobs::{BlobStore, Blobs};
use crate::store::{index, IndexErrorKind, StoreError};

/// What was copied.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CopiedStore {
    pub mailboxes: u64,
    pub messages: u64,
    pub mailbox_keys: u64,
    pub policy_keys: u64,
}

/// Rows of an SQLite table as values PostgreSQL takes, column by column.
enum Value {
    Int(Option<i64>),
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
}

impl Value {
    fn sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Value::Int(v) => v,
            Value::Text(v) => v,
            Value::Bytes(v) => v,
        }
    }
}

/// Column kinds: `i` integer, `t` text, `b` blob.
fn rows(c: &Connection, select: &str, kinds: &str) -> Result<Vec<Vec<Value>>, StoreError> {
    let mut st = c.prepare(select)?;
    let rows = st.query_map([], |r| {
        kinds
            .chars()
            .enumerate()
            .map(|(i, k)| {
                Ok(match k {
                    'i' => Value::Int(r.get(i)?),
                    't' => Value::Text(r.get(i)?),
                    _ => Value::Bytes(r.get(i)?),
                })
            })
            .collect::<rusqlite::Result<Vec<Value>>>()
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Each SQLite table with the PostgreSQL table and columns its rows go to.
const TABLES: &[(&str, &str, &str)] = &[
    (
        "SELECT id, policy, generation, state, created FROM policy_keys ORDER BY id",
        "policy_key (id, policy, generation, state, created)",
        "ititi",
    ),
    (
        "SELECT policy_key_id, kind, key_id, wrapped FROM policy_key_wraps",
        "policy_key_wrap (policy_key_id, kind, key_id, wrapped)",
        "ittb",
    ),
    (
        "SELECT id, mailbox, policy_key_id, wrapped, state, created FROM mailbox_keys ORDER BY id",
        "mailbox_key (id, mailbox, policy_key_id, wrapped, state, created)",
        "itibti",
    ),
    (
        "SELECT id, mailbox, name, uidvalidity, uidnext, special FROM folders ORDER BY id",
        "store_folder (id, mailbox, name, uidvalidity, uidnext, special)",
        "ittiit",
    ),
    (
        "SELECT mailbox, last FROM uidvalidity_issued",
        "store_uidvalidity (mailbox, last)",
        "ti",
    ),
    (
        "SELECT seq, id, mailbox, received, size, flags, blob, mailbox_key_id, wrapped_key, meta,
                digest, folder_id, uid, keywords, modseq FROM messages ORDER BY seq",
        "store_message (seq, id, mailbox, received, size, flags, blob, mailbox_key_id, wrapped_key,
                        meta, digest, folder_id, uid, keywords, modseq)",
        "ittiiitibbbiiti",
    ),
    (
        "SELECT mailbox, MAX(modseq) FROM messages GROUP BY mailbox",
        "store_modseq (mailbox, last)",
        "ti",
    ),
    (
        "SELECT mailbox, tag, message_id, created FROM deliveries",
        "store_delivery (mailbox, tag, message_id, created)",
        "tbti",
    ),
];

/// Copies the store in `store_dir` into `db`; this node's audit anchor goes under `node`.
pub fn copy_to_postgres(
    store_dir: &Path,
    db: &Arc<Database>,
    node: &str,
) -> Result<CopiedStore, StoreError> {
    let c = index::open(&store_dir.join("index.sqlite"))?;
    let blobs = Blobs::new(store_dir);
    let tx = PgTransaction::begin_on(db, Arc::from(node))?;
    // Nodes or runs copying at once take turns; the second finds the store there.
    tx.query(
        "SELECT pg_advisory_xact_lock(hashtextextended('sealpost store copy', 0))",
        &[],
    )?;
    let present = tx.query(
        "SELECT (SELECT count(*) FROM policy_key) + (SELECT count(*) FROM mailbox_key)
              + (SELECT count(*) FROM store_message)",
        &[],
    )?;
    if present.first().map_or(0, |r| r.get::<_, i64>(0)) > 0 {
        return Err(StoreError::index(
            IndexErrorKind::Conflict,
            "the database holds a mailbox store already (key hierarchies do not merge)",
        ));
    }
    for (select, into, kinds) in TABLES {
        let marks: Vec<String> = (1..=kinds.len()).map(|i| format!("${i}")).collect();
        let insert = format!("INSERT INTO {into} VALUES ({})", marks.join(", "));
        for row in rows(&c, select, kinds)? {
            let params: Vec<&(dyn ToSql + Sync)> = row.iter().map(Value::sql).collect();
            tx.execute(&insert, &params)?;
        }
    }
    let messages = index::all_messages(&c)?;
    for m in &messages {
        let data = BlobStore::read(&blobs, &m.blob)?.ok_or_else(|| {
            StoreError::Integrity(format!(
                "message {} in {}: its blob {} is missing",
                m.id,
                m.mailbox,
                blobs.location(&m.blob).display()
            ))
        })?;
        tx.execute(
            "INSERT INTO store_blob (name, data) VALUES ($1, $2)",
            &[&m.blob, &data],
        )?;
    }
    let anchor = super::sqlite::SqliteKeyIndex::new(&c);
    if let Some(a) = super::KeyIndex::audit_anchor(&anchor)? {
        super::KeyIndex::set_audit_anchor(&tx.key_index(), &a)?;
    }
    for (table, column) in [
        ("policy_key", "id"),
        ("mailbox_key", "id"),
        ("store_folder", "id"),
        ("store_message", "seq"),
    ] {
        tx.query(
            &format!(
                "SELECT setval(pg_get_serial_sequence('{table}', '{column}'),
                               GREATEST((SELECT MAX({column}) FROM {table}), 1))"
            ),
            &[],
        )?;
    }
    let count = |sql: &str| -> Result<u64, StoreError> {
        Ok(tx
            .query(sql, &[])?
            .first()
            .map_or(0, |r| r.get::<_, i64>(0)) as u64)
    };
    let copied = CopiedStore {
        mailboxes: count("SELECT count(DISTINCT mailbox) FROM store_message")?,
        messages: messages.len() as u64,
        mailbox_keys: count("SELECT count(*) FROM mailbox_key")?,
        policy_keys: count("SELECT count(*) FROM policy_key")?,
    };
    tx.commit()?;
    Ok(copied)
}

/// What became of a node's audit log file.
#[derive(Debug, PartialEq, Eq)]
pub enum CopiedAudit {
    /// The node has no audit log file.
    NoFile,
    /// Its lines now start the database's chain.
    Copied { lines: u64 },
}

/// Copies the audit log file of `keystore_dir` (checked first against the anchor in the index
/// of the store in `store_dir`, when there is one) into the database's audit chain, as the first
/// lines, each with its MAC: only while the chain is empty (else a conflict error). The file is
/// left as it is.
pub fn copy_audit_log(
    store_dir: &Path,
    keystore_dir: &Path,
    chain: &crate::store::audit::pg::PgLog,
) -> Result<CopiedAudit, StoreError> {
    use crate::store::audit::file::FileLog;
    let file = FileLog::new(keystore_dir);
    if !file.path().exists() {
        return Ok(CopiedAudit::NoFile);
    }
    let index = store_dir.join("index.sqlite");
    let anchor = if index.exists() {
        let c = index::open(&index)?;
        super::KeyIndex::audit_anchor(&super::sqlite::SqliteKeyIndex::new(&c))?
    } else {
        None
    };
    let report = file.verify(anchor.as_ref())?;
    if !report.problems.is_empty() {
        return Err(StoreError::Audit(format!(
            "{} does not verify (`sealpost store audit verify` with the local store says why): {}",
            file.path().display(),
            report.problems.join("; ")
        )));
    }
    let lines = chain.import_lines(&file.lines()?)?;
    Ok(CopiedAudit::Copied { lines })
}

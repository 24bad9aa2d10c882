//! The message index in PostgreSQL (schema `src/pg/schema/003_mailbox_store.sql`) and the
//! database as an [`IndexBackend`], for nodes that share one database. Nodes filing into one
//! folder take turns on the folder's row (its UIDNEXT), so UIDs follow the order the
//! transactions commit; modification sequences come from a per-mailbox counter row the same way.

use std::sync::{Arc, Once};

use tokio_postgres::Row;

use super::pg_changes::{MailboxChanges, CHANNEL};
use super::postgres::PgTransaction;
use super::{Filed, IndexBackend, IndexTransaction, KeyIndex, Located, MessageIndex};
use crate::pg::Database;
use crate::store::folders::{system, Flags, FolderMessage};
use crate::store::index::{now, MessageRow};
use crate::store::{IndexErrorKind, StoreError};

/// A PostgreSQL database holding the store's index, as node `node` uses it.
pub struct PgIndex {
    db: Arc<Database>,
    node: Arc<str>,
    changes: Arc<MailboxChanges>,
    relaying: Once,
}

impl PgIndex {
    /// The index in `db` of node `node` (whose audit log the key index anchors), announcing
    /// and hearing changes of mailboxes with `changes`' tokens.
    pub fn new(db: Arc<Database>, node: &str, changes: Arc<MailboxChanges>) -> PgIndex {
        PgIndex {
            db,
            node: Arc::from(node),
            changes,
            relaying: Once::new(),
        }
    }

    fn begin(&self) -> Result<PgTransaction, StoreError> {
        let mut tx = PgTransaction::begin_on(&self.db, self.node.clone())?;
        tx.changes = Some(self.changes.clone());
        Ok(tx)
    }

    /// The database.
    pub fn database(&self) -> &Arc<Database> {
        &self.db
    }
}

impl IndexBackend for PgIndex {
    fn write(&self) -> Result<Box<dyn IndexTransaction + '_>, StoreError> {
        Ok(Box::new(self.begin()?))
    }

    fn read(&self) -> Result<Box<dyn IndexTransaction + '_>, StoreError> {
        Ok(Box::new(self.begin()?))
    }

    fn checkpoint(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn relay_changes(&self) {
        self.relaying.call_once(|| {
            let changes = self.changes.clone();
            self.db.listen(CHANNEL, move |heard| changes.heard(heard));
        });
    }
}

impl IndexTransaction for PgTransaction {
    fn keys(&self) -> Box<dyn KeyIndex + '_> {
        Box::new(self.key_index())
    }

    fn messages(&self) -> Box<dyn MessageIndex + '_> {
        Box::new(PgMessageIndex { tx: self })
    }

    fn commit(self: Box<Self>) -> Result<(), StoreError> {
        PgTransaction::commit(*self)
    }
}

/// The message index over a [`PgTransaction`].
#[derive(Clone, Copy)]
pub struct PgMessageIndex<'t> {
    tx: &'t PgTransaction,
}

const MESSAGE_COLUMNS: &str =
    "seq, id, mailbox, received, size, flags, blob, mailbox_key_id, wrapped_key, meta, digest";

fn message_row(r: &Row) -> MessageRow {
    MessageRow {
        seq: r.get(0),
        id: r.get(1),
        mailbox: r.get(2),
        received: r.get(3),
        size: r.get(4),
        flags: r.get(5),
        blob: r.get(6),
        mailbox_key_id: r.get(7),
        wrapped_key: r.get(8),
        meta: r.get(9),
        digest: r.get(10),
    }
}

fn no_row(what: &str) -> StoreError {
    StoreError::index(IndexErrorKind::NotFound, what.to_string())
}

impl PgMessageIndex<'_> {
    /// The next modification sequence of a mailbox.
    fn next_modseq(&self, mailbox: &str) -> Result<i64, StoreError> {
        let rows = self.tx.query(
            "INSERT INTO store_modseq (mailbox, last) VALUES ($1, 1)
             ON CONFLICT (mailbox) DO UPDATE SET last = store_modseq.last + 1
             RETURNING last",
            &[&mailbox],
        )?;
        rows.first()
            .map(|r| r.get(0))
            .ok_or_else(|| no_row("modification sequence"))
    }

    fn mailbox_of(&self, seq: i64) -> Result<String, StoreError> {
        let rows = self
            .tx
            .query("SELECT mailbox FROM store_message WHERE seq = $1", &[&seq])?;
        rows.first()
            .map(|r| r.get(0))
            .ok_or_else(|| no_row("no such message row"))
    }
}

impl MessageIndex for PgMessageIndex<'_> {
    fn insert_message(&self, m: &MessageRow, folder: &str) -> Result<Filed, StoreError> {
        let rows = self.tx.query(
            "INSERT INTO store_message (id, mailbox, received, size, flags, blob, mailbox_key_id,
                                        wrapped_key, meta, digest)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING seq",
            &[
                &m.id,
                &m.mailbox,
                &m.received,
                &m.size,
                &m.flags,
                &m.blob,
                &m.mailbox_key_id,
                &m.wrapped_key,
                &m.meta,
                &m.digest,
            ],
        )?;
        let seq: i64 = rows
            .first()
            .map(|r| r.get(0))
            .ok_or_else(|| StoreError::index(IndexErrorKind::Other, "INSERT returned no row"))?;
        let uid = self.file_message(seq, &m.mailbox, folder)?;
        Ok(Filed { seq, uid })
    }

    fn update_message_crypto(&self, m: &MessageRow) -> Result<(), StoreError> {
        self.tx.execute(
            "UPDATE store_message SET blob = $2, mailbox_key_id = $3, wrapped_key = $4, meta = $5,
                                      digest = $6
             WHERE seq = $1",
            &[
                &m.seq,
                &m.blob,
                &m.mailbox_key_id,
                &m.wrapped_key,
                &m.meta,
                &m.digest,
            ],
        )?;
        Ok(())
    }

    fn messages(&self, mailbox: &str) -> Result<Vec<MessageRow>, StoreError> {
        let rows = self.tx.query(
            &format!("SELECT {MESSAGE_COLUMNS} FROM store_message WHERE mailbox = $1 ORDER BY seq"),
            &[&mailbox],
        )?;
        Ok(rows.iter().map(message_row).collect())
    }

    fn all_messages(&self) -> Result<Vec<MessageRow>, StoreError> {
        let rows = self.tx.query(
            &format!("SELECT {MESSAGE_COLUMNS} FROM store_message ORDER BY seq"),
            &[],
        )?;
        Ok(rows.iter().map(message_row).collect())
    }

    fn message(&self, mailbox: &str, id: &str) -> Result<Option<MessageRow>, StoreError> {
        let rows = self.tx.query(
            &format!("SELECT {MESSAGE_COLUMNS} FROM store_message WHERE mailbox = $1 AND id = $2"),
            &[&mailbox, &id],
        )?;
        Ok(rows.first().map(message_row))
    }

    fn count(&self, mailbox: &str) -> Result<usize, StoreError> {
        let rows = self.tx.query(
            "SELECT COUNT(*) FROM store_message WHERE mailbox = $1",
            &[&mailbox],
        )?;
        Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0)) as usize)
    }

    fn mailboxes(&self) -> Result<Vec<String>, StoreError> {
        let rows = self.tx.query(
            "SELECT mailbox FROM (SELECT mailbox FROM store_message
                                  UNION SELECT mailbox FROM mailbox_key) m
             ORDER BY mailbox COLLATE \"C\"",
            &[],
        )?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn delivered(&self, mailbox: &str, tag: &[u8]) -> Result<Option<String>, StoreError> {
        let rows = self.tx.query(
            "SELECT message_id FROM store_delivery WHERE mailbox = $1 AND tag = $2",
            &[&mailbox, &tag],
        )?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    /// Another node's transaction holding the tag makes this one wait until it ends: then the
    /// tag is either recorded (and its message id returned) or free again.
    fn insert_delivery(
        &self,
        mailbox: &str,
        tag: &[u8],
        message_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let n = self.tx.execute(
            "INSERT INTO store_delivery (mailbox, tag, message_id, created) VALUES ($1, $2, $3, $4)
             ON CONFLICT (mailbox, tag) DO NOTHING",
            &[&mailbox, &tag, &message_id, &now()],
        )?;
        if n == 1 {
            return Ok(None);
        }
        self.delivered(mailbox, tag)
    }

    fn prune_deliveries(&self, before: i64) -> Result<u64, StoreError> {
        self.tx
            .execute("DELETE FROM store_delivery WHERE created < $1", &[&before])
    }

    fn ensure_folder(
        &self,
        mailbox: &str,
        name: &str,
        special: Option<&str>,
    ) -> Result<i64, StoreError> {
        if let Some(id) = self.folder_id(mailbox, name)? {
            return Ok(id);
        }
        // Never reused for the mailbox, even after its folder with the highest one was deleted.
        let validity: i64 = self
            .tx
            .query(
                "INSERT INTO store_uidvalidity (mailbox, last) VALUES ($1, $2)
                 ON CONFLICT (mailbox)
                 DO UPDATE SET last = GREATEST(excluded.last, store_uidvalidity.last + 1)
                 RETURNING last",
                &[&mailbox, &now()],
            )?
            .first()
            .map(|r| r.get(0))
            .ok_or_else(|| no_row("UIDVALIDITY"))?;
        let rows = self.tx.query(
            "INSERT INTO store_folder (mailbox, name, uidvalidity, uidnext, special)
             VALUES ($1, $2, $3, 1, $4)
             ON CONFLICT (mailbox, name) DO NOTHING RETURNING id",
            &[&mailbox, &name, &validity, &special],
        )?;
        match rows.first() {
            Some(r) => Ok(r.get(0)),
            // Made meanwhile by another node.
            None => self
                .folder_id(mailbox, name)?
                .ok_or_else(|| no_row("folder made and gone")),
        }
    }

    fn folder_id(&self, mailbox: &str, name: &str) -> Result<Option<i64>, StoreError> {
        let rows = self.tx.query(
            "SELECT id FROM store_folder WHERE mailbox = $1 AND name = $2",
            &[&mailbox, &name],
        )?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    fn folder_list(&self, mailbox: &str) -> Result<Vec<(String, Option<String>)>, StoreError> {
        let rows = self.tx.query(
            "SELECT name, special FROM store_folder WHERE mailbox = $1
             ORDER BY name <> 'INBOX', name COLLATE \"C\"",
            &[&mailbox],
        )?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn rename_folder(&self, mailbox: &str, from: &str, to: &str) -> Result<(), StoreError> {
        self.tx.execute(
            "UPDATE store_folder SET name = $3 WHERE mailbox = $1 AND name = $2",
            &[&mailbox, &from, &to],
        )?;
        let (from, to) = (format!("{from}/"), format!("{to}/"));
        self.tx.execute(
            "UPDATE store_folder SET name = $3::text || substr(name, length($2::text) + 1)
             WHERE mailbox = $1 AND substr(name, 1, length($2::text)) = $2::text",
            &[&mailbox, &from, &to],
        )?;
        Ok(())
    }

    fn delete_folder(&self, folder_id: i64) -> Result<Vec<String>, StoreError> {
        let rows = self.tx.query(
            "DELETE FROM store_message WHERE folder_id = $1 RETURNING blob",
            &[&folder_id],
        )?;
        self.tx
            .execute("DELETE FROM store_folder WHERE id = $1", &[&folder_id])?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn folder_uids(&self, folder_id: i64) -> Result<(u32, u32), StoreError> {
        let rows = self.tx.query(
            "SELECT uidvalidity, uidnext FROM store_folder WHERE id = $1",
            &[&folder_id],
        )?;
        rows.first()
            .map(|r| (r.get::<_, i64>(0) as u32, r.get::<_, i64>(1) as u32))
            .ok_or_else(|| no_row("no such folder"))
    }

    fn folder_messages(&self, folder_id: i64) -> Result<Vec<FolderMessage>, StoreError> {
        let rows = self.tx.query(
            "SELECT uid, flags, keywords, size, received, modseq FROM store_message
             WHERE folder_id = $1 ORDER BY uid",
            &[&folder_id],
        )?;
        Ok(rows
            .iter()
            .map(|r| FolderMessage {
                uid: r.get::<_, i64>(0) as u32,
                flags: Flags::from_parts(r.get(1), r.get(2)),
                size: r.get::<_, i64>(3) as u64,
                internal_date: r.get(4),
                modseq: r.get(5),
            })
            .collect())
    }

    fn message_at(&self, folder_id: i64, uid: u32) -> Result<Option<Located>, StoreError> {
        let rows = self.tx.query(
            "SELECT seq, id, received, flags, keywords FROM store_message
             WHERE folder_id = $1 AND uid = $2",
            &[&folder_id, &i64::from(uid)],
        )?;
        Ok(rows.first().map(|r| Located {
            seq: r.get(0),
            id: r.get(1),
            received: r.get(2),
            flags: Flags::from_parts(r.get(3), r.get(4)),
        }))
    }

    fn write_flags(&self, seq: i64, flags: &Flags) -> Result<(), StoreError> {
        let modseq = self.next_modseq(&self.mailbox_of(seq)?)?;
        self.tx.execute(
            "UPDATE store_message SET flags = $2, keywords = $3, modseq = $4 WHERE seq = $1",
            &[&seq, &flags.system, &flags.keywords_text(), &modseq],
        )?;
        Ok(())
    }

    /// The folder's row stays locked until the transaction ends: a node filing into the same
    /// folder waits, and gets the next UID after this one committed.
    fn file_message(&self, seq: i64, mailbox: &str, folder: &str) -> Result<u32, StoreError> {
        let fid = self.ensure_folder(mailbox, folder, None)?;
        let uid: i64 = self
            .tx
            .query(
                "UPDATE store_folder SET uidnext = uidnext + 1 WHERE id = $1 RETURNING uidnext - 1",
                &[&fid],
            )?
            .first()
            .map(|r| r.get(0))
            .ok_or_else(|| no_row("no such folder"))?;
        let modseq = self.next_modseq(mailbox)?;
        self.tx.execute(
            "UPDATE store_message SET folder_id = $2, uid = $3, modseq = $4 WHERE seq = $1",
            &[&seq, &fid, &uid, &modseq],
        )?;
        Ok(uid as u32)
    }

    fn expunge(&self, folder_id: i64, uid: Option<u32>) -> Result<Vec<(u32, String)>, StoreError> {
        let rows = self.tx.query(
            "DELETE FROM store_message
             WHERE folder_id = $1 AND (flags & $2) != 0 AND ($3::bigint IS NULL OR uid = $3)
             RETURNING uid, blob",
            &[&folder_id, &system::DELETED, &uid.map(i64::from)],
        )?;
        let mut out: Vec<(u32, String)> = rows
            .iter()
            .map(|r| (r.get::<_, i64>(0) as u32, r.get(1)))
            .collect();
        out.sort();
        Ok(out)
    }

    fn announce(&self, mailbox: &str) -> Result<(), StoreError> {
        let changes = self.tx.changes.as_ref().ok_or_else(|| {
            StoreError::Internal("a transaction outside the store cannot announce changes".into())
        })?;
        // Sent to the listeners when the transaction commits, not before, not if it rolls back;
        // a payload repeated in one transaction is sent once.
        self.tx.query(
            "SELECT pg_notify($1, $2)",
            &[&CHANNEL, &changes.payload(mailbox)],
        )?;
        Ok(())
    }
}

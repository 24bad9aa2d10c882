//! The store's SQLite index (`store/index.sqlite`) as an [`IndexBackend`]: one connection behind
//! a lock, a transaction holding the lock; message rows, delivery tags and folders through the
//! schema and statements of `index` and `folder_index`.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};

use super::sqlite::SqliteKeyIndex;
use super::{Filed, IndexBackend, IndexTransaction, KeyIndex, Located, MessageIndex};
use crate::store::folder_index as fx;
use crate::store::folders::{system, Flags, FolderMessage};
use crate::store::index::{self, MessageRow};
use crate::store::StoreError;

/// The index file of one store.
pub struct SqliteIndex {
    conn: Mutex<Connection>,
}

impl SqliteIndex {
    /// Opens (creating, upgrading) the index file.
    pub fn open(path: &Path) -> Result<SqliteIndex, StoreError> {
        Ok(SqliteIndex {
            conn: Mutex::new(index::open(path)?),
        })
    }

    /// The connection, in a transaction begun with `begin` (none: every statement commits on
    /// its own).
    fn begin(&self, begin: Option<&str>) -> Result<Box<dyn IndexTransaction + '_>, StoreError> {
        let c = self
            .conn
            .lock()
            .map_err(|_| StoreError::Internal("index lock poisoned".into()))?;
        if let Some(sql) = begin {
            c.execute_batch(sql)?;
        }
        Ok(Box::new(SqliteTransaction {
            c,
            open: begin.is_some(),
        }))
    }
}

impl IndexBackend for SqliteIndex {
    fn write(&self) -> Result<Box<dyn IndexTransaction + '_>, StoreError> {
        self.begin(Some("BEGIN IMMEDIATE"))
    }

    /// No transaction: a deferred one that unwraps a key would have to upgrade to write its
    /// audit anchor, which WAL refuses at once (not after the busy timeout) when another process
    /// wrote meanwhile; each statement on its own reads the newest committed state.
    fn read(&self) -> Result<Box<dyn IndexTransaction + '_>, StoreError> {
        self.begin(None)
    }

    fn checkpoint(&self) -> Result<(), StoreError> {
        let c = self
            .conn
            .lock()
            .map_err(|_| StoreError::Internal("index lock poisoned".into()))?;
        index::checkpoint(&c)
    }

    fn relay_changes(&self) {}
}

/// A transaction on the index's connection, holding its lock.
pub struct SqliteTransaction<'a> {
    c: MutexGuard<'a, Connection>,
    open: bool,
}

impl IndexTransaction for SqliteTransaction<'_> {
    fn keys(&self) -> Box<dyn KeyIndex + '_> {
        Box::new(SqliteKeyIndex::new(&self.c))
    }

    fn messages(&self) -> Box<dyn MessageIndex + '_> {
        Box::new(SqliteMessageIndex::new(&self.c))
    }

    fn commit(self: Box<Self>) -> Result<(), StoreError> {
        let mut this = self;
        if this.open {
            this.c.execute_batch("COMMIT")?;
            this.open = false;
        }
        Ok(())
    }
}

impl Drop for SqliteTransaction<'_> {
    fn drop(&mut self) {
        if self.open {
            let _ = self.c.execute_batch("ROLLBACK");
        }
    }
}

/// The message index over an SQLite connection or transaction: every call runs in whatever
/// transaction the connection is in.
#[derive(Clone, Copy)]
pub struct SqliteMessageIndex<'c> {
    c: &'c Connection,
}

impl<'c> SqliteMessageIndex<'c> {
    pub fn new(c: &'c Connection) -> Self {
        SqliteMessageIndex { c }
    }
}

impl MessageIndex for SqliteMessageIndex<'_> {
    fn insert_message(&self, m: &MessageRow, folder: &str) -> Result<Filed, StoreError> {
        let (seq, uid) = index::insert_message_in(self.c, m, folder)?;
        Ok(Filed { seq, uid })
    }

    fn update_message_crypto(&self, m: &MessageRow) -> Result<(), StoreError> {
        index::update_message_crypto(self.c, m)
    }

    fn messages(&self, mailbox: &str) -> Result<Vec<MessageRow>, StoreError> {
        index::messages(self.c, mailbox)
    }

    fn all_messages(&self) -> Result<Vec<MessageRow>, StoreError> {
        index::all_messages(self.c)
    }

    fn message(&self, mailbox: &str, id: &str) -> Result<Option<MessageRow>, StoreError> {
        index::message(self.c, mailbox, id)
    }

    fn count(&self, mailbox: &str) -> Result<usize, StoreError> {
        index::count(self.c, mailbox)
    }

    fn mailboxes(&self) -> Result<Vec<String>, StoreError> {
        index::mailboxes(self.c)
    }

    fn delivered(&self, mailbox: &str, tag: &[u8]) -> Result<Option<String>, StoreError> {
        index::delivered(self.c, mailbox, tag)
    }

    fn insert_delivery(
        &self,
        mailbox: &str,
        tag: &[u8],
        message_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let n = self.c.execute(
            "INSERT INTO deliveries(mailbox, tag, message_id, created) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(mailbox, tag) DO NOTHING",
            params![mailbox, tag, message_id, index::now()],
        )?;
        if n == 1 {
            return Ok(None);
        }
        index::delivered(self.c, mailbox, tag)
    }

    fn prune_deliveries(&self, before: i64) -> Result<u64, StoreError> {
        Ok(index::prune_deliveries(self.c, before)? as u64)
    }

    fn ensure_folder(
        &self,
        mailbox: &str,
        name: &str,
        special: Option<&str>,
    ) -> Result<i64, StoreError> {
        fx::ensure_folder(self.c, mailbox, name, special)
    }

    fn folder_id(&self, mailbox: &str, name: &str) -> Result<Option<i64>, StoreError> {
        fx::folder_id(self.c, mailbox, name)
    }

    fn folder_list(&self, mailbox: &str) -> Result<Vec<(String, Option<String>)>, StoreError> {
        fx::folder_list(self.c, mailbox)
    }

    fn rename_folder(&self, mailbox: &str, from: &str, to: &str) -> Result<(), StoreError> {
        self.c.execute(
            "UPDATE folders SET name = ?3 WHERE mailbox = ?1 AND name = ?2",
            params![mailbox, from, to],
        )?;
        self.c.execute(
            "UPDATE folders SET name = ?3 || substr(name, length(?2) + 1)
             WHERE mailbox = ?1 AND substr(name, 1, length(?2)) = ?2",
            params![mailbox, format!("{from}/"), format!("{to}/")],
        )?;
        Ok(())
    }

    fn delete_folder(&self, folder_id: i64) -> Result<Vec<String>, StoreError> {
        let blobs: Vec<String> = {
            let mut st = self
                .c
                .prepare("SELECT blob FROM messages WHERE folder_id = ?1 ORDER BY uid")?;
            let rows = st.query_map([folder_id], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        self.c
            .execute("DELETE FROM messages WHERE folder_id = ?1", [folder_id])?;
        self.c
            .execute("DELETE FROM folders WHERE id = ?1", [folder_id])?;
        Ok(blobs)
    }

    fn folder_uids(&self, folder_id: i64) -> Result<(u32, u32), StoreError> {
        fx::folder_uids(self.c, folder_id)
    }

    fn folder_messages(&self, folder_id: i64) -> Result<Vec<FolderMessage>, StoreError> {
        fx::folder_messages(self.c, folder_id)
    }

    fn message_at(&self, folder_id: i64, uid: u32) -> Result<Option<Located>, StoreError> {
        Ok(self
            .c
            .query_row(
                "SELECT seq, id, received, flags, keywords FROM messages
                 WHERE folder_id = ?1 AND uid = ?2",
                params![folder_id, uid],
                |r| {
                    Ok(Located {
                        seq: r.get(0)?,
                        id: r.get(1)?,
                        received: r.get(2)?,
                        flags: Flags::from_parts(r.get(3)?, &r.get::<_, String>(4)?),
                    })
                },
            )
            .optional()?)
    }

    fn write_flags(&self, seq: i64, flags: &Flags) -> Result<(), StoreError> {
        fx::write_flags(self.c, seq, flags)
    }

    fn file_message(&self, seq: i64, mailbox: &str, folder: &str) -> Result<u32, StoreError> {
        fx::file_message(self.c, seq, mailbox, folder)
    }

    fn expunge(&self, folder_id: i64, uid: Option<u32>) -> Result<Vec<(u32, String)>, StoreError> {
        let found: Vec<(i64, u32, String)> = {
            let mut st = self.c.prepare(
                "SELECT seq, uid, blob FROM messages
                 WHERE folder_id = ?1 AND (flags & ?2) != 0 AND (?3 IS NULL OR uid = ?3)
                 ORDER BY uid",
            )?;
            let rows = st.query_map(params![folder_id, system::DELETED, uid], |r| {
                Ok((r.get(0)?, r.get::<_, i64>(1)? as u32, r.get(2)?))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        for (seq, _, _) in &found {
            self.c
                .execute("DELETE FROM messages WHERE seq = ?1", [seq])?;
        }
        Ok(found.into_iter().map(|(_, u, b)| (u, b)).collect())
    }

    fn announce(&self, _mailbox: &str) -> Result<(), StoreError> {
        Ok(())
    }
}

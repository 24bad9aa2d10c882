//! The key hierarchy in the store's SQLite index (`store/index.sqlite`; schema in `index`).

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{KeyIndex, MailboxKeyRow, PolicyKeyRow, Shredded, WrapRow};
use crate::store::audit::Anchor;
use crate::store::index::now;
use crate::store::{IndexErrorKind, StoreError};

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        let kind = match &e {
            rusqlite::Error::QueryReturnedNoRows => IndexErrorKind::NotFound,
            _ => match e.sqlite_error_code() {
                Some(C::ConstraintViolation) => IndexErrorKind::Conflict,
                Some(
                    C::DatabaseBusy
                    | C::DatabaseLocked
                    | C::CannotOpen
                    | C::SystemIoFailure
                    | C::DiskFull
                    | C::OutOfMemory
                    | C::FileLockingProtocolFailed
                    | C::PermissionDenied
                    | C::ReadOnly,
                ) => IndexErrorKind::Unavailable,
                _ => IndexErrorKind::Other,
            },
        };
        StoreError::index(kind, e.to_string())
    }
}

/// The key index over an SQLite connection, or a transaction (which derefs to one): every call
/// runs in whatever transaction the connection is in.
#[derive(Clone, Copy)]
pub struct SqliteKeyIndex<'c> {
    c: &'c Connection,
}

impl<'c> SqliteKeyIndex<'c> {
    pub fn new(c: &'c Connection) -> Self {
        SqliteKeyIndex { c }
    }
}

const MAILBOX_KEY_COLUMNS: &str = "id, mailbox, policy_key_id, wrapped, state";

fn policy_key_row(r: &Row<'_>) -> rusqlite::Result<PolicyKeyRow> {
    Ok(PolicyKeyRow {
        id: r.get(0)?,
        policy: r.get(1)?,
        generation: r.get(2)?,
        state: r.get(3)?,
    })
}

/// A mailbox key from a row of `MAILBOX_KEY_COLUMNS`.
pub(in crate::store) fn mailbox_key_row(r: &Row<'_>) -> rusqlite::Result<MailboxKeyRow> {
    Ok(MailboxKeyRow {
        id: r.get(0)?,
        mailbox: r.get(1)?,
        policy_key_id: r.get(2)?,
        wrapped: r.get(3)?,
        state: r.get(4)?,
    })
}

impl KeyIndex for SqliteKeyIndex<'_> {
    /// The store writes keys in `BEGIN IMMEDIATE` transactions, which exclude each other.
    fn lock_key_creation(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn active_policy_key(&self, policy: &str) -> Result<Option<PolicyKeyRow>, StoreError> {
        Ok(self
            .c
            .query_row(
                "SELECT id, policy, generation, state FROM policy_keys
                 WHERE policy = ?1 AND state = 'active' ORDER BY generation DESC LIMIT 1",
                [policy],
                policy_key_row,
            )
            .optional()?)
    }

    fn policy_revoked(&self, policy: &str) -> Result<bool, StoreError> {
        Ok(self.c.query_row(
            "SELECT COUNT(*) FROM policy_keys WHERE policy = ?1 AND state = 'revoked'",
            [policy],
            |r| r.get::<_, i64>(0),
        )? > 0)
    }

    fn policy_key(&self, id: i64) -> Result<Option<PolicyKeyRow>, StoreError> {
        Ok(self
            .c
            .query_row(
                "SELECT id, policy, generation, state FROM policy_keys WHERE id = ?1",
                [id],
                policy_key_row,
            )
            .optional()?)
    }

    /// The key row and its wraps are written together (a savepoint: a transaction of its own, or
    /// part of the caller's): a crash in between must not leave an active generation that no root
    /// key opens, which would stop every delivery under the policy.
    fn insert_policy_key(
        &self,
        policy: &str,
        wraps: &[WrapRow],
    ) -> Result<PolicyKeyRow, StoreError> {
        let c = self.c;
        c.execute_batch("SAVEPOINT insert_policy_key")?;
        let inserted = (|| {
            let generation: i64 = c.query_row(
                "SELECT COALESCE(MAX(generation), 0) + 1 FROM policy_keys WHERE policy = ?1",
                [policy],
                |r| r.get(0),
            )?;
            c.execute(
                "INSERT INTO policy_keys(policy, generation, state, created) VALUES (?1, ?2, 'active', ?3)",
                params![policy, generation, now()],
            )?;
            let id = c.last_insert_rowid();
            for w in wraps {
                c.execute(
                    "INSERT INTO policy_key_wraps(policy_key_id, kind, key_id, wrapped) VALUES (?1, ?2, ?3, ?4)",
                    params![id, w.kind, w.key_id, w.wrapped],
                )?;
            }
            Ok::<_, rusqlite::Error>((id, generation))
        })();
        let (id, generation) = match inserted {
            Ok(done) => {
                c.execute_batch("RELEASE insert_policy_key")?;
                done
            }
            Err(e) => {
                let _ = c.execute_batch("ROLLBACK TO insert_policy_key; RELEASE insert_policy_key");
                return Err(e.into());
            }
        };
        Ok(PolicyKeyRow {
            id,
            policy: policy.to_string(),
            generation,
            state: "active".into(),
        })
    }

    fn wraps(&self, policy_key_id: i64) -> Result<Vec<WrapRow>, StoreError> {
        let mut st = self.c.prepare(
            "SELECT kind, key_id, wrapped FROM policy_key_wraps WHERE policy_key_id = ?1 ORDER BY kind DESC, key_id",
        )?;
        let rows = st.query_map([policy_key_id], |r| {
            Ok(WrapRow {
                kind: r.get(0)?,
                key_id: r.get(1)?,
                wrapped: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn replace_root_wrap(
        &self,
        policy_key_id: i64,
        old_key_id: &str,
        new_key_id: &str,
        wrapped: &[u8],
    ) -> Result<bool, StoreError> {
        let n = self.c.execute(
            "UPDATE policy_key_wraps SET key_id = ?3, wrapped = ?4
             WHERE policy_key_id = ?1 AND key_id = ?2 AND kind = 'root'",
            params![policy_key_id, old_key_id, new_key_id, wrapped],
        )?;
        Ok(n == 1)
    }

    fn retire_policy_key(&self, id: i64) -> Result<(), StoreError> {
        self.c.execute(
            "DELETE FROM policy_key_wraps WHERE policy_key_id = ?1",
            [id],
        )?;
        self.c.execute(
            "UPDATE policy_keys SET state = 'retired' WHERE id = ?1",
            [id],
        )?;
        Ok(())
    }

    fn current_mailbox_key(&self, mailbox: &str) -> Result<Option<MailboxKeyRow>, StoreError> {
        Ok(self
            .c
            .query_row(
                &format!(
                    "SELECT {MAILBOX_KEY_COLUMNS} FROM mailbox_keys
                     WHERE mailbox = ?1 ORDER BY id DESC LIMIT 1"
                ),
                [mailbox],
                mailbox_key_row,
            )
            .optional()?)
    }

    fn mailbox_key(&self, id: i64) -> Result<Option<MailboxKeyRow>, StoreError> {
        Ok(self
            .c
            .query_row(
                &format!("SELECT {MAILBOX_KEY_COLUMNS} FROM mailbox_keys WHERE id = ?1"),
                [id],
                mailbox_key_row,
            )
            .optional()?)
    }

    fn insert_mailbox_key(
        &self,
        mailbox: &str,
        policy_key_id: i64,
        wrapped: &[u8],
    ) -> Result<i64, StoreError> {
        self.c.execute(
            "INSERT INTO mailbox_keys(mailbox, policy_key_id, wrapped, state, created)
             VALUES (?1, ?2, ?3, 'active', ?4)",
            params![mailbox, policy_key_id, wrapped, now()],
        )?;
        Ok(self.c.last_insert_rowid())
    }

    fn rewrap_mailbox_key(
        &self,
        id: i64,
        policy_key_id: i64,
        wrapped: &[u8],
    ) -> Result<(), StoreError> {
        self.c.execute(
            "UPDATE mailbox_keys SET policy_key_id = ?2, wrapped = ?3 WHERE id = ?1 AND state = 'active'",
            params![id, policy_key_id, wrapped],
        )?;
        Ok(())
    }

    fn mailbox_keys_under(&self, policy_key_id: i64) -> Result<Vec<MailboxKeyRow>, StoreError> {
        let mut st = self.c.prepare(&format!(
            "SELECT {MAILBOX_KEY_COLUMNS} FROM mailbox_keys
             WHERE policy_key_id = ?1 AND state = 'active' ORDER BY id"
        ))?;
        let rows = st.query_map([policy_key_id], mailbox_key_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn revoke_policy(&self, policy: &str) -> Result<Shredded, StoreError> {
        let c = self.c;
        let messages: i64 = c.query_row(
            "SELECT COUNT(*) FROM messages WHERE mailbox_key_id IN
               (SELECT mk.id FROM mailbox_keys mk JOIN policy_keys pk ON mk.policy_key_id = pk.id
                WHERE pk.policy = ?1 AND mk.state = 'active')",
            [policy],
            |r| r.get(0),
        )?;
        let mailbox_keys = c.execute(
            "UPDATE mailbox_keys SET wrapped = NULL, state = 'revoked' WHERE state = 'active' AND
               policy_key_id IN (SELECT id FROM policy_keys WHERE policy = ?1)",
            [policy],
        )?;
        c.execute(
            "DELETE FROM policy_key_wraps WHERE policy_key_id IN
               (SELECT id FROM policy_keys WHERE policy = ?1)",
            [policy],
        )?;
        let generations = c.execute(
            "UPDATE policy_keys SET state = 'revoked' WHERE policy = ?1 AND state != 'revoked'",
            [policy],
        )?;
        Ok(Shredded {
            generations: generations as u64,
            mailbox_keys: mailbox_keys as u64,
            messages: messages as u64,
        })
    }

    fn audit_anchor(&self) -> Result<Option<Anchor>, StoreError> {
        Ok(self
            .c
            .query_row("SELECT seq, hash FROM audit_anchor WHERE id = 1", [], |r| {
                Ok(Anchor {
                    seq: r.get::<_, i64>(0)? as u64,
                    hash: r.get(1)?,
                })
            })
            .optional()?)
    }

    fn set_audit_anchor(&self, a: &Anchor) -> Result<(), StoreError> {
        self.c.execute(
            "INSERT INTO audit_anchor(id, seq, hash) VALUES (1, ?1, ?2)
             ON CONFLICT(id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash
             WHERE excluded.seq > audit_anchor.seq",
            params![a.seq as i64, a.hash],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::index;

    #[test]
    fn sqlite_errors_are_sorted_into_kinds() {
        let dir = tempfile::tempdir().unwrap();
        let c = index::open(&dir.path().join("index.sqlite")).unwrap();
        let ix = SqliteKeyIndex::new(&c);
        // A mailbox key under a policy key that does not exist: a dangling reference.
        let e = ix.insert_mailbox_key("a@t.test", 99, b"w").unwrap_err();
        assert_eq!(e.index_kind(), Some(IndexErrorKind::Conflict), "{e}");
        assert!(e.to_string().starts_with("index: "), "{e}");
        let e: StoreError = c
            .query_row("SELECT 1 WHERE 0", [], |r| r.get::<_, i64>(0))
            .unwrap_err()
            .into();
        assert_eq!(e.index_kind(), Some(IndexErrorKind::NotFound));

        // Another connection holding the write lock: busy, which is worth retrying later.
        let other = Connection::open(dir.path().join("index.sqlite")).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        c.busy_timeout(std::time::Duration::ZERO).unwrap();
        let e = ix.insert_policy_key("p", &[]).unwrap_err();
        assert_eq!(e.index_kind(), Some(IndexErrorKind::Unavailable), "{e}");
        other.execute_batch("ROLLBACK").unwrap();

        let e = StoreError::Integrity("x".into());
        assert_eq!(e.index_kind(), None);
    }

    #[test]
    fn a_policy_key_is_stored_with_all_its_wraps_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let c = index::open(&dir.path().join("index.sqlite")).unwrap();
        let ix = SqliteKeyIndex::new(&c);
        let wrap = |key_id: &str| WrapRow {
            kind: "root".into(),
            key_id: key_id.into(),
            wrapped: b"w".to_vec(),
        };
        // The second wrap fails (the same key twice): the key row goes too.
        assert!(ix.insert_policy_key("p", &[wrap("a"), wrap("a")]).is_err());
        let rows: i64 = c
            .query_row("SELECT count(*) FROM policy_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 0, "a generation without its wraps was left behind");
        let pk = ix.insert_policy_key("p", &[wrap("a"), wrap("b")]).unwrap();
        assert_eq!(pk.generation, 1);
        assert_eq!(ix.wraps(pk.id).unwrap().len(), 2);
    }
}

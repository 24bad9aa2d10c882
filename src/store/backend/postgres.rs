//! The key hierarchy in PostgreSQL (schema `src/pg/schema/002_mailbox_keys.sql`), for nodes that
//! share one database. A [`PgTransaction`] holds one connection in a transaction across blocking
//! calls; its [`PgKeyIndex`] runs every statement in it. Dropped without `commit`, it rolls back.

use std::sync::Arc;

use deadpool_postgres::Client;
use tokio_postgres::error::SqlState;
use tokio_postgres::Row;

use super::pg_changes::MailboxChanges;
use super::{KeyIndex, MailboxKeyRow, PolicyKeyRow, Shredded, WrapRow};
use crate::pg::{Database, DbError};
use crate::store::audit::Anchor;
use crate::store::index::now;
use crate::store::{IndexErrorKind, StoreError};

impl From<DbError> for StoreError {
    fn from(e: DbError) -> Self {
        let kind = match &e {
            DbError::Postgres(pg) => match pg.code() {
                Some(code) if code.code().starts_with("23") => IndexErrorKind::Conflict,
                Some(
                    &SqlState::T_R_SERIALIZATION_FAILURE
                    | &SqlState::T_R_DEADLOCK_DETECTED
                    | &SqlState::LOCK_NOT_AVAILABLE
                    | &SqlState::QUERY_CANCELED
                    | &SqlState::ADMIN_SHUTDOWN
                    | &SqlState::CANNOT_CONNECT_NOW
                    | &SqlState::TOO_MANY_CONNECTIONS,
                ) => IndexErrorKind::Unavailable,
                Some(_) => IndexErrorKind::Other,
                // No SQL state: the connection broke.
                None => IndexErrorKind::Unavailable,
            },
            DbError::Pool(_) | DbError::Timeout(_) => IndexErrorKind::Unavailable,
            DbError::Settings(_) | DbError::SchemaTooNew { .. } => IndexErrorKind::Other,
        };
        StoreError::index(kind, e.to_string())
    }
}

/// One transaction on one connection of the database.
pub struct PgTransaction {
    db: Arc<Database>,
    client: Option<Client>,
    /// The node whose audit log the key index anchors.
    node: Arc<str>,
    /// How the message index announces changes (a transaction of a [`super::pg_messages::PgIndex`]).
    pub(super) changes: Option<Arc<MailboxChanges>>,
}

impl PgTransaction {
    /// Takes a connection from the pool and begins a transaction on it; audit anchors are those
    /// of the unnamed node.
    pub fn begin(db: &Arc<Database>) -> Result<PgTransaction, StoreError> {
        Self::begin_on(db, Arc::from(""))
    }

    /// Begins a transaction of node `node`: its key index anchors that node's audit log (each
    /// node keeps its own log file).
    pub fn begin_on(db: &Arc<Database>, node: Arc<str>) -> Result<PgTransaction, StoreError> {
        let client = db.connection()?;
        db.block_on(async { Ok(client.batch_execute("BEGIN").await?) })?;
        Ok(PgTransaction {
            db: db.clone(),
            client: Some(client),
            node,
            changes: None,
        })
    }

    /// The key index inside this transaction.
    pub fn key_index(&self) -> PgKeyIndex<'_> {
        PgKeyIndex { tx: self }
    }

    /// Commits; the transaction's changes are durable once this returns `Ok`.
    pub fn commit(mut self) -> Result<(), StoreError> {
        let client = self
            .client
            .take()
            .expect("a transaction holds its connection");
        self.db
            .block_on(async { Ok(client.batch_execute("COMMIT").await?) })
            .inspect_err(|_| drop(deadpool_postgres::Object::take(client)))?;
        Ok(())
    }

    fn client(&self) -> &Client {
        self.client
            .as_ref()
            .expect("a transaction holds its connection")
    }

    /// The rows of one statement.
    pub(crate) fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let c = self.client();
        Ok(self
            .db
            .block_on(async { Ok(c.query(sql, params).await?) })?)
    }

    /// The rows one statement changed.
    pub(crate) fn execute(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        let c = self.client();
        Ok(self
            .db
            .block_on(async { Ok(c.execute(sql, params).await?) })?)
    }
}

impl Drop for PgTransaction {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let rolled_back = self
                .db
                .block_on(async { Ok(client.batch_execute("ROLLBACK").await?) });
            if rolled_back.is_err() {
                // A connection in an unknown state never goes back to the pool.
                drop(deadpool_postgres::Object::take(client));
            }
        }
    }
}

/// The key index over a [`PgTransaction`].
#[derive(Clone, Copy)]
pub struct PgKeyIndex<'t> {
    tx: &'t PgTransaction,
}

const MAILBOX_KEY_COLUMNS: &str = "id, mailbox, policy_key_id, wrapped, state";

fn policy_key_row(r: &Row) -> PolicyKeyRow {
    PolicyKeyRow {
        id: r.get(0),
        policy: r.get(1),
        generation: r.get(2),
        state: r.get(3),
    }
}

fn mailbox_key_row(r: &Row) -> MailboxKeyRow {
    MailboxKeyRow {
        id: r.get(0),
        mailbox: r.get(1),
        policy_key_id: r.get(2),
        wrapped: r.get(3),
        state: r.get(4),
    }
}

impl KeyIndex for PgKeyIndex<'_> {
    fn lock_key_creation(&self) -> Result<(), StoreError> {
        self.tx.query(
            "SELECT pg_advisory_xact_lock(hashtextextended('sealpost key creation', 0))",
            &[],
        )?;
        Ok(())
    }

    fn active_policy_key(&self, policy: &str) -> Result<Option<PolicyKeyRow>, StoreError> {
        let rows = self.tx.query(
            "SELECT id, policy, generation, state FROM policy_key
             WHERE policy = $1 AND state = 'active' ORDER BY generation DESC LIMIT 1",
            &[&policy],
        )?;
        Ok(rows.first().map(policy_key_row))
    }

    fn policy_revoked(&self, policy: &str) -> Result<bool, StoreError> {
        let rows = self.tx.query(
            "SELECT 1 FROM policy_key WHERE policy = $1 AND state = 'revoked' LIMIT 1",
            &[&policy],
        )?;
        Ok(!rows.is_empty())
    }

    fn policy_key(&self, id: i64) -> Result<Option<PolicyKeyRow>, StoreError> {
        let rows = self.tx.query(
            "SELECT id, policy, generation, state FROM policy_key WHERE id = $1",
            &[&id],
        )?;
        Ok(rows.first().map(policy_key_row))
    }

    fn insert_policy_key(
        &self,
        policy: &str,
        wraps: &[WrapRow],
    ) -> Result<PolicyKeyRow, StoreError> {
        // Nodes creating a generation of one policy at once take turns (the lock ends with the
        // transaction), so neither reads a stale highest generation.
        self.tx.query(
            "SELECT pg_advisory_xact_lock(hashtextextended('sealpost policy key ' || $1, 0))",
            &[&policy],
        )?;
        let rows = self.tx.query(
            "INSERT INTO policy_key (policy, generation, state, created)
             SELECT $1, COALESCE(MAX(generation), 0) + 1, 'active', $2
               FROM policy_key WHERE policy = $1
             RETURNING id, policy, generation, state",
            &[&policy, &now()],
        )?;
        let row = rows
            .first()
            .map(policy_key_row)
            .ok_or_else(|| StoreError::index(IndexErrorKind::Other, "INSERT returned no row"))?;
        for w in wraps {
            self.tx.execute(
                "INSERT INTO policy_key_wrap (policy_key_id, kind, key_id, wrapped)
                 VALUES ($1, $2, $3, $4)",
                &[&row.id, &w.kind, &w.key_id, &w.wrapped],
            )?;
        }
        Ok(row)
    }

    fn wraps(&self, policy_key_id: i64) -> Result<Vec<WrapRow>, StoreError> {
        let rows = self.tx.query(
            "SELECT kind, key_id, wrapped FROM policy_key_wrap WHERE policy_key_id = $1
             ORDER BY kind DESC, key_id COLLATE \"C\"",
            &[&policy_key_id],
        )?;
        Ok(rows
            .iter()
            .map(|r| WrapRow {
                kind: r.get(0),
                key_id: r.get(1),
                wrapped: r.get(2),
            })
            .collect())
    }

    fn replace_root_wrap(
        &self,
        policy_key_id: i64,
        old_key_id: &str,
        new_key_id: &str,
        wrapped: &[u8],
    ) -> Result<bool, StoreError> {
        let n = self.tx.execute(
            "UPDATE policy_key_wrap SET key_id = $3, wrapped = $4
             WHERE policy_key_id = $1 AND key_id = $2 AND kind = 'root'",
            &[&policy_key_id, &old_key_id, &new_key_id, &wrapped],
        )?;
        Ok(n == 1)
    }

    fn retire_policy_key(&self, id: i64) -> Result<(), StoreError> {
        self.tx.execute(
            "DELETE FROM policy_key_wrap WHERE policy_key_id = $1",
            &[&id],
        )?;
        self.tx.execute(
            "UPDATE policy_key SET state = 'retired' WHERE id = $1",
            &[&id],
        )?;
        Ok(())
    }

    fn current_mailbox_key(&self, mailbox: &str) -> Result<Option<MailboxKeyRow>, StoreError> {
        let rows = self.tx.query(
            &format!(
                "SELECT {MAILBOX_KEY_COLUMNS} FROM mailbox_key
                 WHERE mailbox = $1 ORDER BY id DESC LIMIT 1"
            ),
            &[&mailbox],
        )?;
        Ok(rows.first().map(mailbox_key_row))
    }

    fn mailbox_key(&self, id: i64) -> Result<Option<MailboxKeyRow>, StoreError> {
        let rows = self.tx.query(
            &format!("SELECT {MAILBOX_KEY_COLUMNS} FROM mailbox_key WHERE id = $1"),
            &[&id],
        )?;
        Ok(rows.first().map(mailbox_key_row))
    }

    fn insert_mailbox_key(
        &self,
        mailbox: &str,
        policy_key_id: i64,
        wrapped: &[u8],
    ) -> Result<i64, StoreError> {
        let rows = self.tx.query(
            "INSERT INTO mailbox_key (mailbox, policy_key_id, wrapped, state, created)
             VALUES ($1, $2, $3, 'active', $4) RETURNING id",
            &[&mailbox, &policy_key_id, &wrapped, &now()],
        )?;
        rows.first()
            .map(|r| r.get(0))
            .ok_or_else(|| StoreError::index(IndexErrorKind::Other, "INSERT returned no row"))
    }

    fn rewrap_mailbox_key(
        &self,
        id: i64,
        policy_key_id: i64,
        wrapped: &[u8],
    ) -> Result<(), StoreError> {
        self.tx.execute(
            "UPDATE mailbox_key SET policy_key_id = $2, wrapped = $3
             WHERE id = $1 AND state = 'active'",
            &[&id, &policy_key_id, &wrapped],
        )?;
        Ok(())
    }

    fn mailbox_keys_under(&self, policy_key_id: i64) -> Result<Vec<MailboxKeyRow>, StoreError> {
        let rows = self.tx.query(
            &format!(
                "SELECT {MAILBOX_KEY_COLUMNS} FROM mailbox_key
                 WHERE policy_key_id = $1 AND state = 'active' ORDER BY id"
            ),
            &[&policy_key_id],
        )?;
        Ok(rows.iter().map(mailbox_key_row).collect())
    }

    fn revoke_policy(&self, policy: &str) -> Result<Shredded, StoreError> {
        let tx = self.tx;
        let messages: i64 = tx
            .query(
                "SELECT COUNT(*) FROM store_message WHERE mailbox_key_id IN
                   (SELECT mk.id FROM mailbox_key mk JOIN policy_key pk ON mk.policy_key_id = pk.id
                    WHERE pk.policy = $1 AND mk.state = 'active')",
                &[&policy],
            )?
            .first()
            .map(|r| r.get(0))
            .unwrap_or(0);
        let mailbox_keys = tx.execute(
            "UPDATE mailbox_key SET wrapped = NULL, state = 'revoked' WHERE state = 'active' AND
               policy_key_id IN (SELECT id FROM policy_key WHERE policy = $1)",
            &[&policy],
        )?;
        tx.execute(
            "DELETE FROM policy_key_wrap WHERE policy_key_id IN
               (SELECT id FROM policy_key WHERE policy = $1)",
            &[&policy],
        )?;
        let generations = tx.execute(
            "UPDATE policy_key SET state = 'revoked' WHERE policy = $1 AND state != 'revoked'",
            &[&policy],
        )?;
        Ok(Shredded {
            generations,
            mailbox_keys,
            messages: messages as u64,
        })
    }

    fn audit_anchor(&self) -> Result<Option<Anchor>, StoreError> {
        let rows = self.tx.query(
            "SELECT seq, hash FROM audit_anchor WHERE node = $1",
            &[&&*self.tx.node],
        )?;
        Ok(rows.first().map(|r| Anchor {
            seq: r.get::<_, i64>(0) as u64,
            hash: r.get(1),
        }))
    }

    fn set_audit_anchor(&self, a: &Anchor) -> Result<(), StoreError> {
        self.tx.execute(
            "INSERT INTO audit_anchor (node, seq, hash) VALUES ($1, $2, $3)
             ON CONFLICT (node) DO UPDATE SET seq = excluded.seq, hash = excluded.hash
             WHERE excluded.seq > audit_anchor.seq",
            &[&&*self.tx.node, &(a.seq as i64), &a.hash],
        )?;
        Ok(())
    }
}

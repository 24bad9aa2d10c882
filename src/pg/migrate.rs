//! Versioned schema migrations: `schema_version` records every migration applied; at start the
//! missing ones are applied in order, in one transaction, under an advisory lock (so that nodes
//! starting together do not race), and a database whose schema is newer than this program knows
//! is refused.

use deadpool_postgres::Pool;

use super::{connection, DbError};

/// One step of the schema.
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration this program knows, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "queue",
        sql: include_str!("schema/001_queue.sql"),
    },
    Migration {
        version: 2,
        name: "mailbox keys",
        sql: include_str!("schema/002_mailbox_keys.sql"),
    },
    Migration {
        version: 3,
        name: "mailbox store",
        sql: include_str!("schema/003_mailbox_store.sql"),
    },
    Migration {
        version: 4,
        name: "queue hold",
        sql: include_str!("schema/004_queue_hold.sql"),
    },
    Migration {
        version: 5,
        name: "queue transmissions",
        sql: include_str!("schema/005_queue_transmission.sql"),
    },
    Migration {
        version: 6,
        name: "tls report",
        sql: include_str!("schema/006_tls_report.sql"),
    },
    Migration {
        version: 7,
        name: "audit chain",
        sql: include_str!("schema/007_audit_chain.sql"),
    },
];

/// The newest schema version this program knows.
pub const SCHEMA_VERSION: i32 = 7;
const _: () = assert!(MIGRATIONS[MIGRATIONS.len() - 1].version == SCHEMA_VERSION);

/// A fixed key for `pg_advisory_xact_lock`: "sealpost" in ASCII.
const LOCK_KEY: i64 = 0x7365_616c_706f_7374;

/// Brings the schema up to [`SCHEMA_VERSION`]; returns the version found before.
pub(super) async fn apply(pool: &Pool) -> Result<i32, DbError> {
    let mut client = connection(pool).await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let row = tx
        .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])
        .await?;
    let found: i32 = row.get(0);
    if found > SCHEMA_VERSION {
        return Err(DbError::SchemaTooNew {
            found,
            known: SCHEMA_VERSION,
        });
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > found) {
        tx.batch_execute(m.sql).await?;
        tx.execute(
            "INSERT INTO schema_version (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "database schema migrated"
        );
    }
    tx.commit().await?;
    Ok(found)
}

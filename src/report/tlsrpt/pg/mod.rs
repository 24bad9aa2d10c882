//! The TLS-RPT journal and report state in PostgreSQL, shared by the nodes of a cluster
//! (schema 6, `tls_report_*`). Recording never waits on the database: sessions are buffered in
//! memory and inserted in batches by a background task about every second; while the database
//! is away they wait in the buffer (up to [`MAX_BUFFERED`]), and beyond that they are dropped
//! with a warning. A lost session costs a count in a report, never mail.

mod import;
mod run;

pub use import::{import_files, ImportedSessions};

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use deadpool_postgres::Pool;

use super::build::Pending;
use super::journal::{day_start, MAX_DAY_BYTES};
use super::store::{SendLock, SessionJournal};
use super::{Failure, Policy};
use crate::pg::{connection, Database, DbError};

/// How often the buffered sessions are inserted.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Sessions waiting for the database at most; further ones are dropped (and counted in a log).
pub const MAX_BUFFERED: usize = 100_000;
/// Sessions inserted by one statement at most.
const BATCH: usize = 1_000;

/// The journal of every node on one database. Cheap to call from any task.
pub struct PgJournal {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<Database>,
    node: String,
    buffer: Mutex<Buffer>,
    /// One insert at a time, so that [`SessionJournal::sync`] returns only once what was
    /// buffered before it is in the database.
    flushing: tokio::sync::Mutex<()>,
}

/// One session as inserted: its policy and failure already JSON.
struct Row {
    t: i64,
    domain: String,
    policy: String,
    failure: Option<String>,
}

#[derive(Default)]
struct Buffer {
    rows: Vec<Row>,
    /// Sessions taken from `rows` by an insert not finished yet.
    in_flight: usize,
    /// The UTC day being counted against [`MAX_DAY_BYTES`], and the bytes recorded in it by
    /// this process.
    day: i64,
    day_bytes: u64,
    day_full: bool,
    /// Sessions dropped since the last warning because the buffer was full.
    dropped: u64,
    /// The last insert failed (warned once until one succeeds again).
    away: bool,
}

impl PgJournal {
    /// The journal on `db` (schema migrated by [`Database::open`]) of node `node`; starts the
    /// background insert on the database's runtime, which ends when the journal is dropped.
    pub fn new(db: Arc<Database>, node: &str) -> PgJournal {
        let inner = Arc::new(Inner {
            db: db.clone(),
            node: node.to_string(),
            buffer: Mutex::new(Buffer::default()),
            flushing: tokio::sync::Mutex::new(()),
        });
        let weak: Weak<Inner> = Arc::downgrade(&inner);
        db.spawn(move |pool| async move {
            loop {
                tokio::time::sleep(FLUSH_EVERY).await;
                let Some(inner) = weak.upgrade() else {
                    break;
                };
                inner.flush(&pool).await;
            }
        });
        PgJournal { inner }
    }

    /// Sessions not yet committed to the database (buffered, or being inserted).
    pub fn buffered(&self) -> usize {
        let b = self.inner.lock_buffer();
        b.rows.len() + b.in_flight
    }
}

impl Inner {
    fn lock_buffer(&self) -> std::sync::MutexGuard<'_, Buffer> {
        self.buffer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, row: Row) {
        let size = (row.domain.len()
            + row.policy.len()
            + row.failure.as_ref().map_or(0, String::len)
            + 16) as u64;
        let mut b = self.lock_buffer();
        let day = day_start(row.t);
        if day > b.day {
            b.day = day;
            b.day_bytes = 0;
            b.day_full = false;
        }
        if day == b.day {
            if b.day_bytes + size > MAX_DAY_BYTES {
                if !b.day_full {
                    b.day_full = true;
                    tracing::warn!(node = %self.node, limit = MAX_DAY_BYTES, "TLS-RPT sessions of this node full for the day; further sessions are not counted");
                }
                return;
            }
            b.day_bytes += size;
        }
        if b.rows.len() + b.in_flight >= MAX_BUFFERED {
            b.dropped += 1;
            if b.dropped == 1 {
                tracing::warn!(node = %self.node, limit = MAX_BUFFERED, "TLS-RPT sessions waiting for the database are too many; further sessions are not counted until it answers");
            }
            return;
        }
        b.rows.push(row);
    }

    /// Inserts what is buffered; on failure (or when the insert is abandoned, past a time
    /// limit) puts it back, within [`MAX_BUFFERED`], and warns once until the database answers
    /// again.
    async fn flush(&self, pool: &Pool) {
        let _one = self.flushing.lock().await;
        let mut taken = {
            let mut b = self.lock_buffer();
            b.in_flight = b.rows.len();
            Taken {
                inner: self,
                rows: std::mem::take(&mut b.rows),
                inserted: false,
            }
        };
        if taken.rows.is_empty() {
            return;
        }
        match insert(pool, &self.node, &taken.rows).await {
            Ok(()) => {
                taken.inserted = true;
                let mut b = self.lock_buffer();
                if b.away || b.dropped > 0 {
                    tracing::info!(node = %self.node, inserted = taken.rows.len(), dropped = b.dropped, "TLS-RPT sessions recorded in the database again");
                    b.away = false;
                    b.dropped = 0;
                }
            }
            Err(e) => {
                let mut b = self.lock_buffer();
                if !b.away {
                    b.away = true;
                    tracing::warn!(node = %self.node, database = %self.db.location(), error = %e, waiting = taken.rows.len(), "cannot record TLS-RPT sessions in the database; they wait in memory");
                }
            }
        }
    }
}

/// Sessions taken from the buffer by an insert: put back unless inserted.
struct Taken<'a> {
    inner: &'a Inner,
    rows: Vec<Row>,
    inserted: bool,
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        let mut b = self.inner.lock_buffer();
        b.in_flight = 0;
        if self.inserted {
            return;
        }
        let mut rows = std::mem::take(&mut self.rows);
        let room = MAX_BUFFERED.saturating_sub(b.rows.len());
        let lost = rows.len().saturating_sub(room);
        b.dropped += lost as u64;
        rows.truncate(rows.len() - lost);
        rows.append(&mut b.rows);
        b.rows = rows;
    }
}

/// Inserts `rows` in batches of [`BATCH`], all or none.
async fn insert(pool: &Pool, node: &str, rows: &[Row]) -> Result<(), DbError> {
    let mut client = connection(pool).await?;
    let tx = client.transaction().await?;
    let statement = tx
        .prepare(
            "INSERT INTO tls_report_session (t, domain, node, policy, failure)
             SELECT t, domain, $1, policy::jsonb, failure::jsonb
             FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[])
                  AS r(t, domain, policy, failure)",
        )
        .await?;
    for chunk in rows.chunks(BATCH) {
        let t: Vec<i64> = chunk.iter().map(|r| r.t).collect();
        let domain: Vec<&str> = chunk.iter().map(|r| r.domain.as_str()).collect();
        let policy: Vec<&str> = chunk.iter().map(|r| r.policy.as_str()).collect();
        let failure: Vec<Option<&str>> = chunk.iter().map(|r| r.failure.as_deref()).collect();
        tx.execute(&statement, &[&node, &t, &domain, &policy, &failure])
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

impl SessionJournal for PgJournal {
    fn record_at(&self, t: i64, policy: &Policy, failure: Option<Failure>) {
        let json = serde_json::to_string(policy).and_then(|p| {
            let f = failure.as_ref().map(serde_json::to_string).transpose()?;
            Ok((p, f))
        });
        match json {
            Ok((policy_json, failure_json)) => self.inner.push(Row {
                t,
                domain: policy.domain.clone(),
                policy: policy_json,
                failure: failure_json,
            }),
            Err(e) => tracing::warn!(error = %e, "cannot record a session for TLS-RPT"),
        }
    }

    fn sync(&self) {
        let inner = self.inner.clone();
        let result = self.inner.db.run(move |pool| async move {
            inner.flush(&pool).await;
            Ok(())
        });
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot record the TLS-RPT sessions in the database now");
        }
    }

    fn location(&self) -> String {
        format!("{} (tls_report_session)", self.inner.db.location())
    }

    fn lag(&self) -> i64 {
        FLUSH_EVERY.as_secs() as i64 + 2
    }

    fn daily_until(&self) -> anyhow::Result<Option<i64>> {
        Ok(self
            .inner
            .db
            .run(|pool| async move { run::daily_until(&*connection(&pool).await?).await })?)
    }

    fn pending(&self, until: i64) -> anyhow::Result<std::collections::BTreeMap<String, Pending>> {
        Ok(self.inner.db.run(move |pool| async move {
            run::pending(&*connection(&pool).await?, until).await
        })?)
    }

    fn lock(&self) -> anyhow::Result<Box<dyn SendLock>> {
        Ok(Box::new(run::PgRun::lock(
            self.inner.db.clone(),
            &self.inner.node,
        )?))
    }
}

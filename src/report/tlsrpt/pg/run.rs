//! Reading and marking the shared report state: what is pending (counted by the database, all
//! nodes' sessions together), and one report run at a time across the nodes, under a
//! session-level advisory lock held on a connection of its own.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::ClientWrapper;
use tokio_postgres::Client;

use super::super::build::{self, Pending};
use super::super::journal::day_start;
use super::super::send::KEEP_DAYS;
use super::super::store::SendLock;
use super::super::{Failure, Policy};
use crate::pg::{Database, DbError};

/// The advisory lock of report runs: "sealTLS" in ASCII (apart from the migrations' key).
pub(super) const LOCK_KEY: i64 = 0x0073_6561_6c54_4c53;
/// How long a run waits for another node's run to end.
const LOCK_WAIT: Duration = Duration::from_secs(600);
/// How often it looks again meanwhile.
const LOCK_POLL: Duration = Duration::from_millis(250);

/// The end of the last daily run, by any node.
pub(super) async fn daily_until(client: &Client) -> Result<Option<i64>, DbError> {
    let row = client
        .query_opt("SELECT daily_until FROM tls_report_daily", &[])
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// The sessions of every node before `until` that their domain's state does not cover, counted
/// by domain, policy and failure. A domain never reported starts at the UTC day of its first
/// session.
pub(super) async fn pending(
    client: &Client,
    until: i64,
) -> Result<BTreeMap<String, Pending>, DbError> {
    let rows = client
        .query(
            "SELECT s.policy::text, s.failure::text, st.reported_until, min(s.t), count(*)
             FROM tls_report_session s
             LEFT JOIN tls_report_state st ON st.domain = s.domain
             WHERE s.t < $1 AND (st.reported_until IS NULL OR s.t >= st.reported_until)
             GROUP BY s.domain, s.policy, s.failure, st.reported_until",
            &[&until],
        )
        .await?;
    let mut out = BTreeMap::new();
    let mut unreadable = 0u64;
    for row in rows {
        let policy: String = row.get(0);
        let failure: Option<String> = row.get(1);
        let since: Option<i64> = row.get(2);
        let first: i64 = row.get(3);
        let n: i64 = row.get(4);
        let parsed = serde_json::from_str::<Policy>(&policy).and_then(|p| {
            let f = failure
                .as_deref()
                .map(serde_json::from_str::<Failure>)
                .transpose()?;
            Ok((p, f))
        });
        let Ok((policy, failure)) = parsed else {
            unreadable += n as u64;
            continue;
        };
        let start = since.unwrap_or_else(|| day_start(first));
        build::add(&mut out, start, until, &policy, failure.as_ref(), n as u64);
    }
    if unreadable > 0 {
        tracing::warn!(
            sessions = unreadable,
            "TLS-RPT sessions in the database that cannot be read were skipped"
        );
    }
    Ok(out)
}

/// A report run holding the advisory lock on a connection taken out of the pool: dropping it
/// closes the connection, which releases the lock even if the run ends abruptly.
pub(super) struct PgRun {
    db: Arc<Database>,
    client: ClientWrapper,
    node: String,
}

impl PgRun {
    /// Waits (up to [`LOCK_WAIT`]) until no other run holds the lock, and takes it.
    pub(super) fn lock(db: Arc<Database>, node: &str) -> anyhow::Result<PgRun> {
        let client = deadpool_postgres::Object::take(db.connection()?);
        let started = Instant::now();
        let mut said = false;
        loop {
            let got = db.block_on(async {
                let row = client
                    .query_one("SELECT pg_try_advisory_lock($1)", &[&LOCK_KEY])
                    .await?;
                Ok(row.get::<_, bool>(0))
            })?;
            if got {
                break;
            }
            if started.elapsed() > LOCK_WAIT {
                anyhow::bail!(
                    "another node has been sending TLS reports for more than {LOCK_WAIT:?} \
                     (advisory lock {LOCK_KEY} in {})",
                    db.location()
                );
            }
            if !said {
                said = true;
                tracing::info!("another node is sending TLS reports; waiting for it to finish");
            }
            std::thread::sleep(LOCK_POLL);
        }
        Ok(PgRun {
            db,
            client,
            node: node.to_string(),
        })
    }
}

impl SendLock for PgRun {
    fn pending(&mut self, until: i64) -> anyhow::Result<BTreeMap<String, Pending>> {
        let client = &self.client;
        Ok(self.db.block_on(pending(client, until))?)
    }

    fn mark(&mut self, domain: &str, until: i64) -> anyhow::Result<()> {
        let (client, node) = (&self.client, &self.node);
        self.db.block_on(async move {
            client
                .execute(
                    "INSERT INTO tls_report_state (domain, reported_until, node)
                     VALUES ($1, $2, $3)
                     ON CONFLICT (domain) DO UPDATE
                     SET reported_until = greatest(tls_report_state.reported_until,
                                                   excluded.reported_until),
                         reported_at = now(), node = excluded.node",
                    &[&domain, &until, node],
                )
                .await?;
            Ok(())
        })?;
        Ok(())
    }

    fn finish(self: Box<Self>, until: i64, daily: bool, _kept: bool) -> anyhow::Result<()> {
        let (client, node) = (&self.client, &self.node);
        let cutoff = day_start(until) - KEEP_DAYS * 86_400;
        self.db.block_on(async move {
            if daily {
                client
                    .execute(
                        "INSERT INTO tls_report_daily (one, daily_until, node)
                         VALUES (true, $1, $2)
                         ON CONFLICT (one) DO UPDATE
                         SET daily_until = greatest(tls_report_daily.daily_until,
                                                    excluded.daily_until),
                             node = excluded.node",
                        &[&until, node],
                    )
                    .await?;
            }
            // Sessions reported, and older than the days kept (a domain's report kept for
            // later keeps its sessions: they are not covered by its state yet).
            let removed = client
                .execute(
                    "DELETE FROM tls_report_session s USING tls_report_state st
                     WHERE s.domain = st.domain AND s.t < st.reported_until AND s.t < $1",
                    &[&cutoff],
                )
                .await?;
            if removed > 0 {
                tracing::info!(sessions = removed, "reported TLS-RPT sessions removed");
            }
            client
                .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
                .await?;
            Ok(())
        })?;
        Ok(())
    }
}

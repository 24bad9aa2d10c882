//! `storage migrate` of a node's TLS-RPT files (`<data_dir>/tls-rpt`: day files and
//! `state.json`) into the tables every node shares: the sessions not reported yet, and how far
//! each domain was reported, so that nothing is reported twice nor left out.

use std::path::Path;
use std::sync::Arc;

use super::run::LOCK_KEY;
use crate::pg::{connection, Database};
use crate::report::tlsrpt::journal;
use crate::report::tlsrpt::send::load_state;

/// Sessions inserted by one statement at most (more when one second holds more).
const BATCH: usize = 1_000;

/// A session as inserted: when it ended, its domain, its policy and failure as JSON.
type SessionRow = (i64, String, String, Option<String>);

/// What was copied.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ImportedSessions {
    /// Sessions not reported yet, now in the database.
    pub copied: u64,
    /// Sessions not copied: reported already (here or, per the database, by another node), or
    /// in the database from an earlier run.
    pub skipped: u64,
    /// Domains whose report state was copied.
    pub domains: usize,
    /// Journal lines that could not be read (not copied).
    pub unreadable: usize,
}

/// Copies the sessions of `dir` not yet reported into `tls_report_session` under `node`, and
/// the report state into `tls_report_state` / `tls_report_daily` (a domain reported further
/// here than in the database moves forward, never back), in one transaction under the lock of
/// report runs. A session before its domain's reported time (here or in the database) is not
/// copied: it was reported. Running it again copies nothing more: of identical sessions (same
/// second, domain, policy and result) the database gets only as many as the files hold for
/// `node`.
pub fn import_files(
    db: &Arc<Database>,
    dir: &Path,
    node: &str,
) -> anyhow::Result<ImportedSessions> {
    let state = load_state(dir)?;
    let mut journal = journal::read(dir)?;
    let mut done = ImportedSessions {
        domains: state.reported.len(),
        unreadable: journal.unreadable,
        ..ImportedSessions::default()
    };
    let total = journal.sessions.len() as u64;
    journal.sessions.sort_by_key(|s| s.t);
    let mut rows: Vec<SessionRow> = Vec::with_capacity(journal.sessions.len());
    for s in &journal.sessions {
        let policy = serde_json::to_string(&s.policy)?;
        let failure = s.failure.as_ref().map(serde_json::to_string).transpose()?;
        rows.push((s.t, s.policy.domain.clone(), policy, failure));
    }
    // Batches end between two seconds, so that identical sessions are counted in one.
    let mut batches: Vec<&[SessionRow]> = Vec::new();
    let mut start = 0;
    for i in 1..=rows.len() {
        if i == rows.len() || (i - start >= BATCH && rows[i].0 != rows[i - 1].0) {
            if i > start {
                batches.push(&rows[start..i]);
            }
            start = i;
        }
    }
    let domains: Vec<&str> = state.reported.keys().map(String::as_str).collect();
    let until: Vec<i64> = state.reported.values().copied().collect();
    let (domains, until, batches) = (&domains, &until, &batches);
    let daily = state.daily_until;
    done.copied = db.run(|pool| async move {
        let mut client = connection(&pool).await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
            .await?;
        tx.execute(
            "INSERT INTO tls_report_state (domain, reported_until, node)
             SELECT domain, reported_until, $3 FROM unnest($1::text[], $2::bigint[])
                 AS r(domain, reported_until)
             ON CONFLICT (domain) DO UPDATE
                 SET reported_until = excluded.reported_until, node = excluded.node,
                     reported_at = now()
                 WHERE tls_report_state.reported_until < excluded.reported_until",
            &[domains, until, &node],
        )
        .await?;
        if let Some(daily) = daily {
            tx.execute(
                "INSERT INTO tls_report_daily (one, daily_until, node) VALUES (true, $1, $2)
                 ON CONFLICT (one) DO UPDATE
                     SET daily_until = excluded.daily_until, node = excluded.node
                     WHERE tls_report_daily.daily_until < excluded.daily_until",
                &[&daily, &node],
            )
            .await?;
        }
        let insert = tx
            .prepare(
                "WITH s AS (
                     SELECT t, domain, policy::jsonb AS policy, failure::jsonb AS failure,
                            row_number() OVER (PARTITION BY t, domain, policy::jsonb,
                                                            failure::jsonb) AS n
                     FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[])
                         AS r(t, domain, policy, failure)
                 ), have AS (
                     SELECT t, domain, policy, failure, count(*) AS c
                     FROM tls_report_session
                     WHERE node = $1 AND t BETWEEN $6 AND $7
                     GROUP BY t, domain, policy, failure
                 )
                 INSERT INTO tls_report_session (t, domain, node, policy, failure)
                 SELECT s.t, s.domain, $1, s.policy, s.failure FROM s
                 LEFT JOIN have h ON h.t = s.t AND h.domain = s.domain
                     AND h.policy = s.policy AND h.failure IS NOT DISTINCT FROM s.failure
                 LEFT JOIN tls_report_state st ON st.domain = s.domain
                 WHERE s.n > coalesce(h.c, 0) AND s.t >= coalesce(st.reported_until, s.t)",
            )
            .await?;
        let mut copied = 0;
        for batch in batches.iter() {
            let t: Vec<i64> = batch.iter().map(|r| r.0).collect();
            let domain: Vec<&str> = batch.iter().map(|r| r.1.as_str()).collect();
            let policy: Vec<&str> = batch.iter().map(|r| r.2.as_str()).collect();
            let failure: Vec<Option<&str>> = batch.iter().map(|r| r.3.as_deref()).collect();
            let (first, last) = (t[0], t[t.len() - 1]);
            copied += tx
                .execute(
                    &insert,
                    &[&node, &t, &domain, &policy, &failure, &first, &last],
                )
                .await?;
        }
        tx.commit().await?;
        Ok(copied)
    })?;
    done.skipped = total - done.copied;
    Ok(done)
}

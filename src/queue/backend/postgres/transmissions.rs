//! The fingerprints of accepted transmissions, shared by the nodes of one database
//! (`queue_transmission`): written by the statement that queues each message (see
//! [`super::sql::insert`]), read here when a transmission is not one this node accepted.

use std::sync::Arc;

use crate::pg::Database;
use crate::queue::error::QueueError;
use crate::queue::retransmit::SharedTransmissions;

/// The `queue_transmission` table of a queue's database.
pub struct PgTransmissions {
    pub(super) db: Arc<Database>,
}

impl SharedTransmissions for PgTransmissions {
    fn accepted_as(
        &self,
        fingerprint: &[u8; 32],
        since: i64,
    ) -> Result<Option<String>, QueueError> {
        self.db
            .run(|pool| async move { super::sql::transmission(&pool, fingerprint, since).await })
            .map_err(|e| QueueError::Unavailable {
                location: self.db.location().to_string(),
                reason: e.to_string(),
            })
    }

    fn forget_before(&self, before: i64) {
        let location = self.db.location().to_string();
        self.db.spawn(move |pool| async move {
            match super::sql::forget_transmissions(&pool, before).await {
                Ok(n) => {
                    tracing::debug!(forgotten = n, "expired transmission fingerprints removed")
                }
                Err(e) => tracing::warn!(database = %location, error = %e,
                    "cannot remove expired transmission fingerprints"),
            }
        });
    }

    fn location(&self) -> String {
        format!("{}#queue_transmission", self.db.location())
    }
}

impl PgTransmissions {
    /// Records fingerprints kept elsewhere (a spool's `transmissions.log`, by `storage
    /// migrate`): each (fingerprint, queue id, accepted at) once, in one transaction. Returns
    /// how many were new and how many the table held already (a second run adds none).
    pub fn import(&self, entries: &[([u8; 32], String, i64)]) -> Result<(u64, u64), QueueError> {
        let fingerprints: Vec<&[u8]> = entries.iter().map(|(fp, _, _)| fp.as_slice()).collect();
        let ids: Vec<&str> = entries.iter().map(|(_, id, _)| id.as_str()).collect();
        let at: Vec<i64> = entries.iter().map(|(_, _, at)| *at).collect();
        let (fingerprints, ids, at) = (&fingerprints, &ids, &at);
        let inserted = self
            .db
            .run(|pool| async move {
                let client = crate::pg::connection(&pool).await?;
                Ok(client
                    .execute(
                        "INSERT INTO queue_transmission (fingerprint, id, accepted_at) \
                         SELECT DISTINCT * FROM unnest($1::bytea[], $2::text[], $3::bigint[]) \
                         ON CONFLICT DO NOTHING",
                        &[fingerprints, ids, at],
                    )
                    .await?)
            })
            .map_err(|e| QueueError::Unavailable {
                location: self.location(),
                reason: e.to_string(),
            })?;
        let distinct = entries
            .iter()
            .map(|(fp, id, _)| (fp, id))
            .collect::<std::collections::HashSet<_>>()
            .len() as u64;
        Ok((inserted, distinct.saturating_sub(inserted)))
    }
}

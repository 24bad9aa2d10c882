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

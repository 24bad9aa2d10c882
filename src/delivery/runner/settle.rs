//! Recording the outcome of an attempt in the queue: `complete` for a message that is done,
//! `defer` with its new envelope otherwise.
//!
//! An outcome the queue cannot take because it is unavailable (a database that is down or slow)
//! is kept in memory and written again at each pass of the runner until it is taken. The message
//! stays claimed by this node meanwhile (a database queue keeps renewing the lease), so it is
//! neither forgotten under a lease nobody would ever give up nor delivered again. If the node
//! stops first, the message is delivered again after its restart (or, in a database queue, by
//! another node once the lease has expired): the receiver recognises the retransmission.

use std::sync::Arc;

use super::{lock, Runner};
use crate::queue::{Envelope, QueueError};
use crate::telemetry::TraceEvent;

/// What an attempt left to record.
pub(super) struct Settled {
    pub env: Envelope,
    pub message: Arc<Vec<u8>>,
    /// Nothing is left to do: the message leaves the queue.
    pub finished: bool,
}

impl Runner {
    /// Records `settled` in the queue; keeps it for the next pass when the queue is unavailable.
    /// Returns false when it was kept. `first` is false for an outcome written again.
    pub(super) async fn settle(&self, settled: Settled, first: bool) -> bool {
        let queue = self.queue.clone();
        let (result, settled) = match tokio::task::spawn_blocking(move || {
            let result = if settled.finished {
                queue.complete(&settled.env.id)
            } else {
                queue.defer(&settled.env, &settled.message)
            };
            (result, settled)
        })
        .await
        {
            Ok(done) => done,
            Err(e) => {
                tracing::error!(error = %e, "queue update panicked");
                return true;
            }
        };
        let env = &settled.env;
        match result {
            Ok(()) if settled.finished => {
                tracing::info!(queue_id = %env.id, "removed");
                if let (Some(r), Some(fp)) = (&self.retransmissions, &env.transmission) {
                    r.left_queue(fp, &env.id, env.received_at);
                }
                let final_state = match env.failed().count() {
                    0 => "delivered",
                    n if n == env.recipients.len() => "bounced",
                    _ => "partly bounced",
                };
                self.telemetry.trace(
                    &env.id,
                    TraceEvent::State {
                        state: final_state.to_string(),
                        next_attempt: None,
                    },
                );
                if !first {
                    tracing::info!(queue_id = %env.id, "outcome recorded after the queue came back");
                }
                true
            }
            Ok(()) => {
                self.telemetry.trace(
                    &env.id,
                    TraceEvent::State {
                        state: "deferred".into(),
                        next_attempt: chrono::DateTime::from_timestamp(env.next_attempt, 0),
                    },
                );
                lock(&self.deferred).insert(env.id.clone(), env.next_attempt);
                if !first {
                    tracing::info!(queue_id = %env.id, "outcome recorded after the queue came back");
                }
                true
            }
            Err(e @ QueueError::Unavailable { .. }) => {
                if first {
                    tracing::error!(
                        queue_id = %env.id,
                        error = %e,
                        "cannot update queue file; the outcome is kept and written again"
                    );
                }
                lock(&self.unsaved).insert(env.id.clone(), settled);
                false
            }
            Err(e) => {
                tracing::error!(queue_id = %env.id, error = %e, "cannot update queue file");
                true
            }
        }
    }

    /// Writes the kept outcomes again, oldest id first, until the queue refuses one (the rest
    /// wait for the next pass).
    pub(super) async fn settle_unsaved(&self) {
        loop {
            let Some((_, settled)) = lock(&self.unsaved).pop_first() else {
                return;
            };
            if !self.settle(settled, false).await {
                return;
            }
        }
    }
}

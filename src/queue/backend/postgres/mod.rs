//! The queue in PostgreSQL as a [`QueueStore`]: one row per message in `queue_message`, shared
//! by any number of nodes; any node accepts, any node delivers.
//!
//! How it keeps the contract:
//! - durability: `enqueue`, `defer`, `checkpoint`, `complete`, `flush`, `delete`, `hold`,
//!   `release` and `recover`
//!   are single statements (or one transaction) committed with `synchronous_commit = on`, and
//!   return only after the commit; a database that is down or slow fails them with
//!   [`QueueError::Unavailable`] within the connect and statement timeouts, never a hang;
//! - at rest: `body` holds the queue file exactly as the spool writes it (format version 2, the
//!   message sealed under a fresh content key wrapped by the service key, see
//!   [`crate::queue::format`]), so the database holds ciphertext only; the envelope is in clear,
//!   as in the spool, in `body` and again in `envelope` for listings. Staged content stays on
//!   this node's disk (`<data_dir>/queue/tmp/`, sealed under a key in memory): it is per session
//!   and never acknowledged;
//! - one state at a time, one claim: a claim is one `UPDATE ... WHERE state IN ('incoming',
//!   'deferred') ... RETURNING`; the row lock makes concurrent claims (any node) exclusive;
//! - leases: a claim records this node's id and a lease expiry; a background task renews, every
//!   third of the lease, the leases of the messages this process claimed and has not yet
//!   completed, deferred or lost, so they expire only when the node stops. A claim whose answer
//!   never came back (the connection broke after the commit) is not renewed, and its message
//!   comes back when the lease expires instead of staying with a node that does not know it.
//!   `defer`, `checkpoint` and `complete` act only on a message this node holds;
//! - a node that died: its active messages come back when their lease has expired.
//!   `incoming_ids` and `waiting_size` report them, and `claim` takes them, as if they were
//!   incoming; `recover` at start requeues this node's own active messages (from before its
//!   restart) and the expired ones, never one another live node holds;
//! - hold: a held message is a row in state 'hold' (one `UPDATE ... WHERE` the message is
//!   waiting, committed like the rest), which no claim, flush or listing of waiting ids
//!   selects, so a hold made on any node stops every node from delivering it; release sets it
//!   back to 'incoming';
//! - quarantine: a message that fails verification is moved to `queue_quarantine`.

mod import;
mod sql;
mod transmissions;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

pub use import::Imported;
use std::time::Duration;
pub use transmissions::PgTransmissions;

use super::{Listing, QueueEntry, QueueState, QueueStore, RecoveryReport, Unreadable};
use crate::crypto::keyfile::ServiceKey;
use crate::mail::is_valid_queue_id;
use crate::pg::{Database, DbError};
use crate::queue::envelope::Envelope;
use crate::queue::error::QueueError;
use crate::queue::format::{self, FormatError, Part};
use crate::queue::retransmit::Fingerprinter;
use crate::queue::schedule::{Clock, SystemClock};
use crate::queue::spool::{Spool, Staging};

/// The queue in a PostgreSQL database.
pub struct PgQueue {
    db: Arc<Database>,
    /// Where incoming content is staged (its `tmp/` only; nothing is queued there).
    staging: Spool,
    key: Arc<ServiceKey>,
    node: String,
    lease: Duration,
    /// The messages this process holds: claimed, not yet completed, deferred or lost.
    held: Arc<Mutex<HashSet<String>>>,
}

impl PgQueue {
    /// The queue in `db` (schema already migrated by [`Database::open`]), staging under
    /// `staging`'s `tmp/`, sealing every message with `key`, claiming as `node` with leases of
    /// `lease`. Starts renewing this node's leases.
    pub fn new(
        db: Arc<Database>,
        staging: Spool,
        key: Arc<ServiceKey>,
        node: &str,
        lease: Duration,
    ) -> PgQueue {
        let queue = PgQueue {
            db,
            staging,
            key,
            node: node.to_string(),
            lease,
            held: Arc::default(),
        };
        let (node, lease, held) = (queue.node.clone(), queue.lease, queue.held.clone());
        queue
            .db
            .spawn(move |pool| async move { sql::renew_leases(pool, node, lease, held).await });
        queue
    }

    /// The fingerprints of transmissions accepted by any node of this database.
    pub fn transmissions(&self) -> PgTransmissions {
        PgTransmissions {
            db: self.db.clone(),
        }
    }

    /// This node's id in leases.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Records that this process holds `id` (true) or no longer does (false).
    fn track(&self, id: &str, held: bool) {
        let mut set = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held {
            set.insert(id.to_string());
        } else {
            set.remove(id);
        }
    }

    fn unavailable(&self, error: DbError) -> QueueError {
        QueueError::Unavailable {
            location: self.db.location().to_string(),
            reason: error.to_string(),
        }
    }

    /// The place of a message in messages: `<database>#queue_message/<id>`.
    fn row(&self, id: &str) -> String {
        format!("{}#queue_message/{id}", self.db.location())
    }

    /// Runs database work, its failure as [`QueueError::Unavailable`].
    fn run<T, F, Fut>(&self, work: F) -> Result<T, QueueError>
    where
        T: Send,
        F: FnOnce(deadpool_postgres::Pool) -> Fut + Send,
        Fut: std::future::Future<Output = Result<T, DbError>> + Send,
    {
        self.db.run(work).map_err(|e| self.unavailable(e))
    }

    /// A message encoded as a queue file, with what the row keeps beside it.
    fn encode(&self, envelope: &Envelope, parts: &[Part]) -> Result<sql::Row, QueueError> {
        let size: u64 = parts.iter().map(Part::len).sum();
        let mut body = Vec::with_capacity(usize::try_from(size).unwrap_or(0) + 4096);
        format::encode_parts_to(&mut body, envelope, parts, Some(&self.key)).map_err(|source| {
            QueueError::Io {
                location: self.row(&envelope.id),
                source,
            }
        })?;
        let envelope_json = serde_json::to_vec(envelope).map_err(|e| QueueError::Io {
            location: self.row(&envelope.id),
            source: std::io::Error::other(e),
        })?;
        Ok(sql::Row {
            id: envelope.id.clone(),
            envelope: envelope_json,
            next_attempt: envelope.next_attempt,
            size: i64::try_from(size).unwrap_or(i64::MAX),
            body,
            transmission: sql::Row::transmission_of(envelope),
        })
    }

    /// Inserts a new message, incoming, or active under this node's `lease`; returns its body.
    /// [`QueueError::Exists`] when the id is queued already.
    fn insert(&self, row: sql::Row, lease: Option<Duration>) -> Result<Vec<u8>, QueueError> {
        let id = checked_id(&row.id)?.to_string();
        let (node, stored) = (self.node.as_str(), &row);
        let (state, lease) = match lease {
            Some(lease) => (QueueState::Active, Some((node, lease))),
            None => (QueueState::Incoming, None),
        };
        let inserted =
            self.run(|pool| async move { sql::insert(&pool, stored, state, lease).await })?;
        if inserted {
            Ok(row.body)
        } else {
            Err(QueueError::Exists {
                location: self.row(&id),
                id,
            })
        }
    }

    fn not_active(&self, id: &str) -> QueueError {
        QueueError::NotActive {
            id: id.to_string(),
            location: format!("{} (active, held by {})", self.row(id), self.node),
        }
    }

    /// Stores `envelope` and `message` for an active message this node holds; `next` is the
    /// state it goes to.
    fn update_active(
        &self,
        envelope: &Envelope,
        message: &[u8],
        next: QueueState,
    ) -> Result<(), QueueError> {
        let id = checked_id(&envelope.id)?;
        let row = self.encode(envelope, &[Part::Bytes(message)])?;
        let (node, lease) = (self.node.as_str(), self.lease);
        let updated = self
            .run(|pool| async move { sql::update_active(&pool, &row, node, next, lease).await })?;
        if updated {
            if next != QueueState::Active {
                self.track(id, false);
            }
            Ok(())
        } else {
            self.track(id, false);
            Err(self.not_active(id))
        }
    }
}

impl QueueStore for PgQueue {
    fn location(&self) -> String {
        self.db.location().to_string()
    }

    fn is_encrypted(&self) -> bool {
        self.staging.is_encrypted()
    }

    fn recover(&self) -> Result<RecoveryReport, QueueError> {
        let removed_tmp = self.staging.remove_staged()?;
        let node = self.node.as_str();
        let requeued = self.run(|pool| async move { sql::recover(&pool, node).await })?;
        self.held.lock().unwrap_or_else(|p| p.into_inner()).clear();
        Ok(RecoveryReport {
            removed_tmp,
            requeued,
        })
    }

    fn stage(&self, fingerprint: Option<Fingerprinter>) -> Result<Staging, QueueError> {
        self.staging.stage(fingerprint)
    }

    fn enqueue(&self, envelope: &Envelope, message: &[u8]) -> Result<(), QueueError> {
        self.enqueue_parts(envelope, &[Part::Bytes(message)])
    }

    fn enqueue_parts(&self, envelope: &Envelope, parts: &[Part]) -> Result<(), QueueError> {
        let row = self.encode(envelope, parts)?;
        self.insert(row, None).map(drop)
    }

    /// The row is inserted active under this node's lease: one statement, like `enqueue`.
    fn enqueue_claimed(
        &self,
        envelope: &Envelope,
        parts: &[Part],
    ) -> Result<(Envelope, Vec<u8>), QueueError> {
        let row = self.encode(envelope, parts)?;
        let id = row.id.clone();
        let body = self.insert(row, Some(self.lease))?;
        self.track(&id, true);
        // What was just encoded, read back as a claim reads the stored body.
        format::decode(body, Some(&self.key)).map_err(|reason| QueueError::Io {
            location: self.row(&id),
            source: std::io::Error::other(reason.to_string()),
        })
    }

    fn claim(&self, id: &str) -> Result<Option<(Envelope, Vec<u8>)>, QueueError> {
        let id = checked_id(id)?;
        let (node, lease) = (self.node.as_str(), self.lease);
        let Some(body) =
            self.run(|pool| async move { sql::claim(&pool, id, node, lease).await })?
        else {
            return Ok(None);
        };
        self.track(id, true);
        let verified = format::decode(body, Some(&self.key)).and_then(|(envelope, message)| {
            if envelope.id == id {
                Ok((envelope, message))
            } else {
                Err(FormatError::IdMismatch {
                    expected: id.to_string(),
                    found: envelope.id,
                })
            }
        });
        match verified {
            Ok(found) => Ok(Some(found)),
            Err(reason) => {
                let text = reason.to_string();
                let seq =
                    self.run(|pool| async move { sql::quarantine(&pool, id, node, &text).await })?;
                self.track(id, false);
                let location = format!("{}#queue_quarantine/{seq}", self.db.location());
                tracing::error!(id, %location, %reason, "queued message quarantined");
                Err(QueueError::Corrupt { location, reason })
            }
        }
    }

    fn defer(&self, envelope: &Envelope, message: &[u8]) -> Result<(), QueueError> {
        self.update_active(envelope, message, QueueState::Deferred)
    }

    fn checkpoint(&self, envelope: &Envelope, message: &[u8]) -> Result<(), QueueError> {
        self.update_active(envelope, message, QueueState::Active)
    }

    fn complete(&self, id: &str) -> Result<(), QueueError> {
        let id = checked_id(id)?;
        let node = self.node.as_str();
        let completed = self.run(|pool| async move { sql::complete(&pool, id, node).await })?;
        self.track(id, false);
        if completed {
            Ok(())
        } else {
            Err(self.not_active(id))
        }
    }

    fn scan(&self) -> Result<Listing, QueueError> {
        let rows = self.run(|pool| async move { sql::listing(&pool).await })?;
        let mut listing = Listing::default();
        for (state, id, json, size) in rows {
            let parsed = format::parse_envelope(&json).and_then(|envelope| {
                if envelope.id == id {
                    Ok(envelope)
                } else {
                    Err(FormatError::IdMismatch {
                        expected: id.clone(),
                        found: envelope.id,
                    })
                }
            });
            match parsed {
                Ok(envelope) => listing.entries.push(QueueEntry {
                    state,
                    envelope,
                    size: u64::try_from(size).unwrap_or(0),
                }),
                Err(reason) => listing.unreadable.push(Unreadable {
                    state,
                    error: QueueError::Corrupt {
                        location: self.row(&id),
                        reason,
                    },
                    id,
                }),
            }
        }
        listing
            .entries
            .sort_by(|a, b| (a.state, &a.envelope.id).cmp(&(b.state, &b.envelope.id)));
        listing
            .unreadable
            .sort_by(|a, b| (a.state, &a.id).cmp(&(b.state, &b.id)));
        Ok(listing)
    }

    fn list(&self) -> Result<Vec<QueueEntry>, QueueError> {
        Ok(self.scan()?.entries)
    }

    fn incoming_ids(&self) -> Result<Vec<String>, QueueError> {
        self.run(|pool| async move { sql::incoming_ids(&pool).await })
    }

    fn deferred(&self) -> Result<Vec<(String, i64)>, QueueError> {
        self.run(|pool| async move { sql::deferred(&pool).await })
    }

    fn waiting_size(&self, id: &str) -> Option<u64> {
        let id = checked_id(id).ok()?;
        let size = self
            .run(|pool| async move { sql::waiting_size(&pool, id).await })
            .ok()??;
        u64::try_from(size).ok()
    }

    fn flush(&self) -> Result<usize, QueueError> {
        self.run(|pool| async move { sql::flush(&pool).await })
    }

    fn delete(&self, id: &str) -> Result<bool, QueueError> {
        let id = checked_id(id)?;
        self.run(|pool| async move { sql::delete(&pool, id).await })
    }

    fn hold(&self, id: &str) -> Result<bool, QueueError> {
        let id = checked_id(id)?;
        match self.run(|pool| async move { sql::hold(&pool, id).await })? {
            sql::HoldOutcome::Held => Ok(true),
            sql::HoldOutcome::NotWaiting => Ok(false),
            sql::HoldOutcome::Active(node) => Err(QueueError::Busy {
                id: id.to_string(),
                location: format!("{} (active, held by {node})", self.row(id)),
            }),
        }
    }

    /// The release is recorded in the envelope (its queue lifetime starts again, see
    /// `Envelope::lifetime_start`): the row is read, its body sealed anew with the new envelope
    /// and written back by the statement that releases it, if the row did not change meanwhile
    /// (else it is read again). A body that cannot be read is released as it is (a claim
    /// quarantines it).
    fn release(&self, id: &str) -> Result<bool, QueueError> {
        let id = checked_id(id)?;
        for _ in 0..3 {
            let Some((body, version)) =
                self.run(|pool| async move { sql::held(&pool, id).await })?
            else {
                return Ok(false);
            };
            let row = match format::decode(body, Some(&self.key)) {
                Ok((mut envelope, message)) if envelope.id == id => {
                    envelope.released(SystemClock.now());
                    Some(self.encode(&envelope, &[Part::Bytes(&message)])?)
                }
                _ => None,
            };
            let stamped = row.as_ref().map(|r| (r, version));
            if self.run(|pool| async move { sql::release(&pool, id, stamped).await })? {
                return Ok(true);
            }
        }
        // Held and released elsewhere over and over while we looked: released as it is.
        self.run(|pool| async move { sql::release(&pool, id, None).await })
    }

    /// Commits make messages durable here, not directory fsyncs.
    fn directory_fsyncs(&self) -> Option<u64> {
        None
    }

    fn counts(&self) -> Result<Vec<(&'static str, usize)>, QueueError> {
        let (by_state, corrupt) = self.run(|pool| async move { sql::counts(&pool).await })?;
        let mut out: Vec<(&'static str, usize)> = QueueState::ALL
            .iter()
            .map(|s| {
                let n = by_state
                    .iter()
                    .find(|(name, _)| name == s.as_str())
                    .map_or(0, |(_, n)| *n);
                (s.as_str(), n)
            })
            .collect();
        out.push(("corrupt", corrupt));
        Ok(out)
    }

    fn probe_write(&self) -> Result<(), QueueError> {
        let node = self.node.as_str();
        self.run(|pool| async move { sql::probe(&pool, node).await })
    }
}

fn checked_id(id: &str) -> Result<&str, QueueError> {
    if is_valid_queue_id(id) {
        Ok(id)
    } else {
        Err(QueueError::InvalidId { id: id.to_string() })
    }
}

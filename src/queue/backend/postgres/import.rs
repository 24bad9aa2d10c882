//! Moving a node's spool into the database (`sealpost storage migrate`): every queue file goes in
//! byte for byte, sealed as the spool keeps it, so nothing is decrypted on the way; the spool file
//! is removed only after the row holding it has committed.

use std::path::Path;

use super::PgQueue;
use crate::queue::backend::QueueState;
use crate::queue::error::QueueError;
use crate::queue::spool::Spool;

/// What a migration did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Imported {
    /// Messages now in the database, waiting to be delivered now.
    pub incoming: usize,
    /// Messages now in the database, deferred until their next attempt.
    pub deferred: usize,
    /// Messages now in the database, held (as they were in the spool) until released.
    pub held: usize,
    /// Messages whose id the database had already (a migration run again); left in the spool.
    pub present: usize,
    /// Queue files whose envelope could not be read: left in the spool, with the reason.
    pub unreadable: Vec<String>,
}

impl PgQueue {
    /// Copies every message of `spool` into the database: incoming and active ones as incoming
    /// (nothing delivers them while the node is stopped), deferred ones as deferred, held ones
    /// as held. Each spool
    /// file is removed after its row committed, unless `keep`. The node must be stopped.
    pub fn import_spool(&self, spool: &Spool, keep: bool) -> Result<Imported, QueueError> {
        let listing = spool.scan()?;
        let mut done = Imported {
            unreadable: listing
                .unreadable
                .iter()
                .map(|u| format!("{} ({}): {}", u.id, u.state.as_str(), u.error))
                .collect(),
            ..Imported::default()
        };
        for entry in listing.entries {
            let path = spool.path(entry.state, &entry.envelope.id);
            let file = match std::fs::read(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(QueueError::Io {
                        location: path.display().to_string(),
                        source,
                    })
                }
            };
            let row = super::sql::Row {
                id: entry.envelope.id.clone(),
                envelope: serde_json::to_vec(&entry.envelope).map_err(|e| QueueError::Io {
                    location: path.display().to_string(),
                    source: std::io::Error::other(e),
                })?,
                next_attempt: entry.envelope.next_attempt,
                size: i64::try_from(entry.size).unwrap_or(i64::MAX),
                body: file,
                transmission: super::sql::Row::transmission_of(&entry.envelope),
            };
            // Active ones were being delivered when the node stopped: waiting again.
            let state = match entry.state {
                QueueState::Incoming | QueueState::Active => QueueState::Incoming,
                state @ (QueueState::Deferred | QueueState::Hold) => state,
            };
            let inserted =
                self.run(|pool| async move { super::sql::insert(&pool, &row, state, None).await })?;
            match (inserted, state) {
                (false, _) => done.present += 1,
                (true, QueueState::Deferred) => done.deferred += 1,
                (true, QueueState::Hold) => done.held += 1,
                (true, _) => done.incoming += 1,
            }
            if inserted && !keep {
                remove(&path)?;
            }
        }
        Ok(done)
    }
}

fn remove(path: &Path) -> Result<(), QueueError> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(QueueError::Io {
                location: path.display().to_string(),
                source,
            })
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| QueueError::Io {
                location: dir.display().to_string(),
                source,
            })?;
    }
    Ok(())
}

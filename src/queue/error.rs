//! Errors of the queue layer; every message names the id concerned and, where one exists, the
//! place in the backend (a file of the spool, say) where it happened.

use std::io;
use std::path::Path;

use super::format::FormatError;

/// What can go wrong in a queue backend ([`super::QueueStore`]).
///
/// `location` fields are human text for logs and error messages, naming where the backend keeps
/// the thing concerned (for the spool, a file or directory path); callers never parse them.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Reading or writing the backend's storage failed.
    #[error("queue I/O error on {location}: {source}")]
    Io {
        location: String,
        #[source]
        source: io::Error,
    },
    /// A stored message failed verification; `location` is where it now lies, set apart from the
    /// queue (for the spool, normally a file under `corrupt/`).
    #[error("corrupt queue file {location}: {reason}")]
    Corrupt {
        location: String,
        reason: FormatError,
    },
    /// The id could name something outside the queue (see `is_valid_queue_id`).
    #[error("invalid queue id {id:?}")]
    InvalidId { id: String },
    /// Enqueue of an id that is already queued (in any state).
    #[error("queue id {id} already exists at {location}")]
    Exists { id: String, location: String },
    /// `defer`, `checkpoint` or `complete` of a message that is not (any longer) active;
    /// `location` is where the active message would be.
    #[error("queue id {id} is not active: {location} is missing")]
    NotActive { id: String, location: String },
    /// `hold` of a message that is active: a delivery attempt is in progress; `location` is
    /// where the active message lies.
    #[error("queue id {id} is being delivered; try again when the attempt ends ({location})")]
    Busy { id: String, location: String },
    /// The backend cannot be reached at all (a database that is down, say); nothing was done.
    #[error("queue unavailable at {location}: {reason}")]
    Unavailable { location: String, reason: String },
}

impl QueueError {
    /// A closure for `map_err` that attaches `path` to an I/O error.
    pub(crate) fn io(path: &Path) -> impl FnOnce(io::Error) -> QueueError + '_ {
        move |source| QueueError::Io {
            location: path.display().to_string(),
            source,
        }
    }
}

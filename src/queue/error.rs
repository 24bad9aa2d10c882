//! Errors of the queue layer; every message names the file or id concerned.

use std::io;
use std::path::{Path, PathBuf};

use super::format::FormatError;

/// What can go wrong in the spool.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// A filesystem operation failed.
    #[error("queue I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file failed verification; `path` is where it now lies (normally under `corrupt/`).
    #[error("corrupt queue file {}: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: FormatError },
    /// The id could name something outside the queue (see `is_valid_queue_id`).
    #[error("invalid queue id {id:?}")]
    InvalidId { id: String },
    /// Enqueue of an id that is already queued.
    #[error("queue id {id} already exists at {}", path.display())]
    Exists { id: String, path: PathBuf },
    /// `defer` or `complete` of a message that is not (any longer) in `active/`.
    #[error("queue id {id} is not active: {} is missing", path.display())]
    NotActive { id: String, path: PathBuf },
}

impl QueueError {
    /// A closure for `map_err` that attaches `path` to an I/O error.
    pub(crate) fn io(path: &Path) -> impl FnOnce(io::Error) -> QueueError + '_ {
        move |source| QueueError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

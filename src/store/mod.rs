//! Local mailboxes: the store trait delivery writes through, and its implementations.

pub mod audit;
mod audit_ops;
pub mod backend;
mod binding;
pub mod blobs;
mod encrypted;
mod encrypted_folders;
mod folder_index;
pub mod folders;
pub mod index;
pub mod kek;
mod keyring;
mod maildir;
pub mod ops;
mod rebind;
pub mod stream;

pub use encrypted::{open_store, open_stores, EncryptedStore, Stores};
pub use folders::{FlagOp, Flags, FolderInfo, FolderMessage, FolderView, Folders};
pub use maildir::{write_maildir_file, write_maildir_message, PlainMaildirStore};
pub use rebind::Rebinding;

use std::path::PathBuf;

/// One line of `mailbox list`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MessageSummary {
    pub id: String,
    /// The Date header as written, or empty.
    pub date: String,
    pub from: String,
    pub subject: String,
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no mailbox {0}")]
    NoSuchMailbox(String),
    #[error("no message {id} in mailbox {mailbox}")]
    NoSuchMessage { mailbox: String, id: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Content or metadata failed authentication: altered, swapped, truncated.
    #[error("integrity error: {0}")]
    Integrity(String),
    /// No key of the policy opened its policy key.
    #[error("policy {policy}: cannot unwrap the policy key; tried {}", tried.join("; "))]
    KeyUnavailable { policy: String, tried: Vec<String> },
    /// The policy was revoked: its keys are destroyed.
    #[error("policy {policy} was revoked (crypto-shredded): {what}")]
    Revoked { policy: String, what: String },
    #[error("{0}")]
    Policy(String),
    /// The index failed: `message` is the backend's text, `kind` what policy may read of it.
    #[error("index: {message}")]
    Index {
        kind: IndexErrorKind,
        message: String,
    },
    #[error("audit log: {0}")]
    Audit(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// What an index failure means, whichever backend reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexErrorKind {
    /// A row the operation needs is not there.
    NotFound,
    /// A uniqueness or reference constraint refused the change (a duplicate, a dangling id).
    Conflict,
    /// The index cannot be reached or used now (busy, locked, cannot be opened, I/O error, disk
    /// full): worth trying again later, so a delivery failing this way is deferred, not bounced.
    Unavailable,
    /// Anything else (corruption, a schema mismatch, a bug).
    Other,
}

impl From<crate::crypto::sealing::CryptoError> for StoreError {
    fn from(e: crate::crypto::sealing::CryptoError) -> Self {
        StoreError::Internal(e.to_string())
    }
}

impl StoreError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.into(),
            source,
        }
    }

    pub fn index(kind: IndexErrorKind, message: impl Into<String>) -> Self {
        StoreError::Index {
            kind,
            message: message.into(),
        }
    }

    /// The kind of an index failure (`None` for other errors).
    pub fn index_kind(&self) -> Option<IndexErrorKind> {
        match self {
            StoreError::Index { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

/// Where local delivery writes and where `mailbox list|read` reads. Calls block (run them off the
/// async reactor). `deliver` returns only once the message is on stable storage.
pub trait MailStore: Send + Sync {
    /// Stores a message durably in a mailbox (created on first use); returns its id.
    fn deliver(&self, mailbox: &str, message: &[u8]) -> Result<String, StoreError>;
    /// Like `deliver`, at most once per `delivery` key and mailbox: if a message was already
    /// committed under this key, returns its id and stores nothing. The queue runner passes
    /// `<queue id>/<recipient>`, so a queue file delivered again after a crash (between the
    /// mailbox commit and the queue file's removal) is not stored twice. Every store must keep
    /// this promise itself (there is no default falling back to `deliver`), for at least
    /// `index::DELIVERY_TAG_DAYS` days:
    /// - `EncryptedStore` commits the key's tag in the message row's transaction, so the tag and
    ///   the message exist together or not at all, across processes;
    /// - `PlainMaildirStore` records the key in a tag file before writing the message under the
    ///   id the tag names, and marks it done after; see its `deliver_once`.
    fn deliver_once(
        &self,
        mailbox: &str,
        message: &[u8],
        delivery: &str,
    ) -> Result<String, StoreError>;
    /// The messages of a mailbox, oldest first.
    fn list(&self, mailbox: &str) -> Result<Vec<MessageSummary>, StoreError>;
    /// The RFC 5322 bytes of one message.
    fn read(&self, mailbox: &str, id: &str) -> Result<Vec<u8>, StoreError>;
    /// How many messages a mailbox holds.
    fn count(&self, mailbox: &str) -> Result<usize, StoreError> {
        self.list(mailbox).map(|l| l.len())
    }
}

/// Summarises a message from its headers (From, Subject, Date).
pub fn summarize(id: &str, message: &[u8]) -> MessageSummary {
    let parsed = mail_parser::MessageParser::default().parse_headers(message);
    let (date, from, subject) = match &parsed {
        Some(m) => (
            m.date().map(|d| d.to_rfc3339()).unwrap_or_default(),
            m.from()
                .and_then(|a| a.first())
                .and_then(|a| a.address())
                .unwrap_or_default()
                .to_string(),
            m.subject().unwrap_or_default().to_string(),
        ),
        None => Default::default(),
    };
    MessageSummary {
        id: id.to_string(),
        date,
        from,
        subject,
        size: message.len() as u64,
    }
}

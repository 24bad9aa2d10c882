//! The audit log: append-only JSON lines, each carrying the SHA-256 of the line before it. With
//! the local store it is a file per node whose newest line is anchored in the index
//! ([`file::FileLog`]); with the store in PostgreSQL it is one chain in the database shared by
//! every node, each line also carrying a MAC under a key derived from the service key
//! ([`pg::PgLog`]). Either way editing, dropping or inserting a line is detected.

pub mod file;
mod group;
pub mod mac;
pub mod pg;

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::StoreError;
use file::FileLog;
use pg::PgLog;

/// `prev` of the first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// 1, 2, 3 … without gaps.
    pub seq: u64,
    /// RFC 3339, UTC.
    pub time: String,
    /// Hex SHA-256 of the previous line's bytes (without its newline), or `GENESIS`.
    pub prev: String,
    /// `policy-key-unwrap`, `policy-key-create`, `policy-rotate`, `root-rotate`, `set-policy`,
    /// `policy-revoke`, `reencrypt`.
    pub event: String,
    pub policy: String,
    /// Which key acted: `root <file> <key id>`, `availability <file> <key id>`, or empty.
    pub key: String,
    /// The command or process: `serve`, `mailbox read`, `store policy rotate` …
    pub actor: String,
    /// Why: the operation and its object.
    pub reason: String,
    /// The node that wrote the line, in the chain the nodes of one database share; absent from
    /// the lines of a node's own file.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
}

/// What an append left as the newest line: for the file log, stored in the index as its anchor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    pub seq: u64,
    pub hash: String,
}

/// The result of `AuditLog::verify`.
#[derive(Debug, Default)]
pub struct AuditReport {
    pub lines: u64,
    /// Every problem found, with its line number (the file) or sequence number (the database).
    pub problems: Vec<String>,
}

/// Hex SHA-256 of a line.
pub fn line_hash(line: &[u8]) -> String {
    hex::encode(Sha256::digest(line))
}

/// One event to append to the audit log: what happened (`event`), under which policy and key,
/// by whom, and why.
#[derive(Debug, Clone, Copy)]
pub struct AuditEvent<'a> {
    pub event: &'a str,
    pub policy: &'a str,
    pub key: &'a str,
    pub actor: &'a str,
    pub reason: &'a str,
}

/// The audit log of a store: a node's file, or the chain the nodes of one database share.
///
/// Appends from several threads are committed in groups: the lines waiting when a write starts
/// are chained and written together (one fsync, or one database transaction), and each `append`
/// returns only once the line is durable.
pub enum AuditLog {
    File(FileLog),
    Postgres(Box<PgLog>),
}

impl AuditLog {
    /// The file log `<keystore_dir>/audit.log`.
    pub fn new(keystore_dir: &Path) -> AuditLog {
        AuditLog::File(FileLog::new(keystore_dir))
    }

    /// Appends one event; returns the new line's anchor once the line is durable.
    pub fn append(&self, event: &AuditEvent) -> Result<Anchor, StoreError> {
        match self {
            AuditLog::File(f) => f.append(event),
            AuditLog::Postgres(p) => p.append(event),
        }
    }

    /// Whether the newest line must be anchored in the index (the file log). The database's
    /// chain keeps its head in the same transaction as its lines: nothing to anchor.
    pub fn anchors_in_index(&self) -> bool {
        matches!(self, AuditLog::File(_))
    }

    /// Groups written through this handle (each covering one or more appends).
    pub fn commits(&self) -> u64 {
        match self {
            AuditLog::File(f) => f.committer().commits(),
            AuditLog::Postgres(p) => p.committer().commits(),
        }
    }

    /// The highest sequence number this handle has made durable (0 before any).
    pub fn synced_seq(&self) -> u64 {
        match self {
            AuditLog::File(f) => f.committer().synced_seq(),
            AuditLog::Postgres(p) => p.committer().synced_seq(),
        }
    }

    /// The anchor of the newest line this handle has made durable, if any: anchoring it covers
    /// every earlier line too.
    pub fn synced(&self) -> Option<Anchor> {
        match self {
            AuditLog::File(f) => f.committer().synced(),
            AuditLog::Postgres(p) => p.committer().synced(),
        }
    }

    /// The file log's path (`None` for the database's chain).
    pub fn path(&self) -> Option<&Path> {
        match self {
            AuditLog::File(f) => Some(f.path()),
            AuditLog::Postgres(_) => None,
        }
    }

    /// Where the log is, for messages: the file, or the chain in the database.
    pub fn location(&self) -> String {
        match self {
            AuditLog::File(f) => f.path().display().to_string(),
            AuditLog::Postgres(p) => p.location(),
        }
    }

    /// Checks the whole log. For the file: its chain, and its newest line against `anchor`
    /// (from the index). For the database: chain, sequence numbers, every line's MAC, the head,
    /// and that the chain still holds the newest line this node wrote (`anchor` is not used).
    pub fn verify(&self, anchor: Option<&Anchor>) -> Result<AuditReport, StoreError> {
        match self {
            AuditLog::File(f) => f.verify(anchor),
            AuditLog::Postgres(p) => p.verify(),
        }
    }

    /// Every line, oldest first, as stored (not verified: see [`AuditLog::verify`]), each with
    /// its line number (the file) or sequence number (the database).
    pub fn lines(&self) -> Result<Vec<(u64, String)>, StoreError> {
        match self {
            AuditLog::File(f) => f.lines(),
            AuditLog::Postgres(p) => p.lines(),
        }
    }
}

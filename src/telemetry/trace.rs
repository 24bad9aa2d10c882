//! The message trace: one JSON object per line for every step of every message (received, each
//! delivery attempt, notifications, the final state), read back by `sealpost trace`.
//!
//! Records hold envelope addresses, TLS facts, connectors, rule names and SMTP replies; never
//! message content. The Message-ID is kept only as its SHA-256 (headers rest encrypted, see
//! docs/storage-security.md): `sealpost trace --message-id` hashes what it is given to match. Lines are appended with one `write` each (O_APPEND), so
//! concurrent writers do not interleave and `logrotate`'s copytruncate works.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::tls::TlsFacts;

/// TLS facts as traced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceTls {
    pub version: String,
    pub cipher: String,
}

impl From<&TlsFacts> for TraceTls {
    fn from(f: &TlsFacts) -> Self {
        TraceTls {
            version: f.version.clone(),
            cipher: f.cipher.clone(),
        }
    }
}

/// One traced step of one queued message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceRecord {
    pub time: DateTime<Utc>,
    /// The server that wrote the record (its `server.hostname`).
    pub server: String,
    pub queue_id: String,
    #[serde(flatten)]
    pub event: TraceEvent,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum TraceEvent {
    /// Accepted over SMTP and queued (one record per queued copy).
    Received {
        /// SHA-256 (hex) of the Message-ID header without angle brackets; see [`message_id_hash`].
        message_id_sha256: Option<String>,
        from: String,
        to: Vec<String>,
        client: String,
        helo: String,
        protocol: String,
        tls: Option<TraceTls>,
        /// The inbound connector the client matched.
        connector: Option<String>,
        authenticated: Option<String>,
        /// "rule:action" for each transport rule action applied.
        rules: Vec<String>,
        size: usize,
        /// The message came in BDAT chunks (RFC 3030) rather than after DATA.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        chunking: bool,
        /// MAIL FROM carried REQUIRETLS (RFC 8689).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        requiretls: bool,
        /// The message carries `TLS-Required: No` and no REQUIRETLS (RFC 8689 §5).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        tls_required_no: bool,
    },
    /// One delivery attempt for one recipient.
    Delivery {
        to: String,
        /// "local" or "remote".
        route: String,
        relay: Option<String>,
        relay_name: Option<String>,
        tls: Option<TraceTls>,
        connector: Option<String>,
        verification: Option<String>,
        /// The message required REQUIRETLS of this hop (RFC 8689).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        requiretls: bool,
        /// "delivered", "deferred" or "bounced".
        result: String,
        detail: String,
    },
    /// A delivery status notification was queued for the sender.
    Notification {
        kind: String,
        notice_id: String,
        to: String,
    },
    /// The message left the queue ("delivered", "bounced" or "partly bounced"), or was deferred
    /// until `next_attempt`.
    State {
        state: String,
        next_attempt: Option<DateTime<Utc>>,
    },
}

impl TraceRecord {
    /// The hashed Message-ID of a `received` record.
    pub fn message_id_hash(&self) -> Option<&str> {
        match &self.event {
            TraceEvent::Received {
                message_id_sha256, ..
            } => message_id_sha256.as_deref(),
            _ => None,
        }
    }
}

/// How a Message-ID is traced: SHA-256 hex of the id without angle brackets or outer spaces.
pub fn message_id_hash(message_id: &str) -> String {
    let id = message_id
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>');
    hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        id.as_bytes(),
    ))
}

/// The append-only trace file of one server.
pub struct TraceLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl TraceLog {
    /// Opens (creating, mode 0600) the trace file.
    pub fn open(path: &Path) -> std::io::Result<TraceLog> {
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        Ok(TraceLog {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record; a failure is logged, never fatal (the trace is not the queue).
    pub fn record(&self, record: &TraceRecord) {
        let mut line = match serde_json::to_vec(record) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "trace record not serialisable");
                return;
            }
        };
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = file.write_all(&line) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot write the message trace");
        }
    }
}

/// Reads a trace file; lines that do not parse are counted, not fatal.
pub fn read(path: &Path) -> std::io::Result<(Vec<TraceRecord>, usize)> {
    let file = File::open(path)?;
    let mut records = Vec::new();
    let mut bad = 0;
    for line in BufReader::new(file).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<TraceRecord>(&line) {
            Ok(r) => records.push(r),
            Err(_) => bad += 1,
        }
    }
    Ok((records, bad))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t/trace.jsonl");
        let log = TraceLog::open(&path).unwrap();
        let received = TraceRecord {
            time: Utc::now(),
            server: "mx.contoso.test".into(),
            queue_id: "Q1".into(),
            event: TraceEvent::Received {
                message_id_sha256: Some(message_id_hash("<abc@contoso.test>")),
                from: "a@contoso.test".into(),
                to: vec!["b@fabrikam.test".into()],
                client: "127.0.0.1:5000".into(),
                helo: "client".into(),
                protocol: "ESMTPS".into(),
                tls: Some(TraceTls {
                    version: "TLSv1.3".into(),
                    cipher: "TLS_AES_256_GCM_SHA384".into(),
                }),
                connector: None,
                authenticated: None,
                rules: vec!["secure:smime_encrypt".into()],
                size: 10,
                chunking: true,
                requiretls: true,
                tls_required_no: false,
            },
        };
        let state = TraceRecord {
            time: Utc::now(),
            server: "mx.contoso.test".into(),
            queue_id: "Q1".into(),
            event: TraceEvent::State {
                state: "delivered".into(),
                next_attempt: None,
            },
        };
        log.record(&received);
        log.record(&state);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"not json\n")
            .unwrap();
        let (records, bad) = read(&path).unwrap();
        assert_eq!(records, vec![received.clone(), state]);
        assert_eq!(bad, 1);
        assert_eq!(
            records[0].message_id_hash(),
            Some(message_id_hash("abc@contoso.test").as_str())
        );
        assert!(!std::fs::read_to_string(&path)
            .unwrap()
            .contains("abc@contoso"));
        let line = std::fs::read_to_string(&path).unwrap();
        assert!(line.starts_with('{') && line.contains("\"event\":\"received\""));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

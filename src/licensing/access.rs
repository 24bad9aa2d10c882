//! The access log of the licensing service ("document tracking"): every request that reaches a
//! decision, granted or refused, with the reader, the message (its Message-ID hashed), the
//! client's address and the reason. Entries go into the store's hash-chained audit log (event
//! `rms-access`), so `sealpost store audit verify` detects an edited or truncated access log;
//! `sealpost rms access-log` shows them.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The audit-log event of a licensing request.
pub const EVENT: &str = "rms-access";

/// One request, as logged (the `reason` of the audit record, as JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    /// `granted` or `refused`.
    pub outcome: String,
    /// The refusal code (`no-rights`, `revoked`, `unauthenticated`, ...); empty when granted.
    pub code: String,
    /// The proven reader; empty when nobody was proven.
    pub principal: String,
    /// `message_hash` of the Message-ID in the publishing license; empty when it has none.
    pub message: String,
    pub client: String,
    /// The rights granted, or the refusal's reason.
    pub detail: String,
}

impl Access {
    pub fn granted(principal: &str, message: &str, client: SocketAddr, rights: &str) -> Access {
        Access {
            outcome: "granted".into(),
            code: String::new(),
            principal: principal.into(),
            message: message.into(),
            client: client.to_string(),
            detail: rights.into(),
        }
    }

    pub fn refused(
        code: &str,
        principal: &str,
        message: &str,
        client: SocketAddr,
        reason: &str,
    ) -> Access {
        Access {
            outcome: "refused".into(),
            code: code.into(),
            principal: principal.into(),
            message: message.into(),
            client: client.to_string(),
            detail: reason.into(),
        }
    }
}

/// How a Message-ID appears in the access log: hex SHA-256 of it as written, trimmed (the log
/// says which message without saying its Message-ID).
pub fn message_hash(message_id: &str) -> String {
    hex::encode(Sha256::digest(message_id.trim().as_bytes()))
}

/// Where accesses are recorded. A request whose access cannot be recorded is not granted.
pub trait AccessLog: Send + Sync {
    fn record(&self, access: &Access) -> Result<(), String>;
}

/// The store's audit log, opened by the service for itself.
pub struct StoreAccessLog(pub crate::store::EncryptedStore);

impl AccessLog for StoreAccessLog {
    fn record(&self, access: &Access) -> Result<(), String> {
        let reason = serde_json::to_string(access).map_err(|e| e.to_string())?;
        crate::store::ops::record_event(&self.0, EVENT, "", "", &reason).map_err(|e| e.to_string())
    }
}

/// Accesses kept in memory (tests).
#[derive(Default)]
pub struct MemoryAccessLog(pub std::sync::Mutex<Vec<Access>>);

impl AccessLog for MemoryAccessLog {
    fn record(&self, access: &Access) -> Result<(), String> {
        self.0
            .lock()
            .map_err(|_| "access log poisoned".to_string())?
            .push(access.clone());
        Ok(())
    }
}

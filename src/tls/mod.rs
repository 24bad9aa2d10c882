//! TLS: rustls configurations, certificate and key loading, and the facts recorded about a session.

use serde::{Deserialize, Serialize};

/// What a TLS session negotiated, as written in Received headers and logs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsFacts {
    /// "TLSv1.3" or "TLSv1.2".
    pub version: String,
    /// The IANA suite name, e.g. "TLS_AES_256_GCM_SHA384".
    pub cipher: String,
}

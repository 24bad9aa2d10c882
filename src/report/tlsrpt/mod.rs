//! TLS-RPT (RFC 8460): every SMTP session sealpost opens toward a domain it delivers to by MX
//! is counted under the policy that applied to it (DANE, `tlsa`; MTA-STS, `sts`; or
//! `no-policy-found`), as a success or as a failure with its RFC 8460 result type. Once a day,
//! and on `sealpost tls-report send`, the counts of each domain that publishes one valid
//! `_smtp._tls` record go to its `mailto:` addresses as a gzipped JSON report.
//!
//! Sessions are kept behind [`SessionJournal`]: with the embedded storage, as one JSON line
//! each in `<data_dir>/tls-rpt/<YYYY-MM-DD>.jsonl` (UTC day), appended when they end, so a
//! stopped or crashed server loses none of them, and what has been reported is recorded per
//! domain in `state.json`; with PostgreSQL, in tables every node shares ([`pg::PgJournal`]).
//! Either way nothing is reported twice.

pub mod build;
pub mod journal;
pub mod pg;
pub mod send;
pub mod store;

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

pub use journal::Recorder;
pub use store::{SendLock, SessionJournal};

/// The kind of policy a session was held under (RFC 8460 §4.4 `policy-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyType {
    Tlsa,
    Sts,
    NoPolicyFound,
}

impl PolicyType {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyType::Tlsa => "tlsa",
            PolicyType::Sts => "sts",
            PolicyType::NoPolicyFound => "no-policy-found",
        }
    }
}

/// The policy a session was held under, as a report names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Policy {
    #[serde(rename = "type")]
    pub kind: PolicyType,
    /// The recipient domain (the policy domain).
    pub domain: String,
    /// `policy-string`: the TLSA records, or the lines of the MTA-STS policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub strings: Vec<String>,
    /// `mx-host`: the MX host (DANE) or the MX patterns (MTA-STS).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mx: Vec<String>,
}

impl Policy {
    /// A domain without a DANE or MTA-STS policy.
    pub fn none(domain: &str) -> Policy {
        Policy {
            kind: PolicyType::NoPolicyFound,
            domain: domain.to_ascii_lowercase(),
            strings: Vec::new(),
            mx: Vec::new(),
        }
    }
}

/// Why one session failed (RFC 8460 §4.4 `failure-details`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Failure {
    /// The RFC 8460 §4.3 result type, e.g. `tlsa-invalid`.
    pub result: String,
    /// The MX host name tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mx: Option<String>,
    /// The address of the MX host tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    /// In words, for the receiving domain's administrator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<String>,
}

/// One session, as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// When it ended, in seconds since the epoch.
    pub t: i64,
    pub policy: Policy,
    /// None: the session met its policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}

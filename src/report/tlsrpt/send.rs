//! Sending reports: for each domain with sessions not yet reported, its `_smtp._tls` record
//! (RFC 8460 §3) names where reports go; the report is queued like any message, to each
//! `mailto:` address, and the domain is marked reported up to the end of the report's range.
//! One sender at a time (the journal's send lock: a lock file, or an advisory lock in the
//! database that every node takes), so the daily run of `serve` and `sealpost tls-report send`,
//! on one node or several, never report the same sessions twice.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use mail_auth::common::parse::TxtRecordParser;
use mail_auth::mta_sts::{ReportUri, TlsRpt};
use serde::{Deserialize, Serialize};

use super::build::{self, Pending, Submitter};
use super::journal;
use super::store::SessionJournal;
use crate::dns::{DnsError, Resolver};
use crate::queue::{Envelope, QueueStore};

/// The most `mailto:` addresses one report goes to.
const MAX_RUA: usize = 10;
/// Sessions (day files) are kept this long after they were reported.
pub const KEEP_DAYS: i64 = 3;

/// What has been reported, kept in `<data_dir>/tls-rpt/state.json`.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct State {
    /// Domain → sessions before this time (seconds since the epoch) are reported.
    #[serde(default)]
    pub reported: BTreeMap<String, i64>,
    /// The end of the range of the last daily run (a UTC midnight).
    #[serde(default)]
    pub daily_until: Option<i64>,
}

const STATE_FILE: &str = "state.json";

pub fn load_state(dir: &Path) -> io::Result<State> {
    match std::fs::read(dir.join(STATE_FILE)) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", dir.join(STATE_FILE).display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(e),
    }
}

/// Writes the state durably: a temporary file, synced, renamed over the old one.
pub(super) fn save_state(dir: &Path, state: &State) -> io::Result<()> {
    let tmp = dir.join(format!("{STATE_FILE}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(state).map_err(io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(STATE_FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Who the reports of the server configured in `config` come from.
pub fn submitter(config: &crate::config::Config) -> Submitter {
    Submitter {
        organization: config.tls_report.organization.clone(),
        hostname: config.hostname.clone(),
        contact: config.tls_report.from.clone(),
    }
}

/// What became of one domain's pending sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Queued as `queue_id` to `to`.
    Sent {
        domain: String,
        report_id: String,
        queue_id: String,
        to: Vec<String>,
        sessions: (u64, u64),
    },
    /// The domain asks for no reports (no valid TLSRPT record, or no `mailto:` address): the
    /// sessions are dropped.
    NotWanted { domain: String, why: String },
    /// Not now (a DNS or queue failure): kept for the next run.
    Kept { domain: String, why: String },
}

/// Everything a run needs.
pub struct Sender<'a> {
    /// Where the sessions and the report state are (this node's files, or the database).
    pub journal: Arc<dyn SessionJournal>,
    pub submitter: Submitter,
    pub queue: Arc<dyn QueueStore>,
    pub resolver: Option<&'a Resolver>,
}

impl Sender<'_> {
    /// Reports every session before `until` not reported yet. With `daily`, records `until` as
    /// the last daily run. Holds the journal's send lock throughout: a second run, here or on
    /// another node, waits and then finds these sessions reported.
    pub async fn run(&self, until: i64, daily: bool) -> anyhow::Result<Vec<Outcome>> {
        let journal = self.journal.clone();
        let mut lock = tokio::task::spawn_blocking(move || journal.lock()).await??;
        let pending = lock.pending(until)?;
        let mut outcomes = Vec::new();
        for (domain, p) in pending {
            let outcome = self.send_one(&p).await;
            if !matches!(outcome, Outcome::Kept { .. }) {
                lock.mark(&domain, until)?;
            }
            outcomes.push(outcome);
        }
        let kept = outcomes.iter().any(|o| matches!(o, Outcome::Kept { .. }));
        lock.finish(until, daily, kept)?;
        Ok(outcomes)
    }

    async fn send_one(&self, p: &Pending) -> Outcome {
        let domain = p.domain.clone();
        let to = match self.rua(&domain).await {
            Ok(Ok(to)) => to,
            Ok(Err(why)) => {
                tracing::info!(domain = %domain, reason = %why, "no TLS report sent");
                return Outcome::NotWanted { domain, why };
            }
            Err(why) => {
                tracing::warn!(domain = %domain, reason = %why, "TLS report kept for later");
                return Outcome::Kept { domain, why };
            }
        };
        let report_id = format!(
            "{}.{}@{}",
            journal::day_of(p.start),
            crate::mail::new_queue_id(),
            self.submitter.hostname
        );
        let report = build::report(p, &self.submitter, &report_id);
        let message = match build::message(&report, &domain, &self.submitter, &to) {
            Ok(m) => m,
            Err(e) => {
                let why = format!("cannot build the report: {e}");
                return Outcome::Kept { domain, why };
            }
        };
        let queue_id = crate::mail::new_queue_id();
        let envelope = Envelope::new(
            queue_id.clone(),
            "",
            to.clone(),
            self.submitter.hostname.clone(),
            "localhost",
            chrono::Utc::now().timestamp(),
        );
        let queue = self.queue.clone();
        match tokio::task::spawn_blocking(move || queue.enqueue(&envelope, &message)).await {
            Ok(Ok(())) => {
                tracing::info!(domain = %domain, report_id = %report_id, queue_id = %queue_id, to = %to.join(", "), "TLS report queued");
                Outcome::Sent {
                    domain,
                    report_id,
                    queue_id,
                    to,
                    sessions: p.sessions(),
                }
            }
            Ok(Err(e)) => Outcome::Kept {
                domain,
                why: format!("cannot queue the report: {e}"),
            },
            Err(e) => Outcome::Kept {
                domain,
                why: format!("queueing the report failed: {e}"),
            },
        }
    }

    /// The `mailto:` addresses of the domain's one valid TLSRPT record (RFC 8460 §3: records
    /// not starting with `v=TLSRPTv1;` are ignored; zero or several valid ones mean no
    /// reports). Err: a temporary DNS failure.
    async fn rua(&self, domain: &str) -> Result<Result<Vec<String>, String>, String> {
        let Some(resolver) = self.resolver else {
            return Err("no DNS resolver".to_string());
        };
        let name = format!("_smtp._tls.{domain}");
        let records = match resolver.txt_records(&name).await {
            Ok(r) => r,
            Err(e @ DnsError::NoSuchDomain(_)) => return Ok(Err(e.to_string())),
            Err(e) => return Err(e.to_string()),
        };
        Ok(mailto(&name, &records))
    }
}

/// The `mailto:` addresses of the one valid TLSRPT record among `records`, or why none.
pub fn mailto(name: &str, records: &[String]) -> Result<Vec<String>, String> {
    let valid: Vec<TlsRpt> = records
        .iter()
        .filter(|r| r.trim_start().starts_with("v=TLSRPTv1"))
        .filter_map(|r| TlsRpt::parse(r.as_bytes()).ok())
        .collect();
    let [record] = valid.as_slice() else {
        return Err(format!(
            "{name}: {} valid TLSRPT records (exactly one is needed)",
            valid.len()
        ));
    };
    let to: Vec<String> = record
        .rua
        .iter()
        .filter_map(|u| match u {
            ReportUri::Mail(a) => Some(a.trim().to_string()),
            ReportUri::Http(_) => None,
        })
        .filter(|a| {
            crate::mail::address::parse_path(&format!("<{a}>"))
                .is_some_and(|(m, rest)| !m.is_empty() && rest.is_empty())
        })
        .take(MAX_RUA)
        .collect();
    if to.is_empty() {
        return Err(format!(
            "{name}: no mailto: address sealpost can send to (https: is not supported)"
        ));
    }
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_valid_record_with_mailto_is_needed() {
        let n = "_smtp._tls.b.test";
        let one = vec!["v=TLSRPTv1; rua=mailto:tls@b.test,mailto:x@c.test".to_string()];
        assert_eq!(
            mailto(n, &one).unwrap(),
            vec!["tls@b.test".to_string(), "x@c.test".to_string()]
        );
        let with_other = vec![one[0].clone(), "v=spf1 -all".to_string()];
        assert!(mailto(n, &with_other).is_ok());
        let two = vec![one[0].clone(), one[0].clone()];
        assert!(mailto(n, &two).unwrap_err().contains("2 valid"));
        assert!(mailto(n, &[]).is_err());
        let https = vec!["v=TLSRPTv1; rua=https://r.b.test/v1".to_string()];
        assert!(mailto(n, &https).unwrap_err().contains("https"));
        let bad = vec!["v=TLSRPTv1; rua=mailto:not an address".to_string()];
        assert!(mailto(n, &bad).is_err());
        let wrong_version = vec!["v=TLSRPTv2; rua=mailto:tls@b.test".to_string()];
        assert!(mailto(n, &wrong_version).is_err());
    }
}

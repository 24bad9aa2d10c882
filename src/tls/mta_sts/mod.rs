//! MTA-STS (RFC 8461), an outbound TLS policy source: looks up and caches a recipient domain's
//! policy before delivery and turns it into a [`TlsPolicy`] (verify-name against the public
//! roots, or `[delivery] mta_sts_ca_file`, for the MX host connected to, TLS 1.2+), enforcing
//! in mode `enforce` and auditing in mode `testing`.

pub mod cache;
pub mod fetch;
pub mod policy;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use rustls::ClientConfig;

use self::cache::{now_secs, Cache, Stored};
use self::policy::{parse_txt, Mode, Policy};
use crate::dns::Resolver;
use crate::tls::policy::{
    ConnectorVerifier, PeerCheck, PolicyMode, TlsLevel, TlsPolicy, TrustAnchors,
};
use crate::tls::{TlsError, TlsMinVersion};

/// How a sender uses MTA-STS (`[delivery] mta_sts`, and per outbound connector).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MtaStsMode {
    /// Apply a domain's policy when it publishes one; deliver as before when it does not.
    #[default]
    Opportunistic,
    /// As opportunistic, and a domain without a valid policy (mode enforce or testing) is
    /// deferred (4.7.4).
    Mandatory,
    /// Never look.
    Off,
}

impl MtaStsMode {
    pub fn parse(text: &str) -> Option<MtaStsMode> {
        match text {
            "opportunistic" => Some(MtaStsMode::Opportunistic),
            "mandatory" => Some(MtaStsMode::Mandatory),
            "off" => Some(MtaStsMode::Off),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MtaStsMode::Opportunistic => "opportunistic",
            MtaStsMode::Mandatory => "mandatory",
            MtaStsMode::Off => "off",
        }
    }
}

/// A domain's valid policy, ready to apply: the TLS policy it maps to is built once per fetched
/// policy, so its identity (which keys the connection pool) lasts as long as the policy.
pub struct Applied {
    pub domain: String,
    pub id: String,
    pub policy: Policy,
    /// Verify-name for the MX host, enforcing in mode enforce, audit in mode testing.
    pub tls: Arc<TlsPolicy>,
}

impl Applied {
    /// "mta-sts (example.test, enforce)": how permits, failures and traces name this source.
    pub fn label(&self) -> String {
        source_label(&self.domain, self.policy.mode)
    }
}

fn source_label(domain: &str, mode: Mode) -> String {
    format!("mta-sts ({domain}, {})", mode.as_str())
}

/// What a lookup found for a domain.
pub enum Lookup {
    /// A policy in mode enforce or testing applies.
    Policy(Arc<Applied>),
    /// No policy applies (none published, mode none, or none could be had): why.
    Absent(String),
}

/// The MTA-STS policy source: trust anchors for policy hosts and MX hosts, and the cache.
pub struct MtaSts {
    anchors: TrustAnchors,
    fetch_tls: Arc<ClientConfig>,
    port: u16,
    cache: Cache<Applied>,
}

impl MtaSts {
    /// `anchors`: the CA certificates policy hosts and MX hosts are verified against (None: the
    /// public web roots). `cache_file`: where the cache is kept across restarts (None: memory).
    pub fn new(
        anchors: Option<TrustAnchors>,
        cache_file: Option<PathBuf>,
    ) -> Result<MtaSts, TlsError> {
        let anchors = anchors.unwrap_or_else(TrustAnchors::system);
        let fetch_tls = fetch::client_config(&anchors)?;
        let build = |domain: &str, stored: &Stored| {
            applied(&anchors, domain, stored)
                .map_err(|e| tracing::warn!(domain, error = %e, "cached MTA-STS policy dropped"))
                .ok()
        };
        let cache = Cache::open(cache_file, build);
        Ok(MtaSts {
            anchors,
            fetch_tls,
            port: 443,
            cache,
        })
    }

    /// The policy of `domain` (lower case), following RFC 8461 §3 and §5.1: the TXT record of
    /// `_mta-sts.<domain>` is read each time; a cached policy under the same id is used until
    /// its `max_age`; a new id, or none cached, fetches the policy file. When the TXT record is
    /// missing or bad, or the fetch fails, a cached policy that has not expired still applies.
    pub async fn lookup(&self, resolver: &Resolver, domain: &str) -> Lookup {
        let cached = self.cache.get(domain, SystemTime::now());
        let txt = match resolver.txt_records(&format!("_mta-sts.{domain}")).await {
            Ok(records) => parse_txt(&records).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let reason = match (txt, cached) {
            (Ok(record), Some((stored, applied))) if stored.id == record.id => {
                return usable(applied)
            }
            (Ok(record), cached) => {
                match fetch::fetch(resolver, self.fetch_tls.clone(), domain, self.port).await {
                    Ok(policy) => {
                        let stored = Stored {
                            id: record.id,
                            policy,
                            fetched: now_secs(),
                        };
                        match applied(&self.anchors, domain, &stored) {
                            Ok(a) => {
                                let a = Arc::new(a);
                                tracing::info!(domain, id = %stored.id, mode = stored.policy.mode.as_str(),
                                    mx = %stored.policy.patterns(), max_age = stored.policy.max_age,
                                    "MTA-STS policy fetched");
                                self.cache.put(domain, stored, a.clone());
                                return usable(a);
                            }
                            Err(e) => format!("cannot apply the policy: {e}"),
                        }
                    }
                    Err(e) => {
                        tracing::warn!(domain, error = %e, "MTA-STS policy fetch failed");
                        if let Some((_, applied)) = cached {
                            return usable(applied);
                        }
                        e.to_string()
                    }
                }
            }
            (Err(_), Some((_, applied))) => return usable(applied),
            (Err(why), None) => format!("_mta-sts.{domain}: {why}"),
        };
        Lookup::Absent(reason)
    }
}

/// Mode none is the same as no policy (RFC 8461 §5).
fn usable(applied: Arc<Applied>) -> Lookup {
    match applied.policy.mode {
        Mode::None => Lookup::Absent(format!(
            "{}: the domain's policy mode is none",
            applied.domain
        )),
        _ => Lookup::Policy(applied),
    }
}

/// The TLS policy a fetched policy maps to: verify-name (no names: the MX host connected to)
/// against `anchors`, TLS 1.2+, enforcing inside the handshake in mode enforce.
fn applied(anchors: &TrustAnchors, domain: &str, stored: &Stored) -> Result<Applied, TlsError> {
    let check = PeerCheck {
        level: TlsLevel::VerifyName,
        names: Vec::new(),
        anchors: Some(anchors.clone()),
        fingerprints: Vec::new(),
    };
    let enforce = stored.policy.mode == Mode::Enforce;
    let verifier = Arc::new(ConnectorVerifier::new(check.clone(), enforce));
    let config = crate::tls::connector_client_config(verifier, TlsMinVersion::Tls12, None)?;
    let mode = if enforce {
        PolicyMode::Enforce
    } else {
        PolicyMode::Audit
    };
    let tls = TlsPolicy::new(None, check, mode, config)
        .with_source(source_label(domain, stored.policy.mode));
    Ok(Applied {
        domain: domain.to_string(),
        id: stored.id.clone(),
        policy: stored.policy.clone(),
        tls: Arc::new(tls),
    })
}

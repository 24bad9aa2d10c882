//! DANE (RFC 7672) for a delivery by MX: before any connection opens, the MX hosts whose MX
//! answer and TLSA records are DNSSEC-secure get a policy of their own (TLS mandatory, the
//! certificate checked against the records); the other hosts keep the destination's policy.
//!
//! Per MX host: insecure address records (RFC 7672 §2.2.2) → no DANE, and no TLSA lookup;
//! secure ones → TLSA records at the CNAME-expanded host name, then at the host name itself;
//! secure usable records → a DANE policy; a secure denial or an insecure answer →
//! no DANE (MTA-STS, then opportunistic TLS); a bogus or failed lookup → that host is not
//! tried (451 4.7.5), never plaintext. DANE wins over MTA-STS for the hosts it covers (RFC 8461
//! §2). `dane = "mandatory"` defers (4.7.5) a domain none of whose MX hosts has secure TLSA
//! records, and tries only the hosts that have them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::RemoteDelivery;
use crate::config::DaneMode;
use crate::delivery::{Destination, NextHop};
use crate::dns::{AddressAnswer, DnsError, Resolver, TlsaAnswer};
use crate::queue::TlsDemand;
use crate::tls::policy::{DaneCheck, PolicyMode, TlsLevel, TlsPolicy};

/// How long the answer to "does DNSSEC validation work?" is kept.
const PROBE_TTL: Duration = Duration::from_secs(60);
/// The most DANE policies (MX host and record set) kept at once.
const MAX_POLICIES: usize = 10_000;

/// The DANE settings of a `RemoteDelivery`.
#[derive(Default)]
pub(super) struct Dane {
    /// The validating resolver (None: DANE is off everywhere, or none could be built).
    pub resolver: Option<Resolver>,
    /// The zone of the trust anchor, whose keys must validate for DANE to be available.
    pub anchor_zone: String,
    pub default_mode: DaneMode,
    pub modes: HashMap<String, DaneMode>,
    /// The last availability check and when it ran.
    probe: std::sync::Mutex<Option<(Result<(), String>, Instant)>>,
    /// One policy per (MX host, record set, mode): its identity keys the connection pool, so a
    /// connection is reused only for the same records.
    policies: std::sync::Mutex<HashMap<(String, String, bool), Arc<TlsPolicy>>>,
}

impl Dane {
    pub fn new(
        resolver: Option<Resolver>,
        anchor_zone: String,
        default_mode: DaneMode,
        modes: HashMap<String, DaneMode>,
    ) -> Dane {
        Dane {
            resolver,
            anchor_zone,
            default_mode,
            modes,
            ..Dane::default()
        }
    }
}

/// What DANE decided for one MX host.
#[derive(Clone)]
pub(super) enum HostDane {
    Policy(Arc<TlsPolicy>),
    /// The TLSA lookup failed (bogus or temporary): the host is not tried.
    Defer(String),
}

/// DANE's decision for one delivery: per MX host, and whether hosts without DANE may be used.
pub(super) struct DanePlan {
    hosts: HashMap<String, HostDane>,
    mandatory: bool,
}

impl DanePlan {
    /// For a target host: Some(decision) under DANE; None when the destination's own policy
    /// applies. Under `mandatory` a host without secure TLSA records is refused.
    pub fn for_host(&self, host: &str) -> Option<HostDane> {
        match self.hosts.get(host) {
            Some(decision) => Some(decision.clone()),
            None if self.mandatory => Some(HostDane::Defer(format!(
                "451 4.7.5 DANE is mandatory and {host} has no DNSSEC-secure TLSA records"
            ))),
            None => None,
        }
    }

    /// Whether the host has a DANE policy (MTA-STS does not apply to it).
    pub fn covers(&self, host: &str) -> bool {
        matches!(self.hosts.get(host), Some(HostDane::Policy(_)))
    }

    /// Whether some host's DANE policy verifies the certificate (what REQUIRETLS asks).
    pub fn verifies(&self) -> bool {
        self.hosts
            .values()
            .any(|h| matches!(h, HostDane::Policy(p) if p.level().verifies()))
    }
}

impl RemoteDelivery {
    /// DANE for a delivery by MX whose policy is not forced by a connector (smart hosts and
    /// static routes have no MX). None: DANE does not apply. Err: deferred (451 4.7.5).
    pub(super) async fn dane_plan(
        &self,
        dest: &Destination,
        policy: &TlsPolicy,
        tls: TlsDemand,
    ) -> Result<Option<DanePlan>, String> {
        let dane = &self.dane;
        let mode = dest
            .connector
            .as_ref()
            .and_then(|c| dane.modes.get(c))
            .copied()
            .unwrap_or(dane.default_mode);
        let (NextHop::Mx(domain), Some(resolver)) = (&dest.hop, &dane.resolver) else {
            return Ok(None);
        };
        if mode == DaneMode::Off
            || (policy.connector().is_some() && policy.level() > TlsLevel::Opportunistic)
        {
            return Ok(None);
        }
        let metrics = &self.telemetry.metrics;
        // `TLS-Required: No` (RFC 8689 §5): the recipient domain's policy may not stop the
        // message.
        if tls.relax_recipient_policies {
            metrics.tls_policy("dane", "relaxed-by-tls-required-no");
            return Ok(None);
        }
        let mandatory = mode == DaneMode::Mandatory;
        if let Err(why) = self.dnssec_available(resolver).await {
            if mandatory {
                metrics.tls_policy("dane", "unavailable");
                return Err(format!(
                    "451 4.7.5 DANE is mandatory and DNSSEC validation is not available: {why}"
                ));
            }
            tracing::debug!(domain = %domain, reason = %why, "DNSSEC validation not available; no DANE");
            return Ok(None);
        }
        let (hosts, secure) = match resolver.mx_secure(domain).await {
            Ok(found) => found,
            Err(e @ DnsError::Bogus(_)) => {
                metrics.tls_policy("dane", "bogus");
                self.report_bogus(domain, None, &e);
                tracing::warn!(domain = %domain, error = %e, "DNSSEC-bogus MX answer; deferred");
                return Err(format!("451 4.7.5 DANE: {e}"));
            }
            Err(e) if mandatory => {
                return Err(format!("451 4.7.5 DANE is mandatory: {e}"));
            }
            // The MX lookup of the delivery itself reports the error.
            Err(_) => return Ok(None),
        };
        let missing = |why: String| {
            metrics.tls_policy("dane", "missing-records");
            Err(format!("451 4.7.5 DANE is mandatory and {why}"))
        };
        if !secure {
            return if mandatory {
                missing(format!("the MX records of {domain} are not DNSSEC-secure"))
            } else {
                Ok(None)
            };
        }
        let audit = policy.connector().is_some() && policy.mode() == PolicyMode::Audit;
        let mut plan = DanePlan {
            hosts: HashMap::new(),
            mandatory,
        };
        for mx in hosts {
            if plan.hosts.contains_key(&mx.host) {
                continue;
            }
            if let Some(decision) = self.host_dane(resolver, domain, &mx.host, audit).await {
                plan.hosts.insert(mx.host, decision);
            }
        }
        if plan.hosts.is_empty() {
            return if mandatory {
                missing(format!(
                    "no MX host of {domain} has DNSSEC-secure TLSA records"
                ))
            } else {
                Ok(None)
            };
        }
        if plan.covers_any() {
            metrics.tls_policy("dane", if audit { "audit" } else { "enforce" });
        }
        Ok(Some(plan))
    }

    /// Counts a DNSSEC-bogus MX or TLSA answer for TLS-RPT (`dnssec-invalid`).
    fn report_bogus(&self, domain: &str, mx: Option<&str>, e: &DnsError) {
        let policy = crate::report::tlsrpt::Policy {
            kind: crate::report::tlsrpt::PolicyType::Tlsa,
            domain: domain.to_ascii_lowercase(),
            strings: Vec::new(),
            mx: mx.map(str::to_string).into_iter().collect(),
        };
        self.report_policy_failure(policy, "dnssec-invalid", mx, e.to_string());
    }

    /// DANE for one MX host (RFC 7672 §2.2.2): its address records must be DNSSEC-secure
    /// (insecure: None, no DANE; bogus or failed: the host is deferred), then the TLSA records
    /// at the CNAME-expanded name and, when that has no secure usable records, at the host
    /// name itself. None: the host has no DANE.
    async fn host_dane(
        &self,
        resolver: &Resolver,
        domain: &str,
        host: &str,
        audit: bool,
    ) -> Option<HostDane> {
        let metrics = &self.telemetry.metrics;
        let failed = |e: DnsError| {
            let bogus = matches!(e, DnsError::Bogus(_));
            metrics.tls_policy("dane", if bogus { "bogus" } else { "lookup-failed" });
            if bogus {
                self.report_bogus(domain, Some(host), &e);
            }
            tracing::warn!(mx = %host, error = %e, "DNSSEC lookup for DANE failed; MX host not tried");
            Some(HostDane::Defer(format!("451 4.7.5 DANE ({host}): {e}")))
        };
        let bases = match resolver.address_security(host).await {
            Ok(AddressAnswer::Secure { expanded }) => {
                let mut bases: Vec<String> = expanded.into_iter().collect();
                bases.push(host.to_string());
                bases
            }
            Ok(AddressAnswer::Insecure) => {
                tracing::debug!(mx = %host, "the MX host's addresses are not DNSSEC-secure; no DANE");
                return None;
            }
            Err(e) => return failed(e),
        };
        for base in &bases {
            match resolver.tlsa(&format!("_25._tcp.{base}")).await {
                Ok(TlsaAnswer::Secure(records)) if !records.is_empty() => {
                    // DANE-TA reference names: the TLSA base domain and the MX host name.
                    let mut names = vec![base.clone()];
                    if base != host {
                        names.push(host.to_string());
                    }
                    return Some(HostDane::Policy(
                        self.dane_policy(host, names, records, audit),
                    ));
                }
                Ok(_) => {}
                Err(e) => return failed(e),
            }
        }
        None
    }

    /// The policy for `host` under `records`, made once per record set.
    fn dane_policy(
        &self,
        host: &str,
        names: Vec<String>,
        records: Vec<crate::tls::dane::Tlsa>,
        audit: bool,
    ) -> Arc<TlsPolicy> {
        let shown: Vec<String> = records.iter().map(|r| r.to_string()).collect();
        let key = (names.join(" "), shown.join("; "), audit);
        let mut policies = self.dane.policies.lock().unwrap_or_else(|p| p.into_inner());
        if policies.len() >= MAX_POLICIES && !policies.contains_key(&key) {
            // Bounded memory: start over (idle connections under the old policies are then
            // never reused, and close when their reuse time ends).
            policies.clear();
        }
        policies
            .entry(key)
            .or_insert_with(|| {
                let check = DaneCheck { records, names };
                let mode = if audit {
                    PolicyMode::Audit
                } else {
                    PolicyMode::Enforce
                };
                Arc::new(TlsPolicy::dane(check, mode, format!("dane ({host})")))
            })
            .clone()
    }

    /// Whether the validating resolver validates from the trust anchor down (checked at most
    /// once a minute).
    async fn dnssec_available(&self, resolver: &Resolver) -> Result<(), String> {
        {
            let probe = self.dane.probe.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((result, at)) = probe.as_ref() {
                if at.elapsed() < PROBE_TTL {
                    return result.clone();
                }
            }
        }
        let result = resolver
            .dnssec_works(&self.dane.anchor_zone)
            .await
            .map_err(|e| e.to_string());
        if let Err(why) = &result {
            tracing::warn!(reason = %why, "DNSSEC validation does not work with the configured resolver; DANE is not applied");
        }
        *self.dane.probe.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((result.clone(), Instant::now()));
        result
    }
}

impl DanePlan {
    fn covers_any(&self) -> bool {
        self.hosts
            .values()
            .any(|h| matches!(h, HostDane::Policy(_)))
    }
}

//! What delivery tells TLS-RPT (RFC 8460): for each session opened toward a domain delivered
//! by MX, the policy it was held under and whether it met it. Reused connections are not new
//! sessions and are not counted again.

use std::sync::Arc;

use super::{RemoteDelivery, Target};
use crate::delivery::{Destination, NextHop};
use crate::report::tlsrpt::{Failure, Policy, PolicyType, SessionJournal};
use crate::smtp::client::Connection;
use crate::tls::mta_sts::Applied;
use crate::tls::policy::{TlsFailure, TlsPolicy};

impl RemoteDelivery {
    /// Where sessions are counted for TLS-RPT (none: not counted).
    pub fn with_tls_report(mut self, recorder: Option<Arc<dyn SessionJournal>>) -> Self {
        self.tls_report = recorder;
        self
    }

    /// The TLS-RPT policy a session to `target` is held under: DANE's records when the host's
    /// policy is DANE, the MTA-STS policy when it is in use, else none found. None: the
    /// delivery is not by MX, or nothing is counted.
    pub(super) fn report_policy(
        &self,
        dest: &Destination,
        policy: &TlsPolicy,
        sts: Option<&Applied>,
        target: &Target,
    ) -> Option<Policy> {
        self.tls_report.as_ref()?;
        let NextHop::Mx(domain) = &dest.hop else {
            return None;
        };
        let domain = domain.to_ascii_lowercase();
        if let Some(check) = policy.dane_check() {
            return Some(Policy {
                kind: PolicyType::Tlsa,
                domain,
                strings: check.records.iter().map(ToString::to_string).collect(),
                mx: vec![target.name.clone()],
            });
        }
        if let Some(applied) = sts.filter(|a| a.tls.id() == policy.id()) {
            return Some(sts_policy(&domain, applied));
        }
        Some(Policy::none(&domain))
    }

    /// Counts a session that opened: a success when it met its policy over TLS; a failure
    /// when audit mode (or MTA-STS testing) overlooked one, or when it went on without TLS.
    pub(super) fn report_opened(
        &self,
        policy: Option<&Policy>,
        target: &Target,
        conn: &Connection,
    ) {
        let overlooked = conn.permit().and_then(|p| p.overlooked());
        let failure = match (overlooked, conn.tls()) {
            (Some(f), _) => Some(&f.failure),
            (None, None) => Some(&TlsFailure::NoStartTls),
            (None, Some(_)) => None,
        };
        self.report_session(policy, target, failure);
    }

    /// Counts one session: `failure` None when it met its policy.
    pub(super) fn report_session(
        &self,
        policy: Option<&Policy>,
        target: &Target,
        failure: Option<&TlsFailure>,
    ) {
        let (Some(recorder), Some(policy)) = (&self.tls_report, policy) else {
            return;
        };
        let failure = failure.map(|f| Failure {
            result: f.tlsrpt_result_type().to_string(),
            mx: Some(target.name.clone()),
            ip: Some(target.addr.ip()),
            info: Some(f.to_string()),
        });
        recorder.record(policy, failure);
    }

    /// Counts a failure of the domain's policy itself, before any session (a DNSSEC-bogus
    /// answer, an MTA-STS policy no MX host matches).
    pub(super) fn report_policy_failure(
        &self,
        policy: Policy,
        result: &str,
        mx: Option<&str>,
        info: String,
    ) {
        if let Some(recorder) = &self.tls_report {
            let failure = Failure {
                result: result.to_string(),
                mx: mx.map(str::to_string),
                ip: None,
                info: Some(info),
            };
            recorder.record(&policy, Some(failure));
        }
    }
}

/// An MTA-STS policy as reports name it: its lines, and its MX patterns.
pub(super) fn sts_policy(domain: &str, applied: &Applied) -> Policy {
    let p = &applied.policy;
    let mut strings = vec![
        "version: STSv1".to_string(),
        format!("mode: {}", p.mode.as_str()),
    ];
    strings.extend(p.mx.iter().map(|m| format!("mx: {m}")));
    strings.push(format!("max_age: {}", p.max_age));
    Policy {
        kind: PolicyType::Sts,
        domain: domain.to_ascii_lowercase(),
        strings,
        mx: p.mx.iter().map(ToString::to_string).collect(),
    }
}

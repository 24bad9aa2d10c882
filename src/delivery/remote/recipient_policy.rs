//! The recipient domain's own TLS policy for a delivery by MX (MTA-STS, RFC 8461): chosen
//! before any connection opens, and the MX hosts it allows.

use std::sync::Arc;

use super::{Chosen, RemoteDelivery, Target};
use crate::delivery::{Destination, NextHop};
use crate::queue::TlsDemand;
use crate::tls::mta_sts::policy::Mode as StsMode;
use crate::tls::mta_sts::{Applied, Lookup, MtaStsMode};
use crate::tls::policy::{TlsLevel, TlsPolicy};

impl RemoteDelivery {
    /// MTA-STS for a delivery by MX whose TLS policy is opportunistic (a connector's forced
    /// TLS wins; smart hosts and static routes have no MX): the domain's policy replaces it.
    /// With `mta_sts = "mandatory"` a domain without a valid policy is deferred (4.7.4). A
    /// policy in mode testing does not replace the stricter default a transport rule asks for.
    pub(super) async fn mta_sts_policy(
        &self,
        dest: &Destination,
        policy: Arc<TlsPolicy>,
        tls: TlsDemand,
    ) -> Result<Chosen, String> {
        let metrics = &self.telemetry.metrics;
        let source = if policy.connector().is_some() {
            "connector"
        } else {
            "opportunistic"
        };
        let mode = dest
            .connector
            .as_ref()
            .and_then(|c| self.mta_sts_modes.get(c))
            .copied()
            .unwrap_or(self.mta_sts_default);
        let (NextHop::Mx(domain), Some(sts), Ok(resolver)) =
            (&dest.hop, &self.mta_sts, self.resolver())
        else {
            metrics.tls_policy(source, policy.level().as_str());
            return Ok((policy, None));
        };
        if mode == MtaStsMode::Off || policy.level() > TlsLevel::Opportunistic {
            metrics.tls_policy(source, policy.level().as_str());
            return Ok((policy, None));
        }
        // `TLS-Required: No` (RFC 8689 §5): the recipient domain's policy may not stop the
        // message; TLS is still tried as usual (REQUIRETLS, when given, made this false).
        if tls.relax_recipient_policies {
            metrics.tls_policy("mta-sts", "relaxed-by-tls-required-no");
            return Ok((policy, None));
        }
        match sts.lookup(resolver, domain).await {
            Lookup::Policy(a) if a.policy.mode == StsMode::Testing && tls.rule_requires_tls => {
                metrics.tls_policy("mta-sts", "testing-overridden");
                Ok((policy, None))
            }
            Lookup::Policy(a) => {
                metrics.tls_policy("mta-sts", a.policy.mode.as_str());
                Ok((a.tls.clone(), Some(a)))
            }
            Lookup::Absent(why) if mode == MtaStsMode::Mandatory => {
                metrics.tls_policy("mta-sts", "missing-policy");
                tracing::warn!(domain = %domain, reason = %why, "MTA-STS is mandatory and the domain has no valid policy; deferred");
                Err(format!(
                    "451 4.7.4 MTA-STS is mandatory and {domain} has no valid policy: {why}"
                ))
            }
            Lookup::Absent(why) => {
                tracing::debug!(domain = %domain, reason = %why, "no MTA-STS policy");
                metrics.tls_policy(source, policy.level().as_str());
                Ok((policy, None))
            }
        }
    }

    /// RFC 8461 §4.1: under a policy in mode enforce only MX hosts its patterns name are tried
    /// (none: deferred, 4.7.5); in mode testing the others are logged and tried as well. Hosts
    /// `under_dane` are DANE's, not MTA-STS's (RFC 8461 §2), and always kept.
    pub(super) fn mta_sts_targets(
        &self,
        sts: Option<&Applied>,
        targets: Vec<Target>,
        under_dane: impl Fn(&str) -> bool,
    ) -> Result<Vec<Target>, String> {
        let Some(applied) = sts else {
            return Ok(targets);
        };
        let mut refused: Vec<&str> = targets
            .iter()
            .filter(|t| !applied.policy.allows_mx(&t.name) && !under_dane(&t.name))
            .map(|t| t.name.as_str())
            .collect();
        refused.dedup();
        for host in &refused {
            tracing::warn!(policy = %applied.label(), mx = %host, patterns = %applied.policy.patterns(),
                "MX host not named by the MTA-STS policy");
        }
        if applied.policy.mode != StsMode::Enforce || refused.is_empty() {
            return Ok(targets);
        }
        let refused = refused.join(", ");
        let allowed: Vec<Target> = targets
            .into_iter()
            .filter(|t| applied.policy.allows_mx(&t.name) || under_dane(&t.name))
            .collect();
        if allowed.is_empty() {
            self.telemetry.metrics.tls_policy("mta-sts", "mx-mismatch");
            self.report_policy_failure(
                super::tls_report::sts_policy(&applied.domain, applied),
                "validation-failure",
                None,
                format!("no MX host matches the policy (MX: {refused})"),
            );
            return Err(format!(
                "451 4.7.5 TLS required by {}: no MX host matches the policy's mx patterns {} (MX: {refused})",
                applied.label(),
                applied.policy.patterns()
            ));
        }
        Ok(allowed)
    }
}

//! What delivery would do toward one destination, without sending mail: the TLS policy each
//! target host gets (decided by the same steps as [`RemoteDelivery::deliver`]: connector, DANE,
//! MTA-STS, opportunistic) and whether a STARTTLS connection under it meets that policy. For
//! `sealpost tls-check --domain`.

use std::net::SocketAddr;

use serde::Serialize;

use super::{host_policy, RemoteDelivery, TargetError};
use crate::delivery::Destination;
use crate::queue::TlsDemand;
use crate::tls::mta_sts::Applied;
use crate::tls::policy::{PolicyMode, TlsPolicy};
use crate::tls::TlsFacts;

/// The check of one destination.
#[derive(Debug, Clone, Serialize)]
pub struct DestinationCheck {
    /// The destination as delivery names it (e.g. "MX of example.test").
    pub destination: String,
    /// The outbound connector routing chose, if any.
    pub connector: Option<String>,
    /// Why delivery would defer or fail the whole destination before connecting (e.g. a bogus
    /// DNSSEC answer, no MX host allowed by an MTA-STS policy); None: the hosts were tried.
    pub refused: Option<String>,
    pub hosts: Vec<HostCheck>,
}

/// The check of one target host (one address of one MX host or smart host).
#[derive(Debug, Clone, Serialize)]
pub struct HostCheck {
    pub host: String,
    pub address: Option<SocketAddr>,
    /// Which policy applies: `dane`, `mta-sts`, `connector` or `opportunistic`.
    pub policy: String,
    /// The policy's own description, e.g. "dane (mx.example.test)", "mta-sts (example.test,
    /// enforce)", the connector's name, or the TLS level.
    pub detail: String,
    /// `enforce` or `audit` (audit: a failed check is logged and the mail delivered).
    pub mode: String,
    pub tls: Option<TlsFacts>,
    /// Whether the connection met the policy (in audit mode: without anything overlooked).
    pub passed: bool,
    /// What delivery would do: "deliver: <what the check established>", "deliver (audit):
    /// <the failure overlooked>", or "defer: <reason>".
    pub outcome: String,
}

impl RemoteDelivery {
    /// Decides the policy of each target of `dest` as [`RemoteDelivery::deliver`] does for a
    /// message with no TLS demands of its own, and opens (then QUITs) a connection to each
    /// under its policy. No MAIL FROM is sent.
    pub async fn check_destination(&self, dest: &Destination) -> DestinationCheck {
        let tls = TlsDemand::default();
        let mut check = DestinationCheck {
            destination: dest.to_string(),
            connector: dest.connector.clone(),
            refused: None,
            hosts: Vec::new(),
        };
        let policy = self.destination_policy(dest, tls);
        let dane = match self.dane_plan(dest, &policy, tls).await {
            Ok(plan) => plan,
            Err(reason) => return refuse(check, reason),
        };
        let (base, mta_sts) = match self.mta_sts_policy(dest, policy, tls).await {
            Ok(chosen) => chosen,
            Err(reason) => return refuse(check, reason),
        };
        let targets = match self.resolve(&dest.hop).await {
            Ok(t) if !t.is_empty() => t,
            Ok(_) => return refuse(check, format!("{dest}: no address found")),
            Err(e) => return refuse(check, e.to_string()),
        };
        let dane_covers = |host: &str| dane.as_ref().is_some_and(|d| d.covers(host));
        let targets = match self.mta_sts_targets(mta_sts.as_deref(), targets, dane_covers) {
            Ok(t) => t,
            Err(reason) => return refuse(check, reason),
        };
        for target in &targets {
            let policy = match host_policy(dane.as_ref(), &target.name, &base) {
                Ok(p) => p,
                Err(reason) => {
                    check.hosts.push(HostCheck {
                        host: target.name.clone(),
                        address: Some(target.addr),
                        policy: "dane".into(),
                        detail: "DNSSEC lookup failed".into(),
                        mode: "enforce".into(),
                        tls: None,
                        passed: false,
                        outcome: format!("defer: {reason}"),
                    });
                    continue;
                }
            };
            let (name, detail) = policy_name(&policy, mta_sts.as_deref());
            let mut host = HostCheck {
                host: target.name.clone(),
                address: Some(target.addr),
                policy: name.into(),
                detail,
                mode: match policy.mode() {
                    PolicyMode::Enforce => "enforce".into(),
                    PolicyMode::Audit => "audit".into(),
                },
                tls: None,
                passed: false,
                outcome: String::new(),
            };
            match self.open(&policy, target, None).await {
                Ok(conn) => {
                    host.tls = conn.tls().cloned();
                    match conn.permit() {
                        Some(permit) => match permit.overlooked() {
                            Some(failure) => {
                                host.outcome = format!("deliver (audit): {failure}");
                            }
                            None => {
                                host.passed = true;
                                host.outcome = format!("deliver: {}", permit.detail());
                            }
                        },
                        None => host.outcome = "deliver: no TLS policy check".into(),
                    }
                    conn.quit().await;
                }
                Err(e) => {
                    let reason = match &e {
                        TargetError::Tls(f) => f.to_string(),
                        TargetError::Client(c) => c.to_string(),
                    };
                    host.outcome = format!("defer: {reason}");
                }
            }
            check.hosts.push(host);
        }
        check
    }
}

fn refuse(mut check: DestinationCheck, reason: String) -> DestinationCheck {
    check.refused = Some(reason);
    check
}

/// Which kind of policy `policy` is, and its description.
fn policy_name(policy: &TlsPolicy, mta_sts: Option<&Applied>) -> (&'static str, String) {
    let source = policy.source().map(str::to_string);
    if policy.dane_check().is_some() {
        ("dane", source.unwrap_or_default())
    } else if let Some(applied) = mta_sts.filter(|a| std::ptr::eq(&*a.tls, policy)) {
        (
            "mta-sts",
            source.unwrap_or_else(|| format!("mta-sts ({})", applied.domain)),
        )
    } else if let Some(connector) = policy.connector() {
        (
            "connector",
            format!("{connector} ({})", policy.level().as_str()),
        )
    } else {
        ("opportunistic", policy.level().as_str().to_string())
    }
}

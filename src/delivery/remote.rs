//! Remote delivery: resolve a destination, reuse or open a connection, send, report per recipient.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod connect;
mod dane;
mod probe;
mod recipient_policy;
mod tls_report;

use super::{Destination, NextHop};
use crate::config::{Config, HostPort, OutboundConnector, TlsMinVersion};
use crate::dns::{DnsError, Resolver};
use crate::mail::dsn::TransactionDsn;
use crate::mail::Reply;
use crate::queue::TlsDemand;
use crate::smtp::client::{ClientError, ClientSettings, Connection};
use crate::tls::mta_sts::{Applied, MtaSts, MtaStsMode};
use crate::tls::policy::{
    ConnectorVerifier, PeerCheck, PolicyFailure, PolicyId, PolicyMode, TlsLevel, TlsPolicy,
};
use crate::tls::{TlsError, TlsFacts};

pub use probe::{DestinationCheck, HostCheck};

/// What became of one recipient in one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered(String),
    /// Try again later; the reason is kept in the queue.
    Deferred(String),
    /// Permanent failure.
    Failed(String),
}

/// The facts of one attempt, for logs and traces.
#[derive(Debug, Clone, Default)]
pub struct AttemptInfo {
    pub relay: Option<SocketAddr>,
    pub relay_name: Option<String>,
    pub tls: Option<TlsFacts>,
    pub reused: bool,
    pub connector: Option<String>,
    /// What the TLS policy established, e.g. "verified mx.fabrikam.test via ca.crt".
    pub verification: Option<String>,
    /// The peer offered DSN, so the RFC 3461 parameters were passed on.
    pub dsn: bool,
}

/// Idle connections are kept per peer address, host name and TLS policy: a connection opened
/// under one policy is never offered to a delivery under another (and `Connection::send`
/// refuses one whose permit does not satisfy the delivery's policy, whatever the pool does).
type PoolKey = (SocketAddr, String, PolicyId);

/// A kept connection (holding the permit it earned when opened) and since when it is idle.
type Idle = (Connection, Instant);

/// Delivers to other servers; connections are kept for a short while and reused.
pub struct RemoteDelivery {
    settings: ClientSettings,
    default_policy: Arc<TlsPolicy>,
    /// For messages a transport rule says must leave over TLS.
    required_default: Arc<TlsPolicy>,
    policies: HashMap<String, Arc<TlsPolicy>>,
    resolver: Option<Resolver>,
    smtp_port: u16,
    reuse_time: Duration,
    /// Idle connections, keyed by the policy they were authorized under.
    idle: Mutex<HashMap<PoolKey, Vec<Idle>>>,
    telemetry: Arc<crate::telemetry::Telemetry>,
    /// MTA-STS (RFC 8461) for deliveries by MX: the policy source and cache (None: never
    /// looked up), the `[delivery]` mode and each connector's own mode.
    mta_sts: Option<Arc<MtaSts>>,
    mta_sts_default: MtaStsMode,
    mta_sts_modes: HashMap<String, MtaStsMode>,
    /// DANE (RFC 7672) for deliveries by MX: its validating resolver and modes.
    dane: dane::Dane,
    /// Where sessions are counted for TLS-RPT (None: not counted).
    tls_report: Option<Arc<dyn crate::report::tlsrpt::SessionJournal>>,
}

/// The file under `data_dir` that keeps MTA-STS policies across restarts.
pub const MTA_STS_CACHE_FILE: &str = "mta-sts-cache.json";

/// A destination's TLS policy and, when it came from MTA-STS, the policy whose MX patterns
/// choose the hosts.
pub(super) type Chosen = (Arc<TlsPolicy>, Option<Arc<Applied>>);

struct Target {
    name: String,
    addr: SocketAddr,
}

/// Why a target could not be used.
enum TargetError {
    /// The TLS policy was not met; nothing but EHLO/STARTTLS was sent.
    Tls(PolicyFailure),
    Client(ClientError),
}

/// The DANE settings: `[delivery] dane`, each connector's `dane`, and a validating resolver
/// (`[dns] nameservers`, `[dns] trust_anchor`) unless DANE is off everywhere. Routing lookups
/// keep the plain resolver: DANE alone depends on DNSSEC.
fn dane_settings(config: &Config) -> dane::Dane {
    let modes: HashMap<String, MtaStsMode> = config
        .outbound_connectors
        .iter()
        .filter_map(|c| c.dane.map(|m| (c.name.clone(), m)))
        .collect();
    let used =
        config.delivery.dane != MtaStsMode::Off || modes.values().any(|m| *m != MtaStsMode::Off);
    let anchor = config.dns_trust_anchor.as_ref();
    let resolver = if used {
        Resolver::validating(&config.nameservers, anchor.map(|a| a.path.as_path()))
            .map_err(
                |e| tracing::warn!(error = %e, "no validating DNS resolver: DANE is not applied"),
            )
            .ok()
    } else {
        None
    };
    let zone = anchor.map_or_else(|| ".".to_string(), |a| a.zone.clone());
    dane::Dane::new(resolver, zone, config.delivery.dane, modes)
}

/// Builds the TLS policy of an outbound connector from what its validation loaded (trust
/// anchors, pins, client certificate): no file is read again.
pub fn connector_policy(c: &OutboundConnector) -> Result<TlsPolicy, TlsError> {
    let check = PeerCheck {
        level: c.tls,
        names: c.tls_names.clone(),
        anchors: c.anchors.clone(),
        fingerprints: c.tls_fingerprints.clone(),
    };
    let verifier = Arc::new(ConnectorVerifier::new(
        check.clone(),
        c.mode == PolicyMode::Enforce,
    ));
    Ok(TlsPolicy::new(
        Some(c.name.clone()),
        check,
        c.mode,
        crate::tls::connector_client_config(
            verifier,
            c.min_version,
            c.client_certificate.as_deref(),
        )?,
    ))
}

impl RemoteDelivery {
    /// `settings.tls` is the opportunistic configuration used where no connector applies.
    pub fn new(
        settings: ClientSettings,
        resolver: Option<Resolver>,
        smtp_port: u16,
        reuse_time: Duration,
    ) -> Self {
        let verifier = Arc::new(ConnectorVerifier::new(
            PeerCheck::level(TlsLevel::Required),
            true,
        ));
        let required_config =
            crate::tls::connector_client_config(verifier, TlsMinVersion::Tls12, None)
                .unwrap_or_else(|_| settings.tls.clone());
        RemoteDelivery {
            default_policy: Arc::new(TlsPolicy::opportunistic(settings.tls.clone())),
            required_default: Arc::new(TlsPolicy::new(
                None,
                PeerCheck::level(TlsLevel::Required),
                PolicyMode::Enforce,
                required_config,
            )),
            settings,
            policies: HashMap::new(),
            resolver,
            smtp_port,
            reuse_time,
            idle: Mutex::new(HashMap::new()),
            telemetry: Arc::default(),
            mta_sts: None,
            mta_sts_default: MtaStsMode::Off,
            mta_sts_modes: HashMap::new(),
            dane: dane::Dane::default(),
            tls_report: None,
        }
    }

    /// Where TLS policy failures are counted.
    pub fn with_telemetry(mut self, telemetry: Arc<crate::telemetry::Telemetry>) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// Adds the TLS policies of every outbound connector in the configuration, and the MTA-STS
    /// settings (`[delivery] mta_sts`, `mta_sts_ca_file`, each connector's `mta_sts`) with the
    /// policy cache kept in `data_dir`.
    pub fn with_connectors(mut self, config: &Config) -> Result<Self, TlsError> {
        for c in &config.outbound_connectors {
            self.policies
                .insert(c.name.clone(), Arc::new(connector_policy(c)?));
            if let Some(mode) = c.mta_sts {
                self.mta_sts_modes.insert(c.name.clone(), mode);
            }
        }
        self.mta_sts_default = config.delivery.mta_sts;
        self.dane = dane_settings(config);
        let cache = config.data_dir.join(MTA_STS_CACHE_FILE);
        self.mta_sts = Some(Arc::new(MtaSts::new(
            config.mta_sts_anchors.clone(),
            Some(cache),
        )?));
        Ok(self)
    }

    /// Sends one message to the recipients that share `dest`; one outcome per recipient, in order.
    /// When a transport rule demands TLS (`tls.rule_requires_tls`) a destination below
    /// `required` is raised to `required`. A REQUIRETLS message (`tls.requiretls`) fails at once
    /// with 5.7.10 where the destination's policy cannot verify the peer, and goes only over a
    /// connection whose permit is verified to a peer offering REQUIRETLS (`Connection::send_dsn`
    /// checks it on every transaction, pooled connections included). The DSN parameters go on
    /// only to a peer that offers DSN.
    pub async fn deliver(
        &self,
        dest: &Destination,
        tls: TlsDemand,
        mail_from: &str,
        recipients: &[String],
        dsn: &TransactionDsn,
        data: &[u8],
    ) -> (Vec<Outcome>, AttemptInfo) {
        let all = |o: Outcome| recipients.iter().map(|_| o.clone()).collect::<Vec<_>>();
        let policy = self.destination_policy(dest, tls);
        let base_info = AttemptInfo {
            connector: dest.connector.clone(),
            ..AttemptInfo::default()
        };
        // The recipient domain's own policies (DANE per MX host, then MTA-STS) first: they may
        // verify where the default does not, which is what REQUIRETLS asks next.
        let dane = match self.dane_plan(dest, &policy, tls).await {
            Ok(plan) => plan,
            Err(reason) => return (all(Outcome::Deferred(reason)), base_info),
        };
        let (policy, mta_sts) = match self.mta_sts_policy(dest, policy, tls).await {
            Ok(chosen) => chosen,
            Err(reason) => return (all(Outcome::Deferred(reason)), base_info),
        };
        let dane_covers = |host: &str| dane.as_ref().is_some_and(|d| d.covers(host));
        if tls.requiretls
            && !policy.level().verifies()
            && !dane.as_ref().is_some_and(|d| d.verifies())
        {
            let text = format!(
                "550 5.7.10 REQUIRETLS: the TLS policy for {dest} ({}) does not verify the \
                 server; message not sent",
                policy.level().as_str()
            );
            return (all(Outcome::Failed(text)), base_info);
        }
        let targets = match self.resolve(&dest.hop).await {
            Ok(t) if !t.is_empty() => {
                match self.mta_sts_targets(mta_sts.as_deref(), t, dane_covers) {
                    Ok(t) => t,
                    Err(reason) => return (all(Outcome::Deferred(reason)), base_info),
                }
            }
            Ok(_) => {
                return (
                    all(Outcome::Deferred(format!("{dest}: no address found"))),
                    base_info,
                )
            }
            Err(e) if e.is_permanent() => {
                return (all(Outcome::Failed(format!("550 5.1.2 {e}"))), base_info)
            }
            Err(e) => return (all(Outcome::Deferred(format!("451 4.4.3 {e}"))), base_info),
        };
        let mut last_error = String::new();
        // RFC 8689 §4.2.1: a target refused for REQUIRETLS (nothing sent) passes the message on
        // to the next one; the refusal is final when no target is left that failed otherwise.
        let mut refused: Option<(String, AttemptInfo)> = None;
        let mut unreached = false;
        let base_policy = policy;
        for target in &targets {
            let policy = match host_policy(dane.as_ref(), &target.name, &base_policy) {
                Ok(p) => p,
                Err(reason) => {
                    last_error = reason;
                    unreached = true;
                    continue;
                }
            };
            if tls.requiretls && !policy.level().verifies() {
                // RFC 8689 §4.2.1: this host cannot be verified; another may be.
                let text = format!(
                    "550 5.7.10 REQUIRETLS: the TLS policy for {} ({}) does not verify the \
                     server; message not sent",
                    target.name,
                    policy.level().as_str()
                );
                refused = Some((text.clone(), base_info.clone()));
                last_error = text;
                continue;
            }
            let key = (target.addr, target.name.clone(), policy.id());
            let report = self.report_policy(dest, &policy, mta_sts.as_deref(), target);
            let (mut conn, reused) = match self.take_idle(&key) {
                Some(c) => (c, true),
                None => match self.open(&policy, target, report.as_ref()).await {
                    Ok(c) => (c, false),
                    Err(e) => {
                        last_error = self.describe(target, &e);
                        unreached = true;
                        continue;
                    }
                },
            };
            let mut result = conn
                .send_dsn(&policy, mail_from, recipients, dsn, tls.requiretls, data)
                .await;
            if reused && result.as_ref().is_err_and(|e| !e.is_requiretls_refusal()) {
                // The cached connection had died; nothing was accepted, so a fresh one may try.
                match self.open(&policy, target, report.as_ref()).await {
                    Ok(fresh) => {
                        conn = fresh;
                        result = conn
                            .send_dsn(&policy, mail_from, recipients, dsn, tls.requiretls, data)
                            .await;
                    }
                    Err(e) => {
                        last_error = self.describe(target, &e);
                        unreached = true;
                        continue;
                    }
                }
            }
            let info = AttemptInfo {
                relay: Some(conn.peer()),
                relay_name: Some(target.name.clone()),
                tls: conn.tls().cloned(),
                reused,
                verification: conn.permit().map(|p| p.detail().to_string()),
                dsn: conn.offers_dsn(),
                ..base_info.clone()
            };
            match result {
                Ok(replies) => {
                    let outcomes = replies
                        .into_iter()
                        .map(|r| outcome_of(&target.name, r))
                        .collect();
                    self.put_idle(key, conn);
                    return (outcomes, info);
                }
                Err(e) => {
                    last_error = format!("{} [{}]: {e}", target.name, target.addr);
                    if e.is_requiretls_refusal() {
                        // Nothing was sent; the connection is good for other mail.
                        self.put_idle(key, conn);
                        refused = Some((last_error.clone(), info));
                        continue;
                    }
                    if e.is_permanent() {
                        return (all(Outcome::Failed(last_error)), info);
                    }
                    unreached = true;
                }
            }
        }
        match refused {
            Some((reason, info)) if !unreached => (all(Outcome::Failed(reason)), info),
            _ => (all(Outcome::Deferred(last_error)), base_info),
        }
    }

    /// The destination's own policy: its connector's, or the opportunistic default; raised to
    /// `required` when a transport rule demands TLS.
    fn destination_policy(&self, dest: &Destination, tls: TlsDemand) -> Arc<TlsPolicy> {
        let policy = dest
            .connector
            .as_ref()
            .and_then(|name| self.policies.get(name))
            .unwrap_or(&self.default_policy)
            .clone();
        if tls.rule_requires_tls && policy.level() < TlsLevel::Required {
            self.required_default.clone()
        } else {
            policy
        }
    }

    async fn resolve_host(&self, hp: &HostPort) -> Result<Vec<Target>, DnsError> {
        if let Ok(ip) = hp.host.parse::<IpAddr>() {
            return Ok(vec![Target {
                name: hp.host.clone(),
                addr: SocketAddr::new(ip, hp.port),
            }]);
        }
        let ips = self.resolver()?.host_addresses(&hp.host).await?;
        Ok(ips
            .into_iter()
            .map(|ip| Target {
                name: hp.host.clone(),
                addr: SocketAddr::new(ip, hp.port),
            })
            .collect())
    }

    async fn resolve(&self, hop: &NextHop) -> Result<Vec<Target>, DnsError> {
        match hop {
            NextHop::Static(hp) => self.resolve_host(hp).await,
            NextHop::SmartHosts(hosts) => {
                let mut targets = Vec::new();
                let mut last_err = None;
                for hp in hosts {
                    match self.resolve_host(hp).await {
                        Ok(t) => targets.extend(t),
                        Err(e) => last_err = Some(e),
                    }
                }
                match (targets.is_empty(), last_err) {
                    (true, Some(e)) => Err(e),
                    _ => Ok(targets),
                }
            }
            NextHop::Mx(domain) => {
                let resolver = self.resolver()?;
                let mut targets = Vec::new();
                let mut last_err = None;
                for mx in resolver.mx_hosts(domain).await? {
                    match resolver.host_addresses(&mx.host).await {
                        Ok(ips) => targets.extend(ips.into_iter().map(|ip| Target {
                            name: mx.host.clone(),
                            addr: SocketAddr::new(ip, self.smtp_port),
                        })),
                        Err(e) => last_err = Some(e),
                    }
                }
                match (targets.is_empty(), last_err) {
                    (true, Some(e)) => Err(e),
                    _ => Ok(targets),
                }
            }
        }
    }

    fn resolver(&self) -> Result<&Resolver, DnsError> {
        self.resolver
            .as_ref()
            .ok_or_else(|| DnsError::Temporary("no DNS resolver configured".into()))
    }

    /// A kept connection for this peer, host and policy. The connection holds the permit it
    /// earned when opened and its TLS does not change, so the check is not run again; the
    /// permit is still compared with the policy on every transaction (`Connection::send`).
    fn take_idle(&self, key: &PoolKey) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.get_mut(key)?;
        while let Some((conn, since)) = list.pop() {
            if since.elapsed() < self.reuse_time {
                return Some(conn);
            }
            drop(conn);
        }
        None
    }

    fn put_idle(&self, key: PoolKey, conn: Connection) {
        if conn.reusable() && !self.reuse_time.is_zero() {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            idle.entry(key).or_default().push((conn, Instant::now()));
        } else {
            tokio::spawn(conn.quit());
        }
    }

    /// Says QUIT on connections idle longer than the reuse time (all of them when `all`).
    pub async fn close_idle(&self, all: bool) {
        let expired: Vec<Connection> = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            let mut out = Vec::new();
            for list in idle.values_mut() {
                let (old, keep): (Vec<_>, Vec<_>) = list
                    .drain(..)
                    .partition(|(_, since)| all || since.elapsed() >= self.reuse_time);
                *list = keep;
                out.extend(old.into_iter().map(|(c, _)| c));
            }
            idle.retain(|_, l| !l.is_empty());
            out
        };
        for conn in expired {
            conn.quit().await;
        }
    }
}

/// The policy for one target host: DANE's when the plan covers it (Err: the host is not
/// tried, with the reason), otherwise the destination's.
fn host_policy(
    dane: Option<&dane::DanePlan>,
    host: &str,
    base: &Arc<TlsPolicy>,
) -> Result<Arc<TlsPolicy>, String> {
    match dane.and_then(|d| d.for_host(host)) {
        Some(dane::HostDane::Policy(p)) => Ok(p),
        Some(dane::HostDane::Defer(reason)) => Err(reason),
        None => Ok(base.clone()),
    }
}

fn outcome_of(server: &str, result: Result<Reply, Reply>) -> Outcome {
    match result {
        Ok(reply) => Outcome::Delivered(format!("{server} said: {reply}")),
        Err(reply) if reply.is_permanent() => Outcome::Failed(format!("{server} said: {reply}")),
        Err(reply) => Outcome::Deferred(format!("{server} said: {reply}")),
    }
}

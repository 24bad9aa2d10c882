//! Remote delivery: resolve a destination, reuse or open a connection, send, report per recipient.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Destination;
use crate::dns::{DnsError, Resolver};
use crate::smtp::client::{ClientError, ClientSettings, Connection, TlsMode};
use crate::smtp::proto::Reply;
use crate::tls::TlsFacts;

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
}

/// Delivers to other servers; connections are kept for a short while and reused per address.
pub struct RemoteDelivery {
    settings: ClientSettings,
    resolver: Option<Resolver>,
    smtp_port: u16,
    reuse_time: Duration,
    idle: Mutex<HashMap<SocketAddr, Vec<(Connection, Instant)>>>,
}

struct Target {
    name: String,
    addr: SocketAddr,
}

impl RemoteDelivery {
    pub fn new(
        settings: ClientSettings,
        resolver: Option<Resolver>,
        smtp_port: u16,
        reuse_time: Duration,
    ) -> Self {
        RemoteDelivery {
            settings,
            resolver,
            smtp_port,
            reuse_time,
            idle: Mutex::new(HashMap::new()),
        }
    }

    /// Sends one message to the recipients that share `dest`; one outcome per recipient, in order.
    pub async fn deliver(
        &self,
        dest: &Destination,
        mail_from: &str,
        recipients: &[String],
        data: &[u8],
    ) -> (Vec<Outcome>, AttemptInfo) {
        let all = |o: Outcome| recipients.iter().map(|_| o.clone()).collect::<Vec<_>>();
        let targets = match self.resolve(dest).await {
            Ok(t) if !t.is_empty() => t,
            Ok(_) => {
                return (
                    all(Outcome::Deferred(format!("{dest}: no address found"))),
                    AttemptInfo::default(),
                )
            }
            Err(e) if e.is_permanent() => {
                return (
                    all(Outcome::Failed(format!("550 5.1.2 {e}"))),
                    AttemptInfo::default(),
                );
            }
            Err(e) => {
                return (
                    all(Outcome::Deferred(format!("451 4.4.3 {e}"))),
                    AttemptInfo::default(),
                )
            }
        };
        let mut last_error = String::new();
        for target in &targets {
            let (mut conn, reused) = match self.take_idle(target.addr) {
                Some(c) => (c, true),
                None => match self.open(target).await {
                    Ok(c) => (c, false),
                    Err(e) => {
                        tracing::warn!(relay = %target.addr, name = %target.name, error = %e, "connection failed");
                        last_error = format!("{} [{}]: {e}", target.name, target.addr);
                        continue;
                    }
                },
            };
            let mut result = conn.send(mail_from, recipients, data).await;
            if reused && result.is_err() {
                // The cached connection had died; nothing was accepted, so a fresh one may try.
                match self.open(target).await {
                    Ok(fresh) => {
                        conn = fresh;
                        result = conn.send(mail_from, recipients, data).await;
                    }
                    Err(e) => {
                        last_error = format!("{} [{}]: {e}", target.name, target.addr);
                        continue;
                    }
                }
            }
            let info = AttemptInfo {
                relay: Some(conn.peer()),
                relay_name: Some(target.name.clone()),
                tls: conn.tls().cloned(),
                reused,
            };
            match result {
                Ok(replies) => {
                    let outcomes = replies
                        .into_iter()
                        .map(|r| outcome_of(&target.name, r))
                        .collect();
                    self.put_idle(conn);
                    return (outcomes, info);
                }
                Err(e) => {
                    last_error = format!("{} [{}]: {e}", target.name, target.addr);
                    if e.is_permanent() {
                        return (all(Outcome::Failed(last_error)), info);
                    }
                }
            }
        }
        (all(Outcome::Deferred(last_error)), AttemptInfo::default())
    }

    /// Opens a connection with opportunistic TLS; if the handshake fails, once more in plaintext
    /// (Postfix `may`), and says so in the log.
    async fn open(&self, target: &Target) -> Result<Connection, ClientError> {
        match Connection::open(
            target.addr,
            &target.name,
            &self.settings,
            TlsMode::Opportunistic,
        )
        .await
        {
            Err(ClientError::Tls(reason)) => {
                tracing::warn!(relay = %target.addr, name = %target.name, %reason,
                    "STARTTLS failed; retrying this delivery without TLS (opportunistic)");
                Connection::open(
                    target.addr,
                    &target.name,
                    &self.settings,
                    TlsMode::Plaintext,
                )
                .await
            }
            other => other,
        }
    }

    async fn resolve(&self, dest: &Destination) -> Result<Vec<Target>, DnsError> {
        match dest {
            Destination::Static(hp) => {
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
            Destination::Mx(domain) => {
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

    fn take_idle(&self, addr: SocketAddr) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.get_mut(&addr)?;
        while let Some((conn, since)) = list.pop() {
            if since.elapsed() < self.reuse_time {
                return Some(conn);
            }
            drop(conn);
        }
        None
    }

    fn put_idle(&self, conn: Connection) {
        if conn.reusable() && !self.reuse_time.is_zero() {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            idle.entry(conn.peer())
                .or_default()
                .push((conn, Instant::now()));
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

fn outcome_of(server: &str, result: Result<Reply, Reply>) -> Outcome {
    match result {
        Ok(reply) => Outcome::Delivered(format!("{server} said: {reply}")),
        Err(reply) if reply.is_permanent() => Outcome::Failed(format!("{server} said: {reply}")),
        Err(reply) => Outcome::Deferred(format!("{server} said: {reply}")),
    }
}

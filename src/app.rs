//! The composition root: builds a running server (listeners, cleanup, queue runner, delivery) from
//! a validated configuration. Used by `serve`, `demo` and the end-to-end tests.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

use crate::cleanup::Cleanup;
use crate::config::{Config, ListenerProtocol};
use crate::delivery::remote::RemoteDelivery;
use crate::dns::Resolver;
use crate::queue::runner::Runner;
use crate::queue::{Spool, SystemClock};
use crate::smtp::client::ClientSettings;
use crate::smtp::server::inbound::{ConnectorPolicy, InboundConnectors};
use crate::smtp::server::limits::ConnectionLimits;
use crate::smtp::server::listener::{serve, ServerContext, ShutdownPhase};
use crate::smtp::server::policy::LocalPolicy;
use crate::smtp::server::session::SessionConfig;
use crate::smtp::server::users::Users;
use crate::store::keyfile::ServiceKey;
use crate::store::MailStore;

/// A running server; `shutdown` stops it cleanly.
pub struct Server {
    addrs: Vec<SocketAddr>,
    cleanup: Arc<Cleanup>,
    shutdown: watch::Sender<bool>,
    /// Tells listeners and sessions how far the shutdown has gone.
    phase: watch::Sender<ShutdownPhase>,
    shutdown_timeout: std::time::Duration,
    limits: Arc<ConnectionLimits>,
    tasks: JoinSet<()>,
    store: Arc<dyn MailStore>,
    spool: Arc<Spool>,
    wake: Arc<Notify>,
}

/// Binds every configured listener (port 0 picks a free port; see `Server::local_addrs`).
pub async fn bind(config: &Config) -> anyhow::Result<Vec<TcpListener>> {
    let mut listeners = Vec::new();
    for l in &config.listeners {
        let listener = TcpListener::bind(l.address).await.with_context(|| {
            format!("{}: cannot listen on {}", config.path.display(), l.address)
        })?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Binds and starts.
pub async fn start(config: Config) -> anyhow::Result<Server> {
    let listeners = bind(&config).await?;
    start_with(config, listeners).await
}

/// Starts a server on listeners bound beforehand (one per `config.listeners`, same order).
pub async fn start_with(config: Config, listeners: Vec<TcpListener>) -> anyhow::Result<Server> {
    let config = Arc::new(config);
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data_dir {}", config.data_dir.display()))?;
    let spool = Arc::new(Spool::open(&config.data_dir, service_key(&config)?)?);
    let report = spool.recover()?;
    tracing::info!(?report, data_dir = %config.data_dir.display(), "queue recovered");
    let store: Arc<dyn MailStore> = crate::store::open_store(&config)?;

    let inbound = Arc::new(InboundConnectors::from_config(&config)?);
    let tls = match &config.tls {
        Some(files) => {
            let key = crate::tls::load_certified_key(&files.certificate, &files.private_key)?;
            let ask = inbound.wants_client_certificates();
            Some(crate::tls::server_config(&key, files.min_version, ask)?)
        }
        None => None,
    };
    let resolver = match Resolver::new(&config.nameservers) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(error = %e, "no DNS resolver: only static routes and local mailboxes can be delivered");
            None
        }
    };
    let client = ClientSettings {
        helo_name: config.hostname.clone(),
        timeout: config.delivery.timeout,
        tls: crate::tls::opportunistic_client_config(),
    };
    let remote = Arc::new(
        RemoteDelivery::new(
            client,
            resolver,
            config.delivery.smtp_port,
            config.delivery.connection_reuse_time,
        )
        .with_connectors(&config)?,
    );
    let wake = Arc::new(Notify::new());
    let mut cleanup = Cleanup::new(
        &config.hostname,
        spool.clone(),
        wake.clone(),
        inbound.clone(),
    )
    .with_rules(config.rules.clone(), config.local_domains.clone());
    if let Some(dir) = &config.smime_certificate_dir {
        cleanup = cleanup.with_smime(Arc::new(crate::cleanup::smime::DirectorySmime::new(
            dir.clone(),
        )));
    }
    if let Some(dir) = &config.rms_tenant_key_dir {
        let keys = crate::crypto::rms::TenantKeys::load_dir(dir)
            .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
        cleanup = cleanup.with_rms(Arc::new(crate::cleanup::rms::TenantRms::new(
            keys,
            config.rms_templates.clone(),
        )));
    }
    let cleanup = Arc::new(cleanup);
    let policy: Arc<dyn crate::smtp::server::policy::Policy> = Arc::new(ConnectorPolicy {
        local: LocalPolicy {
            local_domains: config.local_domains.iter().cloned().collect(),
            mailboxes: config.mailboxes.iter().cloned().collect(),
        },
        inbound,
    });
    let users = Arc::new(Users::new(config.users.clone()));
    let limits = ConnectionLimits::new(
        config.limits.max_connections,
        config.limits.max_connections_per_ip,
    );
    // One context per listener: submission listeners offer AUTH and require it for MAIL.
    let contexts: Vec<Arc<ServerContext>> = config
        .listeners
        .iter()
        .map(|l| {
            Arc::new(ServerContext {
                session: Arc::new(SessionConfig {
                    hostname: config.hostname.clone(),
                    max_message_size: config.limits.max_message_size,
                    max_recipients: config.limits.max_recipients,
                    starttls_available: tls.is_some()
                        && l.protocol != ListenerProtocol::Submissions,
                    bare_newline: config.limits.bare_newline,
                    auth: l.protocol != ListenerProtocol::Smtp,
                }),
                policy: policy.clone(),
                relay_networks: config.relay_networks.clone(),
                tls: tls.clone(),
                cleanup: cleanup.clone(),
                command_timeout: config.limits.command_timeout,
                data_timeout: config.limits.data_timeout,
                implicit_tls: l.protocol == ListenerProtocol::Submissions,
                users: users.clone(),
                limits: limits.clone(),
            })
        })
        .collect();

    let (shutdown, shutdown_rx) = watch::channel(false);
    let (phase, phase_rx) = watch::channel(ShutdownPhase::Running);
    let mut tasks = JoinSet::new();
    let mut addrs = Vec::new();
    for (listener, ctx) in listeners.into_iter().zip(contexts) {
        let addr = listener.local_addr()?;
        tracing::info!(%addr, hostname = %config.hostname, "listening");
        addrs.push(addr);
        tasks.spawn(serve(listener, ctx, phase_rx.clone()));
    }
    let runner = Arc::new(Runner::new(
        spool.clone(),
        config.clone(),
        store.clone(),
        remote,
        Arc::new(SystemClock),
        wake.clone(),
    ));
    tasks.spawn(runner.run(shutdown_rx));
    Ok(Server {
        addrs,
        cleanup,
        shutdown,
        phase,
        shutdown_timeout: config.shutdown_timeout,
        limits,
        tasks,
        store,
        spool,
        wake,
    })
}

/// The service key that seals queue files (`<keystore_dir>/service.key`, made on first use).
pub fn service_key(config: &Config) -> anyhow::Result<Arc<ServiceKey>> {
    let dir = &config.store.keystore_dir;
    let key = ServiceKey::load_or_create(dir)
        .with_context(|| format!("service key in {}", dir.display()))?;
    Ok(Arc::new(key))
}

impl Server {
    /// The addresses the listeners are bound to.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    pub fn store(&self) -> Arc<dyn MailStore> {
        self.store.clone()
    }

    pub fn spool(&self) -> Arc<Spool> {
        self.spool.clone()
    }

    /// Applies new transport rules to messages received from now on.
    pub fn replace_rules(&self, rules: crate::rules::RuleSet) {
        self.cleanup.replace_rules(rules);
    }

    /// Makes the queue runner look at the queue now (after `queue flush`, say).
    pub fn wake_runner(&self) {
        self.wake.notify_one();
    }

    /// Stops accepting at once (new connections are refused); idle sessions are told 421 4.3.2,
    /// sessions in a transaction may finish it and deliveries in flight may end, for up to
    /// `server.shutdown_timeout`. Then the rest is cut: a session's unfinished message is not
    /// queued, an unfinished delivery stays in the queue and is retried after the next start.
    /// Returns when everything has stopped.
    pub async fn shutdown(self) {
        self.shutdown_unless(std::future::pending()).await
    }

    /// Like `shutdown`, but the grace period also ends when `hurry` completes (a second
    /// SIGTERM, say).
    pub async fn shutdown_unless(mut self, hurry: impl std::future::Future<Output = ()>) {
        let _ = self.phase.send(ShutdownPhase::Draining);
        let _ = self.shutdown.send(true);
        tracing::info!(
            sessions = self.limits.open(),
            grace = ?self.shutdown_timeout,
            "shutting down: listeners closed, transactions in flight may finish"
        );
        let grace = self.shutdown_timeout;
        let why = tokio::select! {
            done = tokio::time::timeout(grace, join_all(&mut self.tasks)) => match done {
                Ok(()) => return,
                Err(_) => "shutdown_timeout reached",
            },
            _ = hurry => "asked to hurry",
        };
        tracing::warn!(
            sessions = self.limits.open(),
            "{why}: closing the remaining sessions; unfinished deliveries stay queued"
        );
        let _ = self.phase.send(ShutdownPhase::Cut);
        if tokio::time::timeout(CUT_WAIT, join_all(&mut self.tasks))
            .await
            .is_err()
        {
            self.tasks.abort_all();
            join_all(&mut self.tasks).await;
        }
    }
}

/// After the grace period, how long sessions get to say 421 and deliveries to end before
/// their tasks are dropped.
const CUT_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

async fn join_all(tasks: &mut JoinSet<()>) {
    while tasks.join_next().await.is_some() {}
}

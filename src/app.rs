//! The composition root: builds a running server (listeners, cleanup, queue runner, delivery,
//! admin endpoint) from a validated configuration, and reloads it. Used by `serve`, `demo` and
//! the end-to-end tests.

mod build;
pub(crate) use build::remote_delivery;
pub use build::sender_checks_summary;
mod licensing;
mod reload;
mod storage;
pub use storage::{open_queue, open_queue_and_journal, open_tls_journal};
mod tls_report;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::crypto::keyfile::ServiceKey;
use crate::delivery::runner::Runner;
use crate::live::Live;
use crate::net::limits::ConnectionLimits;
use crate::net::ShutdownPhase;
use crate::queue::retransmit::Retransmissions;
use crate::queue::{QueueStore, Spool, SystemClock};
use crate::smtp::server::listener::serve;
use crate::store::MailStore;
use crate::telemetry::Telemetry;
use build::Shared;
pub use reload::Reloader;

/// A running server; `shutdown` stops it cleanly.
pub struct Server {
    addrs: Vec<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    licensing_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    /// Tells listeners and sessions how far the shutdown has gone.
    phase: watch::Sender<ShutdownPhase>,
    shutdown_timeout: std::time::Duration,
    limits: Arc<ConnectionLimits>,
    tasks: JoinSet<()>,
    /// The queue as everything else in the server uses it, and the spool under `data_dir` (the
    /// queue itself with the embedded backend; staging and retransmission fingerprints always).
    queue: Arc<dyn QueueStore>,
    spool: Arc<Spool>,
    wake: Arc<crate::queue::Wake>,
    reloader: Arc<Reloader>,
    telemetry: Arc<Telemetry>,
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
    let key = service_key(&config)?;
    let spool = Arc::new(Spool::open(&config.data_dir, key.clone())?);
    let ((queue, shared_transmissions), tls_journal) =
        open_queue_and_journal(&config, key.clone())?;
    let report = queue.recover()?;
    tracing::info!(?report, queue = %queue.location(), "queue recovered");
    let now = chrono::Utc::now().timestamp();
    let retransmissions = Arc::new(match shared_transmissions {
        Some(shared) => {
            tracing::info!(location = %shared.location(), "transmission fingerprints shared by the nodes");
            Retransmissions::shared(&spool, &key, shared, now)
        }
        None => Retransmissions::open(&spool, &key, now)?,
    });
    let (store, folders) = crate::store::open_stores(&config)?;
    let trace_path = config.operations.trace_log.as_deref();
    let telemetry = Arc::new(
        Telemetry::new(&config.hostname, trace_path).with_context(|| {
            format!(
                "{}: trace.path: cannot open {}",
                config.path.display(),
                trace_path
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            )
        })?,
    );
    let admin_listener = match config.operations.admin_listen {
        Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| {
            format!(
                "{}: admin.listen: cannot listen on {addr}",
                config.path.display()
            )
        })?),
        None => None,
    };
    let licensing = licensing::prepare(&config).await?;
    let wake = Arc::new(crate::queue::Wake::default());
    let shared = Shared {
        queue: queue.clone(),
        wake: wake.clone(),
        telemetry: telemetry.clone(),
        limits: ConnectionLimits::new(
            config.limits.max_connections,
            config.limits.max_connections_per_ip,
        ),
        in_flight: crate::queue::InFlight::new(config.limits.max_in_flight_size),
        retransmissions: retransmissions.clone(),
        tls_report: tls_journal,
    };
    let parts = build::build(&config, &shared)?;
    let runner = Arc::new(
        Runner::new(
            queue.clone(),
            config.clone(),
            store.clone(),
            parts.remote,
            Arc::new(SystemClock),
            wake.clone(),
        )
        .with_telemetry(telemetry.clone())
        .with_retransmissions(retransmissions)
        .with_in_flight(shared.in_flight.clone()),
    );
    let slots: Vec<Arc<Live<_>>> = parts
        .contexts
        .into_iter()
        .map(|ctx| Arc::new(Live::new(ctx)))
        .collect();
    let limits = shared.limits.clone();
    let reloader = Arc::new(Reloader {
        config: Live::new(config.clone()),
        slots: slots.clone(),
        cleanup: Live::new(parts.cleanup),
        store: Live::new(store),
        runner: runner.clone(),
        shared,
        licensing: licensing.as_ref().map(|l| l.service.clone()),
        busy: Mutex::new(()),
    });

    let (shutdown, shutdown_rx) = watch::channel(false);
    let (phase, phase_rx) = watch::channel(ShutdownPhase::Running);
    let mut tasks = JoinSet::new();
    let mut addrs = Vec::new();
    let mut slots = slots.into_iter();
    let failures = Arc::new(crate::imap::LoginFailures::default());
    for (listener, l) in listeners.into_iter().zip(&config.listeners) {
        let addr = listener.local_addr()?;
        tracing::info!(%addr, hostname = %config.hostname, "listening");
        addrs.push(addr);
        if l.protocol.is_imap() {
            let ctx = crate::imap::context(
                &config,
                l,
                folders.clone(),
                limits.clone(),
                failures.clone(),
                telemetry.clone(),
            )?;
            tasks.spawn(crate::imap::listener::serve(
                listener,
                ctx,
                phase_rx.clone(),
            ));
        } else if let Some(slot) = slots.next() {
            tasks.spawn(serve(listener, slot, phase_rx.clone()));
        }
    }
    let mut admin_addr = None;
    if let Some(listener) = admin_listener {
        let addr = listener.local_addr()?;
        tracing::info!(%addr, "admin endpoint listening (/metrics, /healthz, /reload)");
        admin_addr = Some(addr);
        if config.operations.admin_token.is_none() {
            tracing::info!("POST /reload is refused: no [admin] token_file");
        }
        let for_admin = reloader.clone();
        let for_token = reloader.clone();
        let state = Arc::new(crate::admin::AdminState {
            hostname: config.hostname.clone(),
            telemetry: telemetry.clone(),
            queue: queue.clone(),
            reload: Arc::new(move || {
                let result = for_admin.reload_from_disk();
                log_reload("admin /reload", &result);
                result
            }),
            // The token of the configuration in force: a reload applies a new token file.
            token: Arc::new(move || for_token.config().operations.admin_token.clone()),
        });
        tasks.spawn(crate::admin::serve(listener, state, shutdown_rx.clone()));
    }
    let mut licensing_addr = None;
    if let Some(service) = licensing {
        let addr = service.local_addr()?;
        tracing::info!(%addr, "licensing service listening (POST /v1/use-license)");
        licensing_addr = Some(addr);
        tasks.spawn(service.serve(phase_rx.clone()));
    }
    tasks.spawn(tls_report::daily(
        reloader.clone(),
        queue.clone(),
        reloader.shared.tls_report.clone(),
        wake.clone(),
        shutdown_rx.clone(),
    ));
    tasks.spawn(crate::memory::housekeeping(
        limits.clone(),
        shutdown_rx.clone(),
    ));
    tasks.spawn(runner.run(shutdown_rx));
    Ok(Server {
        addrs,
        admin_addr,
        licensing_addr,
        shutdown,
        phase,
        shutdown_timeout: config.shutdown_timeout,
        limits,
        tasks,
        queue,
        spool,
        wake,
        reloader,
        telemetry,
    })
}

/// Logs the outcome of a reload the way SIGHUP and the admin endpoint both report it.
pub fn log_reload(trigger: &str, result: &Result<String, String>) {
    match result {
        Ok(summary) => tracing::info!(%summary, "{trigger}: configuration reloaded"),
        Err(reason) => tracing::error!(
            %reason,
            "{trigger}: configuration refused; the running configuration stays in force"
        ),
    }
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

    /// Where `/metrics`, `/healthz` and `/reload` are served, when `[admin] listen` is set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Where the licensing service answers, when `[rms.licensing] listen` is set.
    pub fn licensing_addr(&self) -> Option<SocketAddr> {
        self.licensing_addr
    }

    pub fn store(&self) -> Arc<dyn MailStore> {
        self.reloader.store.get()
    }

    /// The queue, through the contract every backend keeps.
    pub fn queue(&self) -> Arc<dyn QueueStore> {
        self.queue.clone()
    }

    /// The filesystem spool under `data_dir` (behind [`Server::queue`] with the embedded
    /// backend), for looking at its files.
    pub fn spool(&self) -> Arc<Spool> {
        self.spool.clone()
    }

    pub fn telemetry(&self) -> Arc<Telemetry> {
        self.telemetry.clone()
    }

    /// Applies new transport rules to messages received from now on.
    pub fn replace_rules(&self, rules: crate::rules::RuleSet) {
        self.reloader.cleanup.get().replace_rules(rules);
    }

    /// Reads the configuration file again and applies it (see [`Reloader`]).
    pub fn reload(&self) -> Result<String, String> {
        self.reloader.reload_from_disk()
    }

    /// Makes the queue runner look at the queue now (after `queue flush`, say).
    pub fn wake_runner(&self) {
        self.wake.look();
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

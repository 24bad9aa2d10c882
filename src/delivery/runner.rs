//! The queue runner: picks due messages, routes each recipient, delivers, records per-recipient
//! status, and defers with backoff or finishes.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::remote::{Outcome, RemoteDelivery};
use super::{route, route_via, Destination, Route};
use crate::config::Config;
use crate::live::Live;
use crate::queue::{
    after_failure, Clock, Decision, Envelope, InFlight, NoticeAction, QueueStore, RecipientStatus,
    RetryPolicy,
};
use crate::store::MailStore;
use crate::telemetry::metrics::{DeliveryResult, Direction};
use crate::telemetry::trace::TraceTls;
use crate::telemetry::{Telemetry, TraceEvent};

mod at_once;
mod notices;
mod settle;

use settle::Settled;

/// How often the runner looks at the queue without being woken.
const SCAN_INTERVAL: Duration = Duration::from_millis(1000);
/// How often the deferred messages are listed again in full (`queue flush` can change them).
const DEFERRED_RESCAN: Duration = Duration::from_secs(30);

pub struct Runner {
    queue: Arc<dyn QueueStore>,
    /// The configuration, store and remote delivery are replaced by a reload; each delivery
    /// attempt works with the versions it started with.
    config: Live<Config>,
    store: Live<dyn MailStore>,
    remote: Live<RemoteDelivery>,
    telemetry: Arc<Telemetry>,
    retransmissions: Option<Arc<crate::queue::retransmit::Retransmissions>>,
    /// A message is read into memory for delivery only once it fits in this budget.
    budget: Arc<InFlight>,
    clock: Arc<dyn Clock>,
    wake: Arc<crate::queue::Wake>,
    concurrency: Arc<Semaphore>,
    in_flight: Mutex<HashSet<String>>,
    /// Deferred message id → next attempt (unix seconds).
    deferred: Mutex<BTreeMap<String, i64>>,
    /// Outcomes of attempts the queue could not record yet, by message id (see `settle`).
    unsaved: Mutex<BTreeMap<String, Settled>>,
    /// Messages claimed as they were queued, to be started (see `at_once`), and the signal that
    /// there are some.
    ready: Mutex<Vec<at_once::Ready>>,
    ready_now: tokio::sync::Notify,
    /// The runner stops: nothing more is taken at once.
    closing: AtomicBool,
}

impl Runner {
    pub fn new(
        queue: Arc<dyn QueueStore>,
        config: Arc<Config>,
        store: Arc<dyn MailStore>,
        remote: Arc<RemoteDelivery>,
        clock: Arc<dyn Clock>,
        wake: Arc<crate::queue::Wake>,
    ) -> Self {
        Runner {
            concurrency: Arc::new(Semaphore::new(config.delivery.concurrency)),
            queue,
            config: Live::new(config),
            store: Live::new(store),
            remote: Live::new(remote),
            telemetry: Arc::new(Telemetry::default()),
            retransmissions: None,
            budget: InFlight::unlimited(),
            clock,
            wake,
            in_flight: Mutex::new(HashSet::new()),
            deferred: Mutex::new(BTreeMap::new()),
            unsaved: Mutex::new(BTreeMap::new()),
            ready: Mutex::new(Vec::new()),
            ready_now: tokio::sync::Notify::new(),
            closing: AtomicBool::new(false),
        }
    }

    /// Where deliveries are counted and traced.
    pub fn with_telemetry(mut self, telemetry: Arc<Telemetry>) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// Where the fingerprints of messages that leave the queue are kept (see
    /// [`crate::queue::retransmit`]).
    pub fn with_retransmissions(
        mut self,
        r: Arc<crate::queue::retransmit::Retransmissions>,
    ) -> Self {
        self.retransmissions = Some(r);
        self
    }

    /// The budget of message bytes in memory that deliveries share with the sessions.
    pub fn with_in_flight(mut self, in_flight: Arc<InFlight>) -> Self {
        self.budget = in_flight;
        self
    }

    /// A reload: deliveries started from now on use the new configuration, store and connectors.
    pub fn replace(
        &self,
        config: Arc<Config>,
        store: Arc<dyn MailStore>,
        remote: Arc<RemoteDelivery>,
    ) {
        self.config.replace(config);
        self.store.replace(store);
        self.remote.replace(remote);
    }

    fn retry(&self) -> RetryPolicy {
        let config = self.config.get();
        RetryPolicy {
            initial: config.queue.retry_initial,
            max: config.queue.retry_max,
            lifetime: config.queue.lifetime,
        }
    }

    /// Runs until `shutdown` turns true, then waits for deliveries in flight to end.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tasks = JoinSet::new();
        let mut last_rescan: Option<tokio::time::Instant> = None;
        let mut last_scan: Option<tokio::time::Instant> = None;
        self.install_taker();
        loop {
            if last_rescan.is_none_or(|t| t.elapsed() >= DEFERRED_RESCAN) {
                self.rescan_deferred().await;
                last_rescan = Some(tokio::time::Instant::now());
            }
            self.settle_unsaved().await;
            self.start_ready(&mut tasks);
            // Messages the cleanup stage just queued are taken as named; the queue is listed
            // when asked and at least once per scan interval.
            let news = self.wake.take();
            let fresh = match news.look || last_scan.is_none_or(|t| t.elapsed() >= SCAN_INTERVAL) {
                true => {
                    last_scan = Some(tokio::time::Instant::now());
                    None
                }
                false => Some(news.queued),
            };
            for id in self.due_ids(fresh).await {
                if !lock(&self.in_flight).insert(id.clone()) {
                    continue;
                }
                // Messages taken at once hold delivery slots of their own: they are started
                // while this waits for one, else slots held by messages not started yet could
                // be the ones it waits for.
                let permit = loop {
                    tokio::select! {
                        p = self.concurrency.clone().acquire_owned() => break Some(p),
                        _ = self.ready_now.notified() => self.start_ready(&mut tasks),
                        _ = shutdown.changed() => break None,
                    }
                };
                let Some(permit) = permit else { break };
                let Ok(permit) = permit else { break };
                let me = self.clone();
                tasks.spawn(async move {
                    me.process(&id).await;
                    lock(&me.in_flight).remove(&id);
                    drop(permit);
                });
            }
            while tasks.try_join_next().is_some() {}
            if *shutdown.borrow() {
                break;
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(SCAN_INTERVAL) => { self.remote.get().close_idle(false).await; }
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                break;
            }
        }
        self.closing.store(true, Ordering::SeqCst);
        // What was taken at once is delivered too (a message taken after this waits in the
        // queue as claimed, and is requeued at the next start like any a stop interrupted).
        self.start_ready(&mut tasks);
        while tasks.join_next().await.is_some() {}
        self.remote.get().close_idle(true).await;
    }

    async fn rescan_deferred(&self) {
        let queue = self.queue.clone();
        match tokio::task::spawn_blocking(move || queue.deferred()).await {
            Ok(Ok(list)) => *lock(&self.deferred) = list.into_iter().collect(),
            Ok(Err(e)) => tracing::error!(error = %e, "cannot read the deferred queue"),
            Err(e) => tracing::error!(error = %e, "deferred queue scan panicked"),
        }
    }

    /// New messages first (oldest first), then deferred ones whose time has come. New messages
    /// are `fresh` when given (just queued here), else listed from the queue.
    async fn due_ids(&self, fresh: Option<Vec<String>>) -> Vec<String> {
        let queue = self.queue.clone();
        let listed = match fresh {
            Some(fresh) => Ok(Ok(fresh)),
            None => tokio::task::spawn_blocking(move || queue.incoming_ids()).await,
        };
        let mut ids = match listed {
            Ok(Ok(ids)) => ids,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot read the incoming queue");
                Vec::new()
            }
            Err(_) => Vec::new(),
        };
        let now = self.clock.now();
        let mut deferred = lock(&self.deferred);
        let due: Vec<String> = deferred
            .iter()
            .filter(|(_, &t)| t <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &due {
            deferred.remove(id);
        }
        ids.extend(due);
        ids
    }

    /// One delivery attempt for one message.
    async fn process(&self, id: &str) {
        // The message is held in memory until the attempt ends; wait for room for it. When
        // there is room at once, it is claimed in the same blocking step.
        let (queue, owned, budget) = (self.queue.clone(), id.to_string(), self.budget.clone());
        let first = tokio::task::spawn_blocking(move || {
            let size = queue.waiting_size(&owned).unwrap_or(0);
            match budget.try_reserve(size) {
                Some(room) => Ok((room, queue.claim(&owned))),
                None => Err(size),
            }
        })
        .await;
        let claimed = match first {
            Ok(Ok(claimed)) => Ok(claimed),
            Ok(Err(size)) => {
                let room = self.budget.reserve(size).await;
                let (queue, owned) = (self.queue.clone(), id.to_string());
                let claimed = tokio::task::spawn_blocking(move || queue.claim(&owned)).await;
                claimed.map(|claimed| (room, claimed))
            }
            Err(e) => Err(e),
        };
        let (_room, claimed) = match claimed {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::error!(queue_id = id, error = %e, "claim panicked");
                return;
            }
        };
        let (env, message) = match claimed {
            Ok(Some(claimed)) => {
                self.telemetry.metrics.queue_claim("runner");
                claimed
            }
            Ok(None) => return, // delivered, deleted or flushed meanwhile
            Err(e) => {
                tracing::error!(queue_id = id, error = %e, "queue file not delivered");
                return;
            }
        };
        self.deliver_claimed(env, message).await;
    }

    /// The attempt for a claimed message, and its outcome recorded.
    async fn deliver_claimed(&self, mut env: Envelope, message: Vec<u8>) {
        let message = Arc::new(message);
        let failed_before: HashSet<String> = env.failed().map(|r| r.address.clone()).collect();
        // A message with nothing left to deliver is here only for notices not yet queued.
        if !env.is_finished() {
            self.attempt(&mut env, &message).await;
            env.attempts += 1;
        }
        let now = self.clock.now();
        let null_sender = env.is_null_sender();
        let mut finished = if env.is_finished() {
            true
        } else {
            match after_failure(&self.retry(), env.attempts, env.lifetime_start(), now) {
                Decision::RetryAt(at) => {
                    env.next_attempt = at;
                    false
                }
                Decision::Expired => {
                    for r in env.pending_mut() {
                        r.status = RecipientStatus::Failed;
                        let last = r.last_reply.take().unwrap_or_default();
                        r.last_reply = Some(format!(
                            "{last} (message expired after {} attempts)",
                            r.attempts
                        ));
                        r.reached(NoticeAction::Failed, null_sender);
                    }
                    true
                }
            }
        };
        for r in env.failed().filter(|r| !failed_before.contains(&r.address)) {
            let reason = r.last_reply.as_deref().unwrap_or_default();
            tracing::error!(queue_id = %env.id, to = %r.address, %reason, "permanent delivery failure");
        }
        // Notices are queued before the original is updated: a crash in between can send one
        // twice, never lose one. One that cannot be queued stays owed in the envelope and the
        // message stays in the queue until a later pass queues it.
        if !null_sender {
            self.queue_notices(&mut env, &message, now, finished).await;
        }
        if finished && env.notices_due() {
            finished = false;
            env.next_attempt = now.saturating_add(self.retry().initial.as_secs().max(1) as i64);
        }
        self.settle(
            Settled {
                env,
                message,
                finished,
            },
            true,
        )
        .await;
    }

    /// Delivers to every pending recipient, grouped by route, and records each outcome. When a
    /// destination took the message and another one is still to come, the progress is written to
    /// the queue file first: the next destination may take long (timeouts), and a crash meanwhile
    /// must not deliver to the first one again.
    async fn attempt(&self, env: &mut Envelope, message: &Arc<Vec<u8>>) {
        let config = self.config.get();
        let mut groups: BTreeMap<Route, Vec<usize>> = BTreeMap::new();
        for (i, r) in env.recipients.iter().enumerate() {
            if r.status == RecipientStatus::Pending {
                let route = match &env.route_via {
                    Some(connector) => route_via(&config, &r.address, connector),
                    None => route(&config, &r.address),
                };
                groups.entry(route).or_default().push(i);
            }
        }
        let mut last_error = None;
        let null_sender = env.is_null_sender();
        let mut remaining = groups.len();
        for (route, indexes) in groups {
            remaining -= 1;
            // Each outcome with the notice a success owes (if asked for): none when the next hop
            // offers DSN and took the parameters over.
            let outcomes: Vec<(usize, Outcome, Option<NoticeAction>)> = match route {
                Route::Local => {
                    let mut outcomes = Vec::with_capacity(indexes.len());
                    for i in indexes {
                        let outcome = self
                            .deliver_local(&env.id, &env.recipients[i].address, message)
                            .await;
                        outcomes.push((i, outcome, Some(NoticeAction::Delivered)));
                    }
                    outcomes
                }
                Route::Remote(dest) => {
                    let rcpts: Vec<String> = indexes
                        .iter()
                        .map(|&i| env.recipients[i].address.clone())
                        .collect();
                    let (results, passed_on) = self
                        .deliver_remote(env, &dest, &rcpts, &indexes, message)
                        .await;
                    let success = (!passed_on).then_some(NoticeAction::Relayed);
                    indexes
                        .into_iter()
                        .zip(results)
                        .map(|(i, o)| (i, o, success))
                        .collect()
                }
            };
            let delivered = outcomes
                .iter()
                .any(|(_, o, _)| matches!(o, Outcome::Delivered(_)));
            for (i, outcome, success) in outcomes {
                let r = &mut env.recipients[i];
                r.attempts += 1;
                match outcome {
                    Outcome::Delivered(detail) => {
                        r.status = RecipientStatus::Delivered;
                        r.last_reply = Some(detail);
                        if let Some(action) = success {
                            r.reached(action, null_sender);
                        }
                    }
                    Outcome::Deferred(reason) => {
                        last_error = Some(reason.clone());
                        r.last_reply = Some(reason);
                    }
                    Outcome::Failed(reason) => {
                        r.status = RecipientStatus::Failed;
                        r.last_reply = Some(reason);
                        r.reached(NoticeAction::Failed, null_sender);
                    }
                }
            }
            if delivered && remaining > 0 {
                self.checkpoint(env, message).await;
            }
        }
        env.last_error = last_error;
    }

    /// Writes the envelope of a message still being delivered to its queue file.
    async fn checkpoint(&self, env: &Envelope, message: &Arc<Vec<u8>>) {
        let (queue, owned, message) = (self.queue.clone(), env.clone(), message.clone());
        match tokio::task::spawn_blocking(move || queue.checkpoint(&owned, &message)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(queue_id = %env.id, error = %e, "cannot record delivery progress")
            }
            Err(e) => tracing::error!(queue_id = %env.id, error = %e, "progress record panicked"),
        }
    }

    async fn deliver_local(&self, id: &str, rcpt: &str, message: &Arc<Vec<u8>>) -> Outcome {
        let outcome = self.store_locally(id, rcpt, message).await;
        let (result, detail) = match &outcome {
            Outcome::Delivered(d) => (DeliveryResult::Delivered, d),
            Outcome::Deferred(d) => (DeliveryResult::Deferred, d),
            Outcome::Failed(d) => (DeliveryResult::Bounced, d),
        };
        self.telemetry.metrics.delivery(Some("local"), result);
        self.telemetry.trace(
            id,
            TraceEvent::Delivery {
                to: rcpt.to_string(),
                route: "local".into(),
                relay: None,
                relay_name: None,
                tls: None,
                connector: None,
                verification: None,
                requiretls: false,
                result: result_name(result).into(),
                detail: detail.clone(),
            },
        );
        outcome
    }

    async fn store_locally(&self, id: &str, rcpt: &str, message: &Arc<Vec<u8>>) -> Outcome {
        if !self.config.get().is_local_mailbox(rcpt) {
            tracing::warn!(queue_id = id, to = rcpt, "no such local mailbox");
            return Outcome::Failed("550 5.1.1 mailbox unknown".into());
        }
        let store = self.store.get();
        let (rcpt_owned, msg) = (rcpt.to_string(), message.clone());
        let delivery = format!("{id}/{}", rcpt.to_ascii_lowercase());
        let result =
            tokio::task::spawn_blocking(move || store.deliver_once(&rcpt_owned, &msg, &delivery))
                .await;
        self.telemetry
            .metrics
            .store_op("deliver", matches!(result, Ok(Ok(_))));
        match result {
            Ok(Ok(stored)) => {
                tracing::info!(queue_id = id, to = rcpt, relay = "local", mailbox_id = %stored, status = "sent", "delivered");
                Outcome::Delivered(format!("stored as {stored}"))
            }
            Ok(Err(e)) => {
                tracing::error!(queue_id = id, to = rcpt, error = %e, status = "deferred", "mailbox write failed");
                Outcome::Deferred(format!("451 4.3.0 mailbox write failed: {e}"))
            }
            Err(e) => Outcome::Deferred(format!("451 4.3.0 mailbox write failed: {e}")),
        }
    }

    /// The outcomes, and whether the next hop offered DSN (the parameters were passed on).
    async fn deliver_remote(
        &self,
        env: &Envelope,
        dest: &Destination,
        rcpts: &[String],
        indexes: &[usize],
        message: &Arc<Vec<u8>>,
    ) -> (Vec<Outcome>, bool) {
        let id = env.id.as_str();
        let dsn = env.transaction_dsn(indexes);
        let (outcomes, info) = self
            .remote
            .get()
            .deliver(dest, env.tls_demand(), &env.mail_from, rcpts, &dsn, message)
            .await;
        let relay = info
            .relay
            .map(|a| a.to_string())
            .unwrap_or_else(|| "none".into());
        let tls = info
            .tls
            .as_ref()
            .map(|t| t.to_string())
            .unwrap_or_else(|| "none".into());
        if let (Some(t), false) = (&info.tls, info.reused) {
            self.telemetry
                .metrics
                .tls_handshake(Direction::Outbound, &t.version);
        }
        for (rcpt, outcome) in rcpts.iter().zip(&outcomes) {
            let (status, detail, result) = match outcome {
                Outcome::Delivered(d) => ("sent", d, DeliveryResult::Delivered),
                Outcome::Deferred(d) => ("deferred", d, DeliveryResult::Deferred),
                Outcome::Failed(d) => ("bounced", d, DeliveryResult::Bounced),
            };
            self.telemetry
                .metrics
                .delivery(info.connector.as_deref(), result);
            self.telemetry.trace(
                id,
                TraceEvent::Delivery {
                    to: rcpt.clone(),
                    route: "remote".into(),
                    relay: info.relay.map(|a| a.to_string()),
                    relay_name: info.relay_name.clone(),
                    tls: info.tls.as_ref().map(TraceTls::from),
                    connector: info.connector.clone(),
                    verification: info.verification.clone(),
                    requiretls: env.requiretls,
                    result: result_name(result).into(),
                    detail: detail.clone(),
                },
            );
            tracing::info!(queue_id = id, to = %rcpt, %relay, relay_name = info.relay_name.as_deref().unwrap_or(""),
                connector = info.connector.as_deref().unwrap_or(""), %tls,
                verification = info.verification.as_deref().unwrap_or(""), reused = info.reused,
                requiretls = env.requiretls, status, detail = %detail, "delivery attempt");
        }
        (outcomes, info.dsn)
    }
}

fn result_name(result: DeliveryResult) -> &'static str {
    match result {
        DeliveryResult::Delivered => "delivered",
        DeliveryResult::Deferred => "deferred",
        DeliveryResult::Bounced => "bounced",
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

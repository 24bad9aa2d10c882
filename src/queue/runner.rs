//! The queue runner: picks due messages, routes each recipient, delivers, records per-recipient
//! status, and defers with backoff or finishes.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;

use super::{
    after_failure, dsn, new_queue_id, Clock, Decision, Envelope, RecipientStatus, RetryPolicy,
    Spool,
};
use crate::config::Config;
use crate::delivery::remote::{Outcome, RemoteDelivery};
use crate::delivery::{route, route_via, Destination, Route};
use crate::store::MailStore;

/// How often the runner looks at the queue directories without being woken.
const SCAN_INTERVAL: Duration = Duration::from_millis(1000);
/// How often the deferred directory is read again in full (it can change under `queue flush`).
const DEFERRED_RESCAN: Duration = Duration::from_secs(30);

pub struct Runner {
    spool: Arc<Spool>,
    config: Arc<Config>,
    store: Arc<dyn MailStore>,
    remote: Arc<RemoteDelivery>,
    retry: RetryPolicy,
    clock: Arc<dyn Clock>,
    wake: Arc<Notify>,
    concurrency: Arc<Semaphore>,
    in_flight: Mutex<HashSet<String>>,
    /// Deferred message id → next attempt (unix seconds).
    deferred: Mutex<BTreeMap<String, i64>>,
}

impl Runner {
    pub fn new(
        spool: Arc<Spool>,
        config: Arc<Config>,
        store: Arc<dyn MailStore>,
        remote: Arc<RemoteDelivery>,
        clock: Arc<dyn Clock>,
        wake: Arc<Notify>,
    ) -> Self {
        let retry = RetryPolicy {
            initial: config.queue.retry_initial,
            max: config.queue.retry_max,
            lifetime: config.queue.lifetime,
        };
        Runner {
            concurrency: Arc::new(Semaphore::new(config.delivery.concurrency)),
            spool,
            config,
            store,
            remote,
            retry,
            clock,
            wake,
            in_flight: Mutex::new(HashSet::new()),
            deferred: Mutex::new(BTreeMap::new()),
        }
    }

    /// Runs until `shutdown` turns true, then waits for deliveries in flight to end.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tasks = JoinSet::new();
        let mut last_rescan: Option<tokio::time::Instant> = None;
        loop {
            if last_rescan.is_none_or(|t| t.elapsed() >= DEFERRED_RESCAN) {
                self.rescan_deferred().await;
                last_rescan = Some(tokio::time::Instant::now());
            }
            for id in self.due_ids().await {
                if !lock(&self.in_flight).insert(id.clone()) {
                    continue;
                }
                let permit = tokio::select! {
                    p = self.concurrency.clone().acquire_owned() => p,
                    _ = shutdown.changed() => break,
                };
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
                _ = tokio::time::sleep(SCAN_INTERVAL) => { self.remote.close_idle(false).await; }
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                break;
            }
        }
        while tasks.join_next().await.is_some() {}
        self.remote.close_idle(true).await;
    }

    async fn rescan_deferred(&self) {
        let spool = self.spool.clone();
        match tokio::task::spawn_blocking(move || spool.deferred()).await {
            Ok(Ok(list)) => *lock(&self.deferred) = list.into_iter().collect(),
            Ok(Err(e)) => tracing::error!(error = %e, "cannot read the deferred queue"),
            Err(e) => tracing::error!(error = %e, "deferred queue scan panicked"),
        }
    }

    /// New messages first (oldest first), then deferred ones whose time has come.
    async fn due_ids(&self) -> Vec<String> {
        let spool = self.spool.clone();
        let mut ids = match tokio::task::spawn_blocking(move || spool.incoming_ids()).await {
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
        let spool = self.spool.clone();
        let owned = id.to_string();
        let (mut env, message) =
            match tokio::task::spawn_blocking(move || spool.claim(&owned)).await {
                Ok(Ok(Some(claimed))) => claimed,
                Ok(Ok(None)) => return, // delivered, deleted or flushed meanwhile
                Ok(Err(e)) => {
                    tracing::error!(queue_id = id, error = %e, "queue file not delivered");
                    return;
                }
                Err(e) => {
                    tracing::error!(queue_id = id, error = %e, "claim panicked");
                    return;
                }
            };
        let message = Arc::new(message);
        let failed_before: HashSet<String> = env.failed().map(|r| r.address.clone()).collect();
        self.attempt(&mut env, &message).await;
        env.attempts += 1;
        let now = self.clock.now();
        let finished = if env.is_finished() {
            true
        } else {
            match after_failure(&self.retry, env.attempts, env.received_at, now) {
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
                    }
                    true
                }
            }
        };
        let newly_failed: Vec<dsn::Reported> = env
            .failed()
            .filter(|r| !failed_before.contains(&r.address))
            .map(|r| dsn::Reported {
                address: r.address.clone(),
                diagnostic: r.last_reply.clone().unwrap_or_default(),
            })
            .collect();
        for r in &newly_failed {
            tracing::error!(queue_id = %env.id, to = %r.address, reason = %r.diagnostic, "permanent delivery failure");
        }
        // Notices are queued before the original is updated: a crash in between can send one
        // twice, never lose one. The null sender gets none (no bounce loops).
        if !env.is_null_sender() {
            if !newly_failed.is_empty() {
                self.send_notice(dsn::Kind::Failure, &env, &message, &newly_failed)
                    .await;
            }
            let waited = now.saturating_sub(env.received_at);
            let due = self
                .config
                .queue
                .delay_warning
                .is_some_and(|d| waited >= d.as_secs() as i64);
            if !finished && !env.delay_notified && due {
                let pending: Vec<dsn::Reported> = env
                    .pending()
                    .map(|r| dsn::Reported {
                        address: r.address.clone(),
                        diagnostic: r.last_reply.clone().unwrap_or_default(),
                    })
                    .collect();
                self.send_notice(dsn::Kind::Delay, &env, &message, &pending)
                    .await;
                env.delay_notified = true;
            }
        }
        let spool = self.spool.clone();
        let next = env.next_attempt;
        let owned_id = env.id.clone();
        let result = tokio::task::spawn_blocking(move || {
            if finished {
                spool.complete(&env.id)
            } else {
                spool.defer(&env, &message)
            }
        })
        .await;
        match result {
            Ok(Ok(())) if finished => tracing::info!(queue_id = %owned_id, "removed"),
            Ok(Ok(())) => {
                lock(&self.deferred).insert(owned_id, next);
            }
            Ok(Err(e)) => {
                tracing::error!(queue_id = %owned_id, error = %e, "cannot update queue file")
            }
            Err(e) => tracing::error!(queue_id = %owned_id, error = %e, "queue update panicked"),
        }
    }

    /// Queues a DSN to the message's sender, from the null sender.
    async fn send_notice(
        &self,
        kind: dsn::Kind,
        env: &Envelope,
        message: &[u8],
        recipients: &[dsn::Reported],
    ) {
        let id = new_queue_id();
        let now = chrono::Utc::now();
        let notice = dsn::build(
            kind,
            &self.config.hostname,
            env,
            recipients,
            message,
            &id,
            now,
        );
        let envelope = Envelope::new(
            id.clone(),
            "",
            vec![env.mail_from.clone()],
            self.config.hostname.clone(),
            "localhost",
            now.timestamp(),
        );
        let spool = self.spool.clone();
        match tokio::task::spawn_blocking(move || spool.enqueue(&envelope, &notice)).await {
            Ok(Ok(())) => {
                tracing::info!(queue_id = %env.id, notice_id = %id, to = %env.mail_from, ?kind, "delivery status notification queued");
                self.wake.notify_one();
            }
            Ok(Err(e)) => {
                tracing::error!(queue_id = %env.id, error = %e, "cannot queue the delivery status notification")
            }
            Err(e) => tracing::error!(queue_id = %env.id, error = %e, "notification task panicked"),
        }
    }

    /// Delivers to every pending recipient, grouped by route, and records each outcome. When a
    /// destination took the message and another one is still to come, the progress is written to
    /// the queue file first: the next destination may take long (timeouts), and a crash meanwhile
    /// must not deliver to the first one again.
    async fn attempt(&self, env: &mut Envelope, message: &Arc<Vec<u8>>) {
        let mut groups: BTreeMap<Route, Vec<usize>> = BTreeMap::new();
        for (i, r) in env.recipients.iter().enumerate() {
            if r.status == RecipientStatus::Pending {
                let route = match &env.route_via {
                    Some(connector) => route_via(&self.config, &r.address, connector),
                    None => route(&self.config, &r.address),
                };
                groups.entry(route).or_default().push(i);
            }
        }
        let mut last_error = None;
        let mut remaining = groups.len();
        for (route, indexes) in groups {
            remaining -= 1;
            let outcomes: Vec<(usize, Outcome)> = match route {
                Route::Local => {
                    let mut outcomes = Vec::with_capacity(indexes.len());
                    for i in indexes {
                        let outcome = self
                            .deliver_local(&env.id, &env.recipients[i].address, message)
                            .await;
                        outcomes.push((i, outcome));
                    }
                    outcomes
                }
                Route::Remote(dest) => {
                    let rcpts: Vec<String> = indexes
                        .iter()
                        .map(|&i| env.recipients[i].address.clone())
                        .collect();
                    let results = self.deliver_remote(env, &dest, &rcpts, message).await;
                    indexes.into_iter().zip(results).collect()
                }
            };
            let delivered = outcomes
                .iter()
                .any(|(_, o)| matches!(o, Outcome::Delivered(_)));
            for (i, outcome) in outcomes {
                let r = &mut env.recipients[i];
                r.attempts += 1;
                match outcome {
                    Outcome::Delivered(detail) => {
                        r.status = RecipientStatus::Delivered;
                        r.last_reply = Some(detail);
                    }
                    Outcome::Deferred(reason) => {
                        last_error = Some(reason.clone());
                        r.last_reply = Some(reason);
                    }
                    Outcome::Failed(reason) => {
                        r.status = RecipientStatus::Failed;
                        r.last_reply = Some(reason);
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
        let (spool, owned, message) = (self.spool.clone(), env.clone(), message.clone());
        match tokio::task::spawn_blocking(move || spool.checkpoint(&owned, &message)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(queue_id = %env.id, error = %e, "cannot record delivery progress")
            }
            Err(e) => tracing::error!(queue_id = %env.id, error = %e, "progress record panicked"),
        }
    }

    async fn deliver_local(&self, id: &str, rcpt: &str, message: &Arc<Vec<u8>>) -> Outcome {
        if !self.config.is_local_mailbox(rcpt) {
            tracing::warn!(queue_id = id, to = rcpt, "no such local mailbox");
            return Outcome::Failed("550 5.1.1 mailbox unknown".into());
        }
        let store = self.store.clone();
        let (rcpt_owned, msg) = (rcpt.to_string(), message.clone());
        match tokio::task::spawn_blocking(move || store.deliver(&rcpt_owned, &msg)).await {
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

    async fn deliver_remote(
        &self,
        env: &Envelope,
        dest: &Destination,
        rcpts: &[String],
        message: &Arc<Vec<u8>>,
    ) -> Vec<Outcome> {
        let id = env.id.as_str();
        let (outcomes, info) = self
            .remote
            .deliver(dest, env.require_tls, &env.mail_from, rcpts, message)
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
        for (rcpt, outcome) in rcpts.iter().zip(&outcomes) {
            let (status, detail) = match outcome {
                Outcome::Delivered(d) => ("sent", d),
                Outcome::Deferred(d) => ("deferred", d),
                Outcome::Failed(d) => ("bounced", d),
            };
            tracing::info!(queue_id = id, to = %rcpt, %relay, relay_name = info.relay_name.as_deref().unwrap_or(""),
                connector = info.connector.as_deref().unwrap_or(""), %tls,
                verification = info.verification.as_deref().unwrap_or(""), reused = info.reused,
                status, detail = %detail, "delivery attempt");
        }
        outcomes
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

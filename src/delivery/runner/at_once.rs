//! Messages taken at once. When the queue claims cheaply (a local spool), a message the cleanup
//! stage has just queued is claimed in the cleanup stage's own blocking step, if a delivery slot
//! and room in the in-flight budget are free right then, and handed to the runner in memory.
//! This saves a hand-off to the blocking pool per message (a thread woken, and the task woken
//! again when it is done). A message that cannot be taken at once is named to the runner and
//! claimed by it as before.
//!
//! A message claimed here is in the queue as claimed (on the spool: in `active/`) before the
//! client hears its 250, like one the runner claims a moment later: a stop or crash in between
//! leaves it to `recover`, which requeues it at the next start.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinSet;

use super::{lock, Runner};
use crate::queue::{Envelope, Reservation};

/// A message claimed at once, with its delivery slot and its room in the budget.
pub(super) struct Ready {
    env: Envelope,
    message: Vec<u8>,
    room: Reservation,
    permit: OwnedSemaphorePermit,
}

impl Runner {
    /// Offers the runner every message the cleanup stage queues, when the queue claims cheaply.
    pub(super) fn install_taker(self: &Arc<Self>) {
        if !self.queue.claims_cheaply() {
            return;
        }
        let runner = Arc::downgrade(self);
        self.wake.set_taker(Box::new(move |id: &str, size: u64| {
            runner.upgrade().is_some_and(|r| r.take_at_once(id, size))
        }));
    }

    /// Claims the message `id` (of `size` bytes) just queued, if it can be started at once;
    /// true when it was taken (claimed, or found gone or corrupt: nothing more to do with it).
    /// Runs in the cleanup stage's blocking step.
    fn take_at_once(&self, id: &str, size: u64) -> bool {
        if self.closing.load(Ordering::SeqCst) {
            return false;
        }
        let Ok(permit) = self.concurrency.clone().try_acquire_owned() else {
            return false;
        };
        let Some(room) = self.budget.try_reserve(size) else {
            return false;
        };
        if !lock(&self.in_flight).insert(id.to_string()) {
            return false;
        }
        let claimed = self.queue.claim(id);
        match claimed {
            Ok(Some((env, message))) => {
                self.telemetry.metrics.queue_claim("arrival");
                let ready = Ready {
                    env,
                    message,
                    room,
                    permit,
                };
                lock(&self.ready).push(ready);
                return true;
            }
            Ok(None) => {}
            Err(e) => tracing::error!(queue_id = id, error = %e, "queue file not delivered"),
        }
        lock(&self.in_flight).remove(id);
        true
    }

    /// Starts a delivery for each message taken at once.
    pub(super) fn start_ready(self: &Arc<Self>, tasks: &mut JoinSet<()>) {
        let ready = std::mem::take(&mut *lock(&self.ready));
        for Ready {
            env,
            message,
            room,
            permit,
        } in ready
        {
            let me = self.clone();
            tasks.spawn(async move {
                let id = env.id.clone();
                me.deliver_claimed(env, message).await;
                drop(room);
                lock(&me.in_flight).remove(&id);
                drop(permit);
            });
        }
    }
}

//! Messages taken at once. The cleanup stage asks the runner for a delivery slot before it
//! writes a message: a place among the deliveries at once (`[delivery] concurrency`) and room in
//! the in-flight budget, if both are free right then. A message given one is stored already
//! claimed (on the spool: written straight into `active/`; in PostgreSQL: inserted active under
//! this node's lease) and handed to the runner in memory. This saves, per message, a hand-off to
//! the blocking pool (a thread woken, and the task woken again when it is done), the claim (a
//! rename, or a transaction), and the reading of its size. A message without a slot is named to
//! the runner and claimed by it as before.
//!
//! A message stored as claimed is durable before the client hears its 250, like any other: a
//! stop or crash before its delivery ends leaves it to `recover`, which requeues it at the next
//! start.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use tokio::task::JoinSet;

use super::{lock, Runner};
use crate::queue::{Envelope, Slot, Taker};

/// A message claimed as it was queued, with its slot.
pub(super) struct Ready {
    env: Envelope,
    message: Vec<u8>,
    slot: Slot,
}

/// The runner as the taker of the messages the cleanup stage queues.
struct AtOnce(Weak<Runner>);

impl Taker for AtOnce {
    fn reserve(&self, size: u64) -> Option<Slot> {
        let runner = self.0.upgrade()?;
        if runner.closing.load(Ordering::SeqCst) {
            return None;
        }
        let permit = runner.concurrency.clone().try_acquire_owned().ok()?;
        let room = runner.budget.try_reserve(size)?;
        Some(Slot { permit, room })
    }

    fn take(&self, slot: Slot, env: Envelope, message: Vec<u8>) {
        let Some(runner) = self.0.upgrade() else {
            return; // stopped: the message waits in the queue as claimed, for `recover`
        };
        runner.telemetry.metrics.queue_claim("arrival");
        lock(&runner.in_flight).insert(env.id.clone());
        lock(&runner.ready).push(Ready { env, message, slot });
        runner.ready_now.notify_one();
    }
}

impl Runner {
    /// Offers the cleanup stage delivery slots.
    pub(super) fn install_taker(self: &Arc<Self>) {
        self.wake.set_taker(Box::new(AtOnce(Arc::downgrade(self))));
    }

    /// Starts a delivery for each message taken at once.
    pub(super) fn start_ready(self: &Arc<Self>, tasks: &mut JoinSet<()>) {
        let ready = std::mem::take(&mut *lock(&self.ready));
        for Ready { env, message, slot } in ready {
            let me = self.clone();
            tasks.spawn(async move {
                let id = env.id.clone();
                me.deliver_claimed(env, message).await;
                lock(&me.in_flight).remove(&id);
                drop(slot);
            });
        }
    }
}

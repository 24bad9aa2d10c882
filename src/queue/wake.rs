//! How the queue runner hears of new work. The cleanup stage names the messages it has just
//! queued, so the runner takes them without listing the queue (one directory read or one query
//! less per message); anything else that changes the queue (a flush, a report queued, an
//! administrator's command) asks it to list the queue. The runner also lists it at least once
//! per scan interval, which is how it finds what other processes or nodes queued.
//!
//! The runner may also install a taker. The cleanup stage then asks it, before it writes a
//! message, for a delivery slot (a place among the deliveries at once, and room in the in-flight
//! budget); a message given one is stored already claimed and handed over in memory, and is not
//! named again.

use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use tokio::sync::{Notify, OwnedSemaphorePermit};

use super::{Envelope, Reservation};

/// Takes messages claimed as they were queued into deliveries (the queue runner).
pub trait Taker: Send + Sync {
    /// A delivery slot with room for `size` bytes, if one is free right now.
    fn reserve(&self, size: u64) -> Option<Slot>;
    /// Starts the delivery of a message stored as claimed, in the slot it was given.
    fn take(&self, slot: Slot, envelope: Envelope, message: Vec<u8>);
}

/// A delivery's place among those at once and its room in the in-flight budget, held from
/// before its message is written until its delivery ends.
#[derive(Debug)]
pub struct Slot {
    pub permit: OwnedSemaphorePermit,
    pub room: Reservation,
}

#[derive(Default)]
pub struct Wake {
    notify: Notify,
    pending: Mutex<News>,
    taker: OnceLock<Box<dyn Taker>>,
}

impl std::fmt::Debug for Wake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wake")
            .field("pending", &*self.lock())
            .field("taker", &self.taker.get().is_some())
            .finish()
    }
}

/// What the runner was told since it last asked.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct News {
    /// Messages queued, in the order they were queued.
    pub queued: Vec<String>,
    /// Whether the queue should be listed in full.
    pub look: bool,
}

impl Wake {
    /// Messages were queued: the runner may take them at once.
    pub fn queued(&self, ids: impl IntoIterator<Item = String>) {
        self.lock().queued.extend(ids);
        self.notify.notify_one();
    }

    /// A delivery slot for a message of `size` bytes about to be queued, if there is a taker
    /// and it has one free right now; the message is then stored as claimed and given to
    /// [`Wake::arrived`] with it. Called in a blocking step.
    pub fn reserve(&self, size: u64) -> Option<Slot> {
        self.taker.get()?.reserve(size)
    }

    /// Messages were just queued: those stored as claimed (with their slots) go to the taker,
    /// the others are named to the runner. Called in a blocking step.
    pub fn arrived(&self, claimed: Vec<(Slot, Envelope, Vec<u8>)>, queued: Vec<String>) {
        if let Some(taker) = self.taker.get() {
            for (slot, envelope, message) in claimed {
                taker.take(slot, envelope, message);
            }
        }
        self.queued(queued);
    }

    /// Installs the taker; false when one was installed already (it stays).
    pub fn set_taker(&self, taker: Box<dyn Taker>) -> bool {
        self.taker.set(taker).is_ok()
    }

    /// The queue changed in another way: the runner lists it.
    pub fn look(&self) {
        self.lock().look = true;
        self.notify.notify_one();
    }

    /// Waits until told something (returns at once when told since the last wait).
    pub async fn notified(&self) {
        self.notify.notified().await;
    }

    /// What was told since the last call, cleared.
    pub fn take(&self) -> News {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> MutexGuard<'_, News> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn queued_ids_and_a_request_to_look_are_told_once() {
        let wake = Wake::default();
        wake.queued(["A".to_string(), "B".to_string()]);
        wake.queued(["C".to_string()]);
        // The notifications were stored: waiting returns at once.
        tokio::time::timeout(Duration::from_secs(1), wake.notified())
            .await
            .unwrap();
        let news = wake.take();
        assert_eq!(news.queued, ["A", "B", "C"]);
        assert!(!news.look);
        assert_eq!(wake.take(), News::default());
        wake.look();
        tokio::time::timeout(Duration::from_secs(1), wake.notified())
            .await
            .unwrap();
        assert!(wake.take().look);
        // Nothing more was told: waiting waits.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), wake.notified())
                .await
                .is_err()
        );
    }

    /// Two delivery slots and a budget; records what it was given.
    struct TwoSlots {
        permits: std::sync::Arc<tokio::sync::Semaphore>,
        budget: std::sync::Arc<crate::queue::InFlight>,
        taken: std::sync::Arc<Mutex<Vec<String>>>,
    }

    impl Taker for TwoSlots {
        fn reserve(&self, size: u64) -> Option<Slot> {
            let permit = self.permits.clone().try_acquire_owned().ok()?;
            let room = self.budget.try_reserve(size)?;
            Some(Slot { permit, room })
        }
        fn take(&self, _slot: Slot, envelope: Envelope, message: Vec<u8>) {
            assert_eq!(message, b"m");
            self.taken.lock().unwrap().push(envelope.id);
        }
    }

    #[tokio::test]
    async fn claimed_messages_go_to_the_taker_and_the_others_are_named() {
        let wake = Wake::default();
        assert_eq!(wake.reserve(1).map(|_| ()), None, "no taker, no slot");
        let taken = std::sync::Arc::new(Mutex::new(Vec::new()));
        let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(2));
        let taker = TwoSlots {
            permits: permits.clone(),
            budget: crate::queue::InFlight::new(3 * 1024),
            taken: taken.clone(),
        };
        assert!(wake.set_taker(Box::new(taker)));
        let a = wake.reserve(2 * 1024).expect("a free slot");
        assert!(
            wake.reserve(2 * 1024).is_none(),
            "no room left in the budget"
        );
        let b = wake.reserve(1024).expect("room for a small one");
        assert!(wake.reserve(1).is_none(), "both slots taken");
        let envelope = |id: &str| Envelope::new(id, "a@x.test", vec![], "h", "p", 0);
        wake.arrived(
            vec![
                (a, envelope("A"), b"m".to_vec()),
                (b, envelope("B"), b"m".to_vec()),
            ],
            vec!["C".to_string()],
        );
        assert_eq!(*taken.lock().unwrap(), ["A", "B"]);
        // The runner is woken all the same, and hears only of C.
        tokio::time::timeout(Duration::from_secs(1), wake.notified())
            .await
            .unwrap();
        assert_eq!(wake.take().queued, ["C"]);
        // The slots were given back when the taker let go of them.
        assert_eq!(permits.available_permits(), 2);
    }
}

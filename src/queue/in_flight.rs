//! The global budget of message bytes held outside the queue files: being received, checked by
//! transport rules, or read for delivery.
//!
//! Every session reserves what it receives; a transaction that cannot reserve is refused with
//! `452 4.3.1` (before its data) or `451 4.3.1` (after a transfer that crossed the cap). The
//! cleanup stage reserves again for a whole message it must hold in memory, and the queue runner
//! waits for room before it reads a message. A [`Reservation`] gives its bytes back when the last
//! of its clones is dropped, whatever path the transaction took.
//!
//! Bytes are counted in KiB units of a semaphore, so a waiting runner is served in turn and is
//! not starved by sessions that try without waiting.

use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The unit of the budget.
const UNIT: u64 = 1024;

/// The largest budget: every unit must fit in a `u32` request.
const MAX_UNITS: u64 = u32::MAX as u64;

/// The shared budget.
#[derive(Debug)]
pub struct InFlight {
    semaphore: Arc<Semaphore>,
    units: u64,
}

/// Bytes taken from an [`InFlight`] budget; clones share them, and the last one dropped gives
/// them back.
#[derive(Clone, Debug)]
pub struct Reservation {
    held: Arc<Held>,
}

#[derive(Debug)]
struct Held {
    budget: Arc<InFlight>,
    permit: Mutex<Option<OwnedSemaphorePermit>>,
}

/// Bytes in whole units, rounded up; saturates at the largest request.
fn units(bytes: u64) -> u64 {
    bytes.div_ceil(UNIT).min(MAX_UNITS)
}

impl InFlight {
    /// A budget of `cap` bytes (rounded up to whole KiB).
    pub fn new(cap: u64) -> Arc<InFlight> {
        let units = units(cap).max(1);
        Arc::new(InFlight {
            semaphore: Arc::new(Semaphore::new(units as usize)),
            units,
        })
    }

    /// A budget nobody reaches (tests, tools).
    pub fn unlimited() -> Arc<InFlight> {
        InFlight::new(u64::MAX)
    }

    /// The cap in bytes.
    pub fn cap(&self) -> u64 {
        self.units.saturating_mul(UNIT)
    }

    /// Bytes reserved right now.
    pub fn used(&self) -> u64 {
        let free = self.semaphore.available_permits() as u64;
        self.units.saturating_sub(free).saturating_mul(UNIT)
    }

    /// Whether `bytes` would fit now (nothing is taken).
    pub fn fits(&self, bytes: u64) -> bool {
        units(bytes) <= self.semaphore.available_permits() as u64
    }

    /// Takes `bytes` at once, or `None` when they do not fit now.
    pub fn try_reserve(self: &Arc<Self>, bytes: u64) -> Option<Reservation> {
        let held = Held {
            budget: self.clone(),
            permit: Mutex::new(None),
        };
        let reservation = Reservation {
            held: Arc::new(held),
        };
        reservation.try_grow_to(bytes).then_some(reservation)
    }

    /// Waits until `bytes` (at most the whole cap) are free and takes them.
    pub async fn reserve(self: &Arc<Self>, bytes: u64) -> Reservation {
        let wanted = units(bytes).min(self.units);
        let permit = match u32::try_from(wanted) {
            Ok(n) => self.semaphore.clone().acquire_many_owned(n).await.ok(),
            Err(_) => None,
        };
        Reservation {
            held: Arc::new(Held {
                budget: self.clone(),
                permit: Mutex::new(permit),
            }),
        }
    }
}

impl Reservation {
    /// A reservation on a budget of its own that nothing else uses (tests, tools).
    pub fn unlimited() -> Reservation {
        InFlight::unlimited()
            .try_reserve(0)
            .unwrap_or_else(|| unreachable!("an unlimited budget takes zero bytes"))
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        let permit = self.held.permit.lock().unwrap_or_else(|p| p.into_inner());
        permit.as_ref().map_or(0, |p| p.num_permits() as u64) * UNIT
    }

    /// Makes the reservation hold at least `bytes`; false (and nothing more held) when the
    /// budget has no room for the difference.
    pub fn try_grow_to(&self, bytes: u64) -> bool {
        let mut permit = self.held.permit.lock().unwrap_or_else(|p| p.into_inner());
        let have = permit.as_ref().map_or(0, |p| p.num_permits() as u64);
        let want = units(bytes);
        if want <= have {
            return true;
        }
        let Ok(extra) = u32::try_from(want - have) else {
            return false;
        };
        let budget = &self.held.budget;
        match budget.semaphore.clone().try_acquire_many_owned(extra) {
            Ok(more) => {
                match permit.as_mut() {
                    Some(p) => p.merge(more),
                    None => *permit = Some(more),
                }
                true
            }
            Err(_) => false,
        }
    }

    /// Like [`Reservation::try_grow_to`] by `bytes` more than held now.
    pub fn try_grow_by(&self, bytes: u64) -> bool {
        self.try_grow_to(self.bytes().saturating_add(bytes))
    }

    /// The budget this reservation was taken from.
    pub fn budget(&self) -> &Arc<InFlight> {
        &self.held.budget
    }
}

impl PartialEq for Reservation {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.held, &other.held)
    }
}

impl Eq for Reservation {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_refused_past_the_cap_and_given_back_on_drop() {
        let budget = InFlight::new(10 * 1024);
        assert_eq!(budget.cap(), 10 * 1024);
        let a = budget.try_reserve(4 * 1024).unwrap();
        assert_eq!(budget.used(), 4 * 1024);
        assert!(budget.fits(6 * 1024) && !budget.fits(6 * 1024 + 1));
        assert!(budget.try_reserve(7 * 1024).is_none(), "over the cap");
        let b = budget.try_reserve(1).unwrap();
        assert_eq!(b.bytes(), 1024, "whole units, rounded up");
        assert!(a.try_grow_to(9 * 1024));
        assert!(!a.try_grow_to(9 * 1024 + 1), "the cap is reached");
        assert_eq!(a.bytes(), 9 * 1024, "a failed growth takes nothing");
        let clone = a.clone();
        drop(a);
        assert_eq!(budget.used(), 10 * 1024, "a clone still holds the bytes");
        drop(clone);
        drop(b);
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn a_waiting_reservation_gets_the_bytes_given_back() {
        let budget = InFlight::new(8 * 1024);
        let held = budget.try_reserve(6 * 1024).unwrap();
        let waiter = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.reserve(5 * 1024).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        // A session trying meanwhile does not jump the queue.
        assert!(budget.try_reserve(1).is_none());
        drop(held);
        let got = waiter.await.unwrap();
        assert_eq!(got.bytes(), 5 * 1024);
        // More than the cap is clamped to the cap rather than waiting forever.
        drop(got);
        assert_eq!(budget.reserve(u64::MAX).await.bytes(), 8 * 1024);
    }
}

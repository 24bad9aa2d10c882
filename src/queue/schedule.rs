//! Retry schedule: exponential backoff and queue lifetime, as pure functions of the given time.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How deferred messages are retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay after the first failed attempt (Postfix minimal_backoff_time).
    pub initial: Duration,
    /// Upper bound of any delay (maximal_backoff_time).
    pub max: Duration,
    /// How long a message may stay queued before it expires (maximal_queue_lifetime).
    pub lifetime: Duration,
}

/// What to do with a message after a temporary failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Defer it; try again at this unix time.
    RetryAt(i64),
    /// Give up: the next attempt would fall past the lifetime. Fail the pending recipients.
    Expired,
}

/// A source of the current unix time in seconds; tests use [`ManualClock`].
pub trait Clock: Send + Sync {
    fn now(&self) -> i64;
}

/// The real clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

/// A clock that only moves when told to.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_secs(60),
            max: Duration::from_secs(3600),
            lifetime: Duration::from_secs(5 * 24 * 3600),
        }
    }
}

impl RetryPolicy {
    /// The delay after `attempts` failed attempts (1 = the first): `initial * 2^(attempts-1)`,
    /// capped at `max`. Zero attempts is treated as one.
    pub fn delay(&self, attempts: u32) -> Duration {
        let exponent = attempts.max(1) - 1;
        let factor = 1u32.checked_shl(exponent).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// Decide when to retry a message that has just failed temporarily.
///
/// `attempts` counts the attempts so far including the one that just failed. The message expires
/// when the next attempt would fall after `since + lifetime`, `since` being when it arrived or,
/// if later, when it was last released from hold (`Envelope::lifetime_start`).
pub fn after_failure(policy: &RetryPolicy, attempts: u32, since: i64, now: i64) -> Decision {
    let next = now.saturating_add(secs(policy.delay(attempts)));
    let deadline = since.saturating_add(secs(policy.lifetime));
    if next > deadline {
        Decision::Expired
    } else {
        Decision::RetryAt(next)
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => secs(d),
            Err(e) => -secs(e.duration()),
        }
    }
}

impl ManualClock {
    pub fn new(now: i64) -> Self {
        ManualClock(AtomicI64::new(now))
    }

    pub fn set(&self, now: i64) {
        self.0.store(now, Ordering::SeqCst);
    }

    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(secs(by), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> i64 {
        (**self).now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000;

    #[test]
    fn default_policy_matches_design() {
        let p = RetryPolicy::default();
        assert_eq!(p.initial, Duration::from_secs(60));
        assert_eq!(p.max, Duration::from_secs(3600));
        assert_eq!(p.lifetime, Duration::from_secs(432_000));
    }

    #[test]
    fn backoff_doubles_from_initial() {
        let p = RetryPolicy::default();
        assert_eq!(after_failure(&p, 1, T0, T0), Decision::RetryAt(T0 + 60));
        assert_eq!(
            after_failure(&p, 2, T0, T0 + 60),
            Decision::RetryAt(T0 + 60 + 120)
        );
        assert_eq!(after_failure(&p, 3, T0, T0), Decision::RetryAt(T0 + 240));
        assert_eq!(after_failure(&p, 6, T0, T0), Decision::RetryAt(T0 + 1920));
        assert_eq!(p.delay(0), p.delay(1));
    }

    #[test]
    fn backoff_is_capped_at_max_even_for_huge_attempt_counts() {
        let p = RetryPolicy::default();
        assert_eq!(after_failure(&p, 7, T0, T0), Decision::RetryAt(T0 + 3600)); // 3840 capped
        assert_eq!(p.delay(40), Duration::from_secs(3600));
        assert_eq!(p.delay(u32::MAX), Duration::from_secs(3600));
    }

    #[test]
    fn expires_when_next_attempt_passes_lifetime() {
        let p = RetryPolicy::default();
        let deadline = T0 + 432_000;
        // The retry would land exactly on the deadline: still allowed.
        assert_eq!(
            after_failure(&p, 20, T0, deadline - 3600),
            Decision::RetryAt(deadline)
        );
        // One second later it would land past it.
        assert_eq!(
            after_failure(&p, 20, T0, deadline - 3599),
            Decision::Expired
        );
        assert_eq!(after_failure(&p, 1, T0, deadline + 10), Decision::Expired);
    }

    #[test]
    fn zero_lifetime_expires_on_first_failure() {
        let p = RetryPolicy {
            lifetime: Duration::ZERO,
            ..RetryPolicy::default()
        };
        assert_eq!(after_failure(&p, 1, T0, T0), Decision::Expired);
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = Arc::new(ManualClock::new(T0));
        assert_eq!(c.now(), T0);
        c.advance(Duration::from_secs(90));
        assert_eq!(c.now(), T0 + 90);
        c.set(5);
        let dynamic: &dyn Clock = &c;
        assert_eq!(dynamic.now(), 5);
        assert!(SystemClock.now() > T0);
    }
}

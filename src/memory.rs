//! Giving freed memory back to the system: the binary registers how (glibc's `malloc_trim`),
//! and the server's housekeeping calls it once many sessions have closed and the count of open
//! sessions has stopped falling.
//!
//! glibc returns only the top of a heap by itself; the pages freed inside its arenas when
//! thousands of sessions close stay resident until something asks for them back. Asking walks
//! and locks every arena, so it happens here, off the async threads, a few times at most after a
//! peak, never per connection.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::watch;

use crate::net::ConnectionLimits;

static RELEASE: OnceLock<fn() -> bool> = OnceLock::new();

/// How often the housekeeping looks at the count of open sessions.
pub const TICK: Duration = Duration::from_secs(2);

/// Registers the function that hands freed memory back to the system (true: some was). Only
/// the first registration counts; returns whether this one did.
pub fn set_release(release: fn() -> bool) -> bool {
    RELEASE.set(release).is_ok()
}

/// Whether a release function is registered (the `sealpost` binary registers one on glibc).
pub fn can_release() -> bool {
    RELEASE.get().is_some()
}

/// Hands freed memory back now, if a release function is registered; blocking (call it from
/// a blocking thread). `None`: nothing registered.
pub fn release_now() -> Option<bool> {
    RELEASE.get().map(|release| release())
}

/// This process's resident memory in KiB (VmRSS of /proc/self/status); `None` where there is
/// no such file.
pub fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// When to release: the pure part of the housekeeping, fed the count of open sessions once a
/// tick.
#[derive(Debug, Default)]
pub struct Trigger {
    /// The most sessions open at once since the last release.
    peak: usize,
    /// The count at the previous tick.
    last: usize,
}

/// Sessions that must have closed since the peak before a release is worth its walk over the
/// arenas (a few KiB each: some MiB in all).
pub const MIN_CLOSED: usize = 500;

impl Trigger {
    /// Takes this tick's count of open sessions and the most that were open at once since the
    /// last tick; true when memory should be released now: at least `MIN_CLOSED` sessions and
    /// half of the peak have closed, and the count has settled (it moved by at most 16 or a
    /// sixteenth since the last tick: no burst of connections opening or closing is under way).
    pub fn observe(&mut self, open: usize, peak: usize) -> bool {
        self.peak = self.peak.max(peak).max(open);
        let settled = open.abs_diff(self.last) <= (self.last / 16).max(16);
        self.last = open;
        let closed = self.peak - open;
        if settled && closed >= MIN_CLOSED && open <= self.peak / 2 {
            self.peak = open;
            return true;
        }
        false
    }
}

/// Runs until `shutdown` turns true: every `TICK`, feeds the count of open sessions (SMTP and
/// IMAP share `limits`) to a `Trigger` and releases memory on a blocking thread when it says so,
/// logging at debug level what came back. Returns at once when no release function is
/// registered.
pub async fn housekeeping(limits: Arc<ConnectionLimits>, mut shutdown: watch::Receiver<bool>) {
    if !can_release() {
        return;
    }
    let mut trigger = Trigger::default();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => if *shutdown.borrow() { return },
        }
        let open = limits.open();
        if !trigger.observe(open, limits.take_peak()) {
            continue;
        }
        let released = tokio::task::spawn_blocking(move || {
            let before = rss_kib();
            let started = std::time::Instant::now();
            let any = release_now().unwrap_or(false);
            (before, rss_kib(), any, started.elapsed())
        })
        .await;
        if let Ok((before, after, any, took)) = released {
            tracing::debug!(
                sessions = open,
                rss_before_kib = before.unwrap_or(0),
                rss_after_kib = after.unwrap_or(0),
                released = any,
                took_ms = took.as_secs_f64() * 1000.0,
                "freed memory handed back to the system"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_once_half_the_peak_closed_and_the_count_stopped_falling() {
        let mut t = Trigger::default();
        assert!(!t.observe(0, 0));
        assert!(!t.observe(4000, 4000), "rising");
        assert!(!t.observe(10_000, 10_000), "rising");
        assert!(
            !t.observe(6000, 6000),
            "still falling, and above half the peak"
        );
        assert!(!t.observe(3000, 3000), "falling");
        assert!(t.observe(3000, 3000), "settled at under half the peak");
        assert!(
            !t.observe(3000, 3000),
            "released already; the peak is now 3000"
        );
        assert!(!t.observe(2800, 2800), "200 closed: not worth a release");
        assert!(!t.observe(2800, 2800), "still only 200 below the new peak");
    }

    #[test]
    fn a_small_server_never_releases() {
        let mut t = Trigger::default();
        for open in [0, 300, 450, 10, 0, 0, 499, 0, 0] {
            assert!(!t.observe(open, open), "{open}");
        }
    }

    #[test]
    fn a_count_still_moving_waits_and_a_hovering_one_does_not() {
        let mut t = Trigger::default();
        assert!(!t.observe(2000, 2000));
        assert!(!t.observe(100, 100));
        assert!(!t.observe(400, 400), "rising again since the last tick");
        assert!(t.observe(390, 390), "hovering counts as settled");
    }

    #[test]
    fn a_peak_between_two_ticks_counts() {
        let mut t = Trigger::default();
        assert!(!t.observe(0, 0));
        assert!(
            t.observe(0, 3000),
            "3000 opened and closed between two ticks"
        );
        assert!(!t.observe(0, 0));
    }

    #[test]
    fn reads_its_own_resident_memory() {
        if std::path::Path::new("/proc/self/status").exists() {
            assert!(rss_kib().is_some_and(|k| k > 0));
        }
    }
}

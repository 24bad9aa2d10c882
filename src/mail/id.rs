//! Queue ids: unique, time-sortable, filename-safe names for queued messages.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Length of ids made by [`new_queue_id`]: 14 hex digits of microseconds, 6 of process tag.
pub const QUEUE_ID_LEN: usize = 20;

/// The last microsecond value handed out by this process; ids never repeat or go backwards.
static LAST_MICROS: AtomicU64 = AtomicU64::new(0);
/// Random per-process bits that keep ids of concurrent processes on one spool apart.
static PROCESS_TAG: OnceLock<u32> = OnceLock::new();

/// A new queue id: 20 uppercase hex digits, `MMMMMMMMMMMMMMPPPPPP`.
///
/// `M` is the time in microseconds since the epoch, bumped by one whenever the clock has not
/// moved past the previous id (so within a process ids are strictly increasing and unique even
/// when called faster than the clock ticks, or when the clock steps back). `P` is 24 random bits
/// chosen once per process. Fixed width, so string order is time order.
pub fn new_queue_id() -> String {
    let now = now_micros();
    let previous = LAST_MICROS
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            Some(now.max(last.saturating_add(1)))
        })
        .unwrap_or_else(|last| last);
    let micros = now.max(previous.saturating_add(1)) & 0x00FF_FFFF_FFFF_FFFF;
    let tag = *PROCESS_TAG.get_or_init(|| rand::random::<u32>() & 0x00FF_FFFF);
    format!("{micros:014X}{tag:06X}")
}

/// Whether `id` can safely name a queue file: 1 to 64 ASCII letters, digits, `-` or `_`.
///
/// This rejects path separators, `.` and `..`, so an id taken from a command line cannot reach
/// outside the queue directories. Temporary files use a `.` and are therefore never ids.
pub fn is_valid_queue_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The microsecond timestamp in an id made by [`new_queue_id`], if it is one.
pub fn queue_id_micros(id: &str) -> Option<u64> {
    if id.len() != QUEUE_ID_LEN {
        return None;
    }
    u64::from_str_radix(id.get(..14)?, 16).ok()
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_unique_and_strictly_increasing_over_100k_calls() {
        let ids: Vec<String> = (0..100_000).map(|_| new_queue_id()).collect();
        for pair in ids.windows(2) {
            assert!(pair[0] < pair[1], "{} !< {}", pair[0], pair[1]);
        }
        let unique: HashSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
    }

    #[test]
    fn ids_are_unique_across_threads() {
        let handles: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| (0..25_000).map(|_| new_queue_id()).collect::<Vec<_>>()))
            .collect();
        let mut all = HashSet::new();
        for h in handles {
            for id in h.join().unwrap() {
                assert!(all.insert(id), "duplicate id");
            }
        }
        assert_eq!(all.len(), 100_000);
    }

    #[test]
    fn id_shape_and_embedded_time() {
        let before = now_micros();
        let id = new_queue_id();
        assert_eq!(id.len(), QUEUE_ID_LEN);
        assert!(is_valid_queue_id(&id));
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)),
            "{id}"
        );
        let micros = queue_id_micros(&id).unwrap();
        // Other tests may have pushed the counter a little ahead of the clock; not by a minute.
        assert!(
            micros >= before && micros < before + 60_000_000,
            "{micros} vs {before}"
        );
        let later = new_queue_id();
        assert!(later > id);
    }

    #[test]
    fn validity_rejects_paths_and_dots() {
        for bad in [
            "",
            ".",
            "..",
            "../etc",
            "a/b",
            "A.new",
            "a b",
            &"A".repeat(65),
        ] {
            assert!(!is_valid_queue_id(bad), "{bad:?} accepted");
        }
        assert!(is_valid_queue_id("0123456789ABCDEF0123"));
        assert!(queue_id_micros("short").is_none());
    }
}

//! How the queue runner hears of new work. The cleanup stage names the messages it has just
//! queued, so the runner takes them without listing the queue (one directory read or one query
//! less per message); anything else that changes the queue (a flush, a report queued, an
//! administrator's command) asks it to list the queue. The runner also lists it at least once
//! per scan interval, which is how it finds what other processes or nodes queued.

use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct Wake {
    notify: Notify,
    pending: Mutex<News>,
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
}

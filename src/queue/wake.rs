//! How the queue runner hears of new work. The cleanup stage names the messages it has just
//! queued, so the runner takes them without listing the queue (one directory read or one query
//! less per message); anything else that changes the queue (a flush, a report queued, an
//! administrator's command) asks it to list the queue. The runner also lists it at least once
//! per scan interval, which is how it finds what other processes or nodes queued.
//!
//! The runner may also install a taker: a message just queued is then offered to it first, in
//! the cleanup stage's own step, and one it takes (claims at once) is not named again.

use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use tokio::sync::Notify;

/// Offered each message as it is queued (its id and size); true when it took it.
pub type Taker = Box<dyn Fn(&str, u64) -> bool + Send + Sync>;

#[derive(Default)]
pub struct Wake {
    notify: Notify,
    pending: Mutex<News>,
    taker: OnceLock<Taker>,
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

    /// Messages were just queued by a caller in a blocking step (the cleanup stage), with the
    /// size of each message: each is offered to the taker first, if there is one, in this step;
    /// the others are named to the runner.
    pub fn offer(&self, queued: impl IntoIterator<Item = (String, u64)>) {
        let offered = queued.into_iter();
        let left: Vec<String> = match self.taker.get() {
            Some(take) => offered
                .filter(|(id, size)| !take(id, *size))
                .map(|(id, _)| id)
                .collect(),
            None => offered.map(|(id, _)| id).collect(),
        };
        self.queued(left);
    }

    /// Installs the taker; false when one was installed already (it stays).
    pub fn set_taker(&self, taker: Taker) -> bool {
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

    #[tokio::test]
    async fn messages_the_taker_takes_are_not_named_again() {
        let wake = Wake::default();
        let offered = std::sync::Arc::new(Mutex::new(Vec::new()));
        let seen = offered.clone();
        assert!(wake.set_taker(Box::new(move |id: &str, size| {
            seen.lock().unwrap().push((id.to_string(), size));
            id != "B"
        })));
        assert!(!wake.set_taker(Box::new(|_: &str, _| false)));
        wake.offer([
            ("A".to_string(), 1),
            ("B".to_string(), 2),
            ("C".to_string(), 3),
        ]);
        let got = offered.lock().unwrap().clone();
        assert_eq!(got, [("A".into(), 1), ("B".into(), 2), ("C".into(), 3)]);
        // The runner is woken all the same (to start what was taken), and hears only of B.
        tokio::time::timeout(Duration::from_secs(1), wake.notified())
            .await
            .unwrap();
        assert_eq!(wake.take().queued, ["B"]);
        // Named otherwise (a notice the runner queued itself): never offered.
        wake.queued(["D".to_string()]);
        assert_eq!(offered.lock().unwrap().len(), 3);
        assert_eq!(wake.take().queued, ["D"]);
    }
}

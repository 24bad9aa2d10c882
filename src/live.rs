//! A value that a configuration reload replaces while readers keep the version they started with.

use std::sync::{Arc, RwLock};

/// Holds the current `Arc<T>`; `get` hands out a snapshot, `replace` installs a new one. Work that
/// took a snapshot (a session, a delivery) finishes under it.
pub struct Live<T: ?Sized>(RwLock<Arc<T>>);

impl<T: ?Sized> Live<T> {
    pub fn new(value: Arc<T>) -> Self {
        Live(RwLock::new(value))
    }

    /// The current value.
    pub fn get(&self) -> Arc<T> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Installs `value` for every later `get`; returns the previous one.
    pub fn replace(&self, value: Arc<T>) -> Arc<T> {
        let mut slot = self.0.write().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *slot, value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_survive_a_replace() {
        let live = Live::new(Arc::new(1));
        let before = live.get();
        let old = live.replace(Arc::new(2));
        assert_eq!((*before, *old, *live.get()), (1, 1, 2));
    }
}

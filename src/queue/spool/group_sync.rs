//! Group commit of directory fsyncs: callers whose renames in one directory are done share a
//! single fsync of it, and each returns only after an fsync that began after its call.
//!
//! No timer: a lone caller fsyncs at once. While an fsync runs, later callers gather in the next
//! batch; when it ends, one of them fsyncs for all of them (PostgreSQL's and InnoDB's group
//! commit), so under load the directory is synced about once per fsync duration, not once per
//! message. A failed fsync fails every caller of its batch.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};

use crate::queue::error::QueueError;

/// How a directory is made durable; the real one (`GroupSync::new`) fsyncs a handle of it.
pub(super) type SyncFn = Box<dyn Fn(&Path) -> io::Result<()> + Send + Sync>;

/// The shared fsync of one directory.
pub(super) struct GroupSync {
    dir: PathBuf,
    state: Mutex<State>,
    done: Condvar,
    fsyncs: AtomicU64,
    sync: SyncFn,
}

#[derive(Default)]
struct State {
    /// The batch that callers join now: its fsync has not begun.
    collecting: Arc<Batch>,
    /// Whether an fsync is under way (for an earlier batch).
    running: bool,
}

/// Callers covered by one fsync, and its outcome once it ended.
#[derive(Default)]
struct Batch {
    result: OnceLock<Result<(), (io::ErrorKind, String)>>,
}

impl std::fmt::Debug for GroupSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupSync")
            .field("dir", &self.dir)
            .field("fsyncs", &self.fsyncs())
            .finish()
    }
}

impl GroupSync {
    /// The real group sync of `dir`: its handle is opened at the first fsync and kept (two
    /// system calls less per fsync); one that fails is dropped and opened again next time.
    pub(super) fn new(dir: PathBuf) -> GroupSync {
        let handle: Mutex<Option<File>> = Mutex::new(None);
        let sync = move |dir: &Path| -> io::Result<()> {
            let mut handle = handle.lock().unwrap_or_else(PoisonError::into_inner);
            let file = match handle.take() {
                Some(file) => file,
                None => File::open(dir)?,
            };
            file.sync_all()?;
            *handle = Some(file);
            Ok(())
        };
        GroupSync::with_sync(dir, Box::new(sync))
    }

    pub(super) fn with_sync(dir: PathBuf, sync: SyncFn) -> GroupSync {
        GroupSync {
            dir,
            state: Mutex::default(),
            done: Condvar::new(),
            fsyncs: AtomicU64::new(0),
            sync,
        }
    }

    /// Returns once an fsync of the directory that began after this call has succeeded:
    /// every rename or unlink the caller made in it before calling is then durable.
    pub(super) fn sync(&self) -> Result<(), QueueError> {
        let mut state = self.lock();
        let mine = state.collecting.clone();
        loop {
            if let Some(result) = mine.result.get() {
                return result
                    .clone()
                    .map_err(|(kind, text)| QueueError::io(&self.dir)(io::Error::new(kind, text)));
            }
            if !state.running {
                // Nothing runs and our batch has no outcome: it is still the one collecting,
                // and this caller syncs it for everyone in it.
                state.running = true;
                let batch = std::mem::take(&mut state.collecting);
                drop(state);
                let result = (self.sync)(&self.dir);
                self.fsyncs.fetch_add(1, Ordering::Relaxed);
                // Set once, here: only the caller that took the batch out of `collecting`
                // completes it.
                let _ = batch
                    .result
                    .set(result.map_err(|e| (e.kind(), e.to_string())));
                state = self.lock();
                state.running = false;
                self.done.notify_all();
                continue;
            }
            state = self
                .done
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Fsyncs of the directory made so far.
    pub(super) fn fsyncs(&self) -> u64 {
        self.fsyncs.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Make the directory's entries (creations, renames, unlinks) durable.
pub(super) fn fsync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Barrier;
    use std::time::{Duration, Instant};

    /// What a fake directory holds: entries renamed in, and those an fsync made durable.
    #[derive(Default)]
    struct Disk {
        renamed: HashSet<usize>,
        durable: HashSet<usize>,
    }

    /// A group sync over a fake fsync that makes durable what was renamed when it began, and
    /// whose first call waits until `hold` callers are waiting behind it.
    fn fake(disk: Arc<Mutex<Disk>>, hold: usize) -> Arc<GroupSync> {
        let started = Arc::new(AtomicU64::new(0));
        let cell: Arc<OnceLock<std::sync::Weak<GroupSync>>> = Arc::default();
        let me = cell.clone();
        let sync: SyncFn = Box::new(move |_| {
            let snapshot = disk.lock().unwrap().renamed.clone();
            if started.fetch_add(1, Ordering::SeqCst) == 0 {
                let group = me.get().and_then(std::sync::Weak::upgrade).unwrap();
                let deadline = Instant::now() + Duration::from_secs(20);
                while Arc::strong_count(&group.state.lock().unwrap().collecting) < hold + 1 {
                    assert!(Instant::now() < deadline, "callers never gathered");
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            disk.lock().unwrap().durable.extend(snapshot);
            Ok(())
        });
        let group = Arc::new(GroupSync::with_sync(PathBuf::from("fake"), sync));
        let _ = cell.set(Arc::downgrade(&group));
        group
    }

    #[test]
    fn concurrent_callers_share_fsyncs_and_each_waits_for_one_that_covers_it() {
        const N: usize = 16;
        let disk: Arc<Mutex<Disk>> = Arc::default();
        // The first caller's fsync lasts until the other N - 1 wait behind it.
        let group = fake(disk.clone(), N - 1);
        let barrier = Arc::new(Barrier::new(N));
        let first = {
            let (group, disk) = (group.clone(), disk.clone());
            std::thread::spawn(move || {
                disk.lock().unwrap().renamed.insert(0);
                group.sync().unwrap();
                assert!(disk.lock().unwrap().durable.contains(&0));
            })
        };
        while !group.lock().running {
            std::thread::yield_now();
        }
        let others: Vec<_> = (1..N)
            .map(|i| {
                let (group, disk, barrier) = (group.clone(), disk.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    disk.lock().unwrap().renamed.insert(i);
                    group.sync().unwrap();
                    // Returned only once an fsync that saw this rename ended.
                    assert!(disk.lock().unwrap().durable.contains(&i), "{i} not durable");
                })
            })
            .collect();
        barrier.wait();
        for t in others {
            t.join().unwrap();
        }
        first.join().unwrap();
        // One fsync for the first caller, one for the fifteen that came during it.
        assert_eq!(group.fsyncs(), 2);
    }

    #[test]
    fn a_lone_caller_syncs_at_once_every_time() {
        let disk: Arc<Mutex<Disk>> = Arc::default();
        let group = fake(disk.clone(), 0);
        for i in 0..3 {
            disk.lock().unwrap().renamed.insert(i);
            group.sync().unwrap();
            assert!(disk.lock().unwrap().durable.contains(&i));
        }
        assert_eq!(group.fsyncs(), 3);
    }

    #[test]
    fn a_failed_fsync_fails_its_caller_and_names_the_directory() {
        let sync: SyncFn = Box::new(|_| Err(io::Error::other("EIO from the disk")));
        let group = GroupSync::with_sync(PathBuf::from("/spool/incoming"), sync);
        let e = group.sync().unwrap_err().to_string();
        assert!(e.contains("/spool/incoming") && e.contains("EIO"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        GroupSync::new(dir.path().to_path_buf()).sync().unwrap();
    }

    #[test]
    fn the_real_sync_keeps_its_handle_and_opens_it_again_after_a_failure() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("d");
        std::fs::create_dir(&dir).unwrap();
        let group = GroupSync::new(dir.clone());
        group.sync().unwrap();
        group.sync().unwrap();
        assert_eq!(group.fsyncs(), 2);
        // Never opened: a directory that is not there fails, and once it is there again the
        // next sync opens it.
        let gone = GroupSync::new(root.path().join("missing"));
        assert!(gone.sync().is_err());
        std::fs::create_dir(root.path().join("missing")).unwrap();
        gone.sync().unwrap();
    }
}

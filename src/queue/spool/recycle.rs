//! Queue files used again: a delivered message's file is renamed into `tmp/` instead of being
//! removed, and the next message written takes it over (truncated and rewritten from the start,
//! under its pooled name, then renamed where it belongs) instead of creating a file.
//!
//! Every message used to cost the file system an inode allocated and one freed. Allocation is
//! the dear part where files come and go by the thousand: ext4 without a journal, for one,
//! skips every inode freed in the last seconds while it looks for a free one, and that search
//! was about a tenth of the server's CPU in `bench compare`. A rename and a truncation need no
//! inode. The pool is small ([`POOL`]); a file that does not fit is removed as before. Pooled
//! files are named `free.<tag>.<n>` in `tmp/`, so the startup cleanup of `tmp/` removes what
//! an earlier process left, and no queue listing sees them. Their old bytes are ciphertext and
//! are cut off (truncated) before the file is written again.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

/// Files kept for use again, per spool handle (and its clones).
pub(super) const POOL: usize = 256;

/// Whether a name in `tmp/` is a pooled file's.
pub(super) fn is_pooled(name: &str) -> bool {
    name.starts_with("free.")
}

/// The pool of files in `tmp/` waiting to be used again.
#[derive(Debug)]
pub(super) struct FreeFiles {
    tmp: PathBuf,
    /// Names in `tmp/` of this handle's pooled files (another process may have taken one).
    names: Mutex<Vec<String>>,
    /// Unique per process and handle, so that two processes sharing the spool never collide.
    tag: String,
    next: AtomicU64,
}

impl FreeFiles {
    pub(super) fn new(tmp: PathBuf) -> FreeFiles {
        let tag = format!("{}-{:08x}", std::process::id(), rand::random::<u32>());
        FreeFiles {
            tmp,
            names: Mutex::new(Vec::new()),
            tag,
            next: AtomicU64::new(0),
        }
    }

    /// Moves `file` into the pool, or removes it when the pool is full. Either way it is gone
    /// from where it was (the caller makes that durable); `NotFound` if it was not there.
    pub(super) fn put(&self, file: &Path) -> io::Result<()> {
        if self.lock().len() >= POOL {
            return fs::remove_file(file);
        }
        let name = format!(
            "free.{}.{}",
            self.tag,
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        fs::rename(file, self.tmp.join(&name))?;
        self.lock().push(name);
        Ok(())
    }

    /// A pooled file, opened for writing and cut to nothing, with its path (the caller writes
    /// it there and renames it where it belongs); `None` when none could be had.
    pub(super) fn take(&self) -> Option<(PathBuf, fs::File)> {
        loop {
            let name = self.lock().pop()?;
            let path = self.tmp.join(&name);
            match fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&path)
            {
                Ok(file) => return Some((path, file)),
                // Removed behind our back (a cleanup of tmp/): try the next one.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(_) => return None,
            }
        }
    }

    /// Files in the pool now.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.names.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

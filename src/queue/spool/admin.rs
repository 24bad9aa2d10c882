//! What administrators do to the spool (`sealpost queue`) and what the runner asks of it:
//! listing, flush, delete, hold and release, and the ids waiting in each directory.

use std::path::Path;
use std::{fs, io};

use super::{
    checked_id, dir_names, rename_if_present, sync_dir, Listing, QueueEntry, QueueError,
    QueueState, Spool, Unreadable,
};
use crate::queue::format::{self, Part};
use crate::queue::schedule::{Clock, SystemClock};

impl Spool {
    /// Every message in incoming/, active/, deferred/ and hold/ (by state, then id). Files
    /// whose header cannot be read are left out; see [`Spool::scan`].
    pub fn list(&self) -> Result<Vec<QueueEntry>, QueueError> {
        Ok(self.scan()?.entries)
    }

    /// Like [`Spool::list`], also reporting files that could not be read. Reads headers only.
    pub fn scan(&self) -> Result<Listing, QueueError> {
        let mut listing = Listing::default();
        for state in QueueState::ALL {
            for id in self.ids_in(self.dir(state))? {
                match self.read_header(state, &id) {
                    Ok(Some((envelope, size))) => listing.entries.push(QueueEntry {
                        state,
                        envelope,
                        size,
                    }),
                    Ok(None) => {} // moved on while we looked
                    Err(error) => listing.unreadable.push(Unreadable { state, id, error }),
                }
            }
        }
        Ok(listing)
    }

    /// Move every deferred message to incoming/ so it is tried now (`postqueue -f`).
    pub fn flush(&self) -> Result<usize, QueueError> {
        let mut moved = 0;
        for id in self.ids_in(&self.deferred)? {
            if rename_if_present(&self.deferred.join(&id), &self.incoming.join(&id))? {
                moved += 1;
            }
        }
        if moved > 0 {
            sync_dir(&self.incoming)?;
            sync_dir(&self.deferred)?;
        }
        Ok(moved)
    }

    /// Delete a message in any state, held included (`postsuper -d`); false if there is none
    /// with this id.
    ///
    /// Deleting an active message does not stop a delivery in progress; the runner's later
    /// `defer` or `complete` then fails with [`QueueError::NotActive`].
    pub fn delete(&self, id: &str) -> Result<bool, QueueError> {
        let id = checked_id(id)?;
        for dir in [&self.incoming, &self.deferred, &self.hold, &self.active] {
            let path = dir.join(id);
            match fs::remove_file(&path) {
                Ok(()) => {
                    sync_dir(dir)?;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(QueueError::io(&path)(e)),
            }
        }
        Ok(false)
    }

    /// Hold a waiting message (`postsuper -h`): rename `incoming/<id>` or `deferred/<id>` to
    /// `hold/<id>`, then fsync both directories. False when it is in neither (and not active);
    /// [`QueueError::Busy`] when it is in `active/` (being delivered).
    pub fn hold(&self, id: &str) -> Result<bool, QueueError> {
        let id = checked_id(id)?;
        let held = self.hold.join(id);
        // incoming again last, as in claim: a concurrent flush may move it there meanwhile.
        for dir in [&self.incoming, &self.deferred, &self.incoming] {
            if rename_if_present(&dir.join(id), &held)? {
                sync_dir(&self.hold)?;
                sync_dir(dir)?;
                return Ok(true);
            }
        }
        let active = self.active.join(id);
        if active.symlink_metadata().is_ok() {
            return Err(QueueError::Busy {
                id: id.to_string(),
                location: active.display().to_string(),
            });
        }
        Ok(false)
    }

    /// Release a held message (`postsuper -H`): its envelope records the release (its queue
    /// lifetime starts again, see `Envelope::lifetime_start`), then `hold/<id>` is renamed to
    /// `incoming/<id>` (due at once) and both directories are fsynced. False when it is not
    /// held.
    pub fn release(&self, id: &str) -> Result<bool, QueueError> {
        let id = checked_id(id)?;
        let held = self.hold.join(id);
        if !self.stamp_release(&held, id)? {
            return Ok(false);
        }
        if !rename_if_present(&held, &self.incoming.join(id))? {
            return Ok(false);
        }
        sync_dir(&self.incoming)?;
        sync_dir(&self.hold)?;
        Ok(true)
    }

    /// Rewrites `hold/<id>` with the release time in its envelope: a new file written and
    /// fsynced in tmp/, renamed over the held one (hold/ fsynced), so that a crash leaves one version or the
    /// other, held. A file that cannot be read is left as it is (a claim quarantines it). False
    /// when nothing is held under this id.
    fn stamp_release(&self, held: &Path, id: &str) -> Result<bool, QueueError> {
        let bytes = match fs::read(held) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(QueueError::io(held)(e)),
        };
        let Ok((mut envelope, message)) = format::decode(bytes, self.key.as_deref()) else {
            return Ok(true);
        };
        if envelope.id != id {
            return Ok(true);
        }
        envelope.released(SystemClock.now());
        let tmp = self.tmp.join(format!("{id}.release"));
        let tmp = self.write_file(&tmp, &envelope, &[Part::Bytes(&message)])?;
        if let Err(e) = fs::rename(&tmp, held) {
            let _ = fs::remove_file(&tmp);
            return Err(QueueError::io(held)(e));
        }
        sync_dir(&self.hold)?;
        Ok(true)
    }

    /// The size of a message waiting in incoming/ or deferred/ (what a claim would read), or
    /// `None` when it is in neither or its header is unreadable (a claim then quarantines it).
    pub fn waiting_size(&self, id: &str) -> Option<u64> {
        let id = checked_id(id).ok()?;
        [QueueState::Incoming, QueueState::Deferred]
            .into_iter()
            .find_map(|state| self.read_header(state, id).ok().flatten())
            .map(|(_, size)| size)
    }

    /// Ids in incoming/, oldest first (ids sort by time).
    pub fn incoming_ids(&self) -> Result<Vec<String>, QueueError> {
        self.ids_in(&self.incoming)
    }

    /// Deferred ids with their `next_attempt`, oldest id first. A file whose header cannot be read
    /// is reported as due at time 0, so that a claim quarantines it promptly.
    pub fn deferred(&self) -> Result<Vec<(String, i64)>, QueueError> {
        let mut out = Vec::new();
        for id in self.ids_in(&self.deferred)? {
            match self.read_header(QueueState::Deferred, &id) {
                Ok(Some((envelope, _))) => out.push((id, envelope.next_attempt)),
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(%error, "unreadable deferred queue file");
                    out.push((id, 0));
                }
            }
        }
        Ok(out)
    }

    /// Names of files in corrupt/, sorted.
    pub fn corrupt_ids(&self) -> Result<Vec<String>, QueueError> {
        let mut names = dir_names(&self.corrupt)?;
        names.sort();
        Ok(names)
    }
}

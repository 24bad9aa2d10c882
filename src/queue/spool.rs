//! The spool: queue state as directories under `<data_dir>/queue/`, changed only by rename.
//!
//! ```text
//! queue/tmp/        files being written, and delivered ones kept to be written again
//!                   (`free.*`, [`recycle`]); never acknowledged, deleted by `recover`
//! queue/incoming/   accepted and durable, waiting for the runner
//! queue/active/     claimed by the runner, or written here claimed (`enqueue_claimed`);
//!                   moved back to incoming/ by `recover`
//! queue/deferred/   waiting for `next_attempt` (or `flush`)
//! queue/hold/       held by an administrator (`queue hold`); never delivered until released
//! queue/corrupt/    failed verification; kept for inspection, never delivered
//! ```
//!
//! A file reaches `incoming/` (or `active/`) only after it was written completely and fsynced
//! in `tmp/`; the rename is then made durable by fsyncing the directory, and only after that
//! does `enqueue` return (and the server answer 250). Concurrent callers share directory fsyncs (group
//! commit, [`group_sync`]): each still returns only after an fsync that began after its rename. Every method is blocking; async callers use
//! `spawn_blocking`. Several processes may share one spool: a message has one name in one
//! directory at a time, and `rename` decides who claimed it.
//!
//! The spool is the filesystem backend of [`QueueStore`](super::QueueStore) (implemented in
//! `backend/spool.rs`): the trait states the guarantees, this module how files keep them. The
//! inherent methods below are what the trait calls; file-level helpers ([`Spool::path`],
//! [`Spool::root`], [`Spool::corrupt_ids`]) are for tools and tests that look at the files.
//!
//! A spool opened with the service key ([`Spool::open`], what the server does) writes every file
//! encrypted (format version 2) and reads version 1 and 2; one opened with [`Spool::open_plain`]
//! writes version 1 in clear and quarantines version 2 files it cannot open — for tests of the
//! plain format only.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::backend::{Listing, QueueEntry, QueueState, RecoveryReport, Unreadable};
use super::envelope::Envelope;
use super::error::QueueError;
use super::format::{self, FormatError, HeaderError, Part};
use crate::crypto::keyfile::ServiceKey;
use crate::mail::is_valid_queue_id;
use group_sync::GroupSync;
use recycle::FreeFiles;

const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

/// The queue directories.
#[derive(Clone, Debug)]
pub struct Spool {
    root: PathBuf,
    tmp: PathBuf,
    incoming: PathBuf,
    active: PathBuf,
    deferred: PathBuf,
    hold: PathBuf,
    corrupt: PathBuf,
    /// Seals every file written; `None` only for [`Spool::open_plain`].
    key: Option<Arc<ServiceKey>>,
    /// The shared fsyncs of the directories messages move through.
    syncs: Arc<DirSyncs>,
    /// Files of delivered messages, kept to be written again ([`recycle`]).
    free: Arc<FreeFiles>,
}

/// One group sync per directory that renames and unlinks touch in normal operation.
#[derive(Debug)]
struct DirSyncs {
    tmp: GroupSync,
    incoming: GroupSync,
    active: GroupSync,
    deferred: GroupSync,
}

impl Spool {
    /// Open (creating if needed) the spool under `<data_dir>/queue/`, directories mode 0700.
    /// Every message is written encrypted under a fresh content key wrapped by `key`.
    pub fn open(data_dir: &Path, key: Arc<ServiceKey>) -> Result<Spool, QueueError> {
        Spool::open_with(data_dir, Some(key))
    }

    /// Like [`Spool::open`] without a key: writes the plain version 1 format. Only for tests and
    /// tools that exercise that format; the server always uses [`Spool::open`].
    pub fn open_plain(data_dir: &Path) -> Result<Spool, QueueError> {
        Spool::open_with(data_dir, None)
    }

    fn open_with(data_dir: &Path, key: Option<Arc<ServiceKey>>) -> Result<Spool, QueueError> {
        let root = data_dir.join("queue");
        let spool = Spool {
            tmp: root.join("tmp"),
            incoming: root.join("incoming"),
            active: root.join("active"),
            deferred: root.join("deferred"),
            hold: root.join("hold"),
            corrupt: root.join("corrupt"),
            syncs: Arc::new(DirSyncs {
                tmp: GroupSync::new(root.join("tmp")),
                incoming: GroupSync::new(root.join("incoming")),
                active: GroupSync::new(root.join("active")),
                deferred: GroupSync::new(root.join("deferred")),
            }),
            free: Arc::new(FreeFiles::new(root.join("tmp"))),
            root,
            key,
        };
        make_private_dir(&spool.root)?;
        for dir in spool.dirs() {
            make_private_dir(dir)?;
            sync_dir(dir)?;
        }
        sync_dir(&spool.root)?;
        sync_dir(data_dir)?;
        Ok(spool)
    }

    /// Whether files are written encrypted (opened with a service key).
    pub fn is_encrypted(&self) -> bool {
        self.key.is_some()
    }

    /// `<data_dir>/queue`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a message with `id` lies while in `state`.
    pub fn path(&self, state: QueueState, id: &str) -> PathBuf {
        self.dir(state).join(id)
    }

    /// Startup: delete `tmp/*` (never acknowledged) and move `active/*` back to `incoming/`;
    /// `hold/` is left alone. Run before any runner starts.
    pub fn recover(&self) -> Result<RecoveryReport, QueueError> {
        let mut report = RecoveryReport {
            removed_tmp: self.remove_staged()?,
            requeued: 0,
        };
        for id in self.ids_in(&self.active)? {
            if rename_if_present(&self.active.join(&id), &self.incoming.join(&id))? {
                report.requeued += 1;
            }
        }
        if report.requeued > 0 {
            sync_dir(&self.incoming)?;
            sync_dir(&self.active)?;
        }
        Ok(report)
    }

    /// Deletes everything in `tmp/` (staged content and half-written files, never
    /// acknowledged, and files kept to be written again); returns how many entries went, not
    /// counting the files kept to be written again. The first half of [`Spool::recover`], and
    /// all of it for a backend that stages here but queues elsewhere.
    pub fn remove_staged(&self) -> Result<usize, QueueError> {
        let (mut removed, mut pooled) = (0, 0);
        for name in dir_names(&self.tmp)? {
            let path = self.tmp.join(&name);
            let result = match fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => fs::remove_dir_all(&path),
                Ok(_) => fs::remove_file(&path),
                Err(e) => Err(e),
            };
            match result {
                Ok(()) if recycle::is_pooled(&name) => pooled += 1,
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(QueueError::io(&path)(e)),
            }
        }
        if removed + pooled > 0 {
            sync_dir(&self.tmp)?;
        }
        Ok(removed)
    }

    /// Write a new message durably into `incoming/<id>`. When this returns Ok, the message is on
    /// disk and may be acknowledged.
    pub fn enqueue(&self, envelope: &Envelope, message: &[u8]) -> Result<(), QueueError> {
        self.enqueue_parts(envelope, &[Part::Bytes(message)])
    }

    /// Like [`Spool::enqueue`] for a message made of `parts` (e.g. a new header in front of
    /// staged content), streamed into the queue file.
    pub fn enqueue_parts(&self, envelope: &Envelope, parts: &[Part]) -> Result<(), QueueError> {
        self.write_new(envelope, parts, QueueState::Incoming)
    }

    /// Like [`Spool::enqueue_parts`], but the message goes straight to `active/`, claimed by
    /// this process as if [`Spool::claim`] had followed at once, and is returned as a claim would
    /// return it. A crash before its delivery ends leaves it to [`Spool::recover`], which
    /// requeues it. One fsync of `active/` makes it durable, the directory that the completion of
    /// other deliveries syncs too (they share fsyncs), and there is no rename to claim it.
    pub fn enqueue_claimed(
        &self,
        envelope: &Envelope,
        parts: &[Part],
    ) -> Result<(Envelope, Vec<u8>), QueueError> {
        self.write_new(envelope, parts, QueueState::Active)?;
        let id = checked_id(&envelope.id)?;
        match self.read_active(id)? {
            Some(found) => Ok(found),
            None => Err(QueueError::NotActive {
                id: id.to_string(),
                location: self.active.join(id).display().to_string(),
            }),
        }
    }

    /// Writes a new message durably into `incoming/` or `active/` (`state`).
    fn write_new(
        &self,
        envelope: &Envelope,
        parts: &[Part],
        state: QueueState,
    ) -> Result<(), QueueError> {
        let id = checked_id(&envelope.id)?;
        for held_in in QueueState::ALL {
            let path = self.path(held_in, id);
            if path.symlink_metadata().is_ok() {
                return Err(QueueError::Exists {
                    id: id.to_string(),
                    location: path.display().to_string(),
                });
            }
        }
        let tmp = self.write_file(&self.tmp.join(format!("{id}.new")), envelope, parts)?;
        let (target, sync) = match state {
            QueueState::Active => (self.active.join(id), &self.syncs.active),
            _ => (self.incoming.join(id), &self.syncs.incoming),
        };
        if let Err(e) = fs::rename(&tmp, &target) {
            let _ = fs::remove_file(&tmp);
            return Err(QueueError::io(&target)(e));
        }
        sync.sync()
    }

    /// Directory fsyncs made by this spool (and its clones) for enqueue, defer, checkpoint and
    /// complete: fewer than those calls when they run concurrently (group commit).
    pub fn directory_fsyncs(&self) -> u64 {
        let s = &self.syncs;
        [&s.tmp, &s.incoming, &s.active, &s.deferred]
            .iter()
            .map(|g| g.fsyncs())
            .sum()
    }

    /// Take a message for delivery: rename `incoming/<id>` or `deferred/<id>` to `active/<id>`,
    /// then read and verify it.
    ///
    /// `Ok(None)` when it is in neither place (another runner has it, or it was deleted). A file
    /// that fails verification or decryption (altered ciphertext or wrap, sealed under another
    /// service key, or encrypted while this spool has none) is moved to `corrupt/` and reported
    /// as [`QueueError::Corrupt`]; it is never returned by any later call.
    pub fn claim(&self, id: &str) -> Result<Option<(Envelope, Vec<u8>)>, QueueError> {
        let id = checked_id(id)?;
        let active = self.active.join(id);
        // incoming again last: a concurrent flush may move it there while we look in deferred/.
        let mut claimed = false;
        for dir in [&self.incoming, &self.deferred, &self.incoming] {
            if rename_if_present(&dir.join(id), &active)? {
                claimed = true;
                break;
            }
        }
        if !claimed {
            return Ok(None);
        }
        self.read_active(id)
    }

    /// Reads and verifies `active/<id>` (see [`Spool::claim`]); quarantines it when it does not
    /// verify. `Ok(None)` when it is not there.
    fn read_active(&self, id: &str) -> Result<Option<(Envelope, Vec<u8>)>, QueueError> {
        let active = self.active.join(id);
        let bytes = match fs::read(&active) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(QueueError::io(&active)(e)),
        };
        let verified =
            format::decode(bytes, self.key.as_deref()).and_then(|(envelope, message)| {
                check_envelope_id(id, &envelope)?;
                Ok((envelope, message))
            });
        match verified {
            Ok(found) => Ok(Some(found)),
            Err(reason) => {
                let path = self.quarantine(id)?;
                tracing::error!(id, path = %path.display(), %reason, "queue file quarantined");
                Err(corrupt(&path, reason))
            }
        }
    }

    /// Store the updated envelope of an active message and move it to `deferred/`.
    pub fn defer(&self, envelope: &Envelope, message: &[u8]) -> Result<(), QueueError> {
        let active = self.rewrite_active(envelope, message)?;
        let deferred = self.deferred.join(checked_id(&envelope.id)?);
        fs::rename(&active, &deferred).map_err(QueueError::io(&deferred))?;
        self.syncs.deferred.sync()?;
        self.syncs.active.sync()?;
        self.syncs.tmp.sync()
    }

    /// Store the updated envelope of an active message that stays active: the recipients
    /// delivered so far are on disk before the runner moves on to the next destination, so a
    /// crash in between does not deliver to them again. `recover` requeues it as written here.
    pub fn checkpoint(&self, envelope: &Envelope, message: &[u8]) -> Result<(), QueueError> {
        self.rewrite_active(envelope, message)?;
        self.syncs.active.sync()?;
        self.syncs.tmp.sync()
    }

    /// Replaces `active/<id>` by a new file with `envelope` (written in tmp/ and fsynced, then
    /// renamed over it); the caller syncs the directories. Fails when the message is not active.
    fn rewrite_active(&self, envelope: &Envelope, message: &[u8]) -> Result<PathBuf, QueueError> {
        let id = checked_id(&envelope.id)?;
        let active = self.active.join(id);
        if active.symlink_metadata().is_err() {
            return Err(QueueError::NotActive {
                id: id.to_string(),
                location: active.display().to_string(),
            });
        }
        let tmp = self.tmp.join(format!("{id}.update"));
        let tmp = self.write_file(&tmp, envelope, &[Part::Bytes(message)])?;
        if let Err(e) = fs::rename(&tmp, &active) {
            let _ = fs::remove_file(&tmp);
            return Err(QueueError::io(&active)(e));
        }
        Ok(active)
    }

    /// Remove a message whose recipients are all done (its file goes to the pool of files to
    /// write again, or is removed when the pool is full).
    pub fn complete(&self, id: &str) -> Result<(), QueueError> {
        let id = checked_id(id)?;
        let active = self.active.join(id);
        match self.free.put(&active) {
            Ok(()) => self.syncs.active.sync(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(QueueError::NotActive {
                id: id.to_string(),
                location: active.display().to_string(),
            }),
            Err(e) => Err(QueueError::io(&active)(e)),
        }
    }

    fn dirs(&self) -> [&PathBuf; 6] {
        [
            &self.tmp,
            &self.incoming,
            &self.active,
            &self.deferred,
            &self.hold,
            &self.corrupt,
        ]
    }

    fn dir(&self, state: QueueState) -> &Path {
        match state {
            QueueState::Incoming => &self.incoming,
            QueueState::Active => &self.active,
            QueueState::Deferred => &self.deferred,
            QueueState::Hold => &self.hold,
        }
    }

    /// Valid queue ids among the names in `dir`, sorted; other names are logged and skipped.
    fn ids_in(&self, dir: &Path) -> Result<Vec<String>, QueueError> {
        let mut ids: Vec<String> = dir_names(dir)?
            .into_iter()
            .filter(|name| {
                let ok = is_valid_queue_id(name);
                if !ok {
                    tracing::warn!(dir = %dir.display(), name, "ignoring stray file in queue");
                }
                ok
            })
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// The envelope and message size of one file, `None` if it is gone.
    fn read_header(
        &self,
        state: QueueState,
        id: &str,
    ) -> Result<Option<(Envelope, u64)>, QueueError> {
        let path = self.path(state, id);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(QueueError::io(&path)(e)),
        };
        let len = file.metadata().map_err(QueueError::io(&path))?.len();
        let header = match format::read_header(BufReader::new(file), len) {
            Ok(header) => header,
            Err(HeaderError::Io(e)) => return Err(QueueError::io(&path)(e)),
            Err(HeaderError::Format(reason)) => return Err(corrupt(&path, reason)),
        };
        if let Err(reason) = check_envelope_id(id, &header.envelope) {
            return Err(corrupt(&path, reason));
        }
        Ok(Some((header.envelope, header.message_len)))
    }

    /// Write a complete queue file in `tmp/` and fsync it; on failure remove it. Returns where
    /// it is: a delivered message's file if one is free (see [`recycle`]), else a new file at
    /// `path` (mode 0600). The caller renames it where it belongs.
    fn write_file(
        &self,
        path: &Path,
        envelope: &Envelope,
        parts: &[Part],
    ) -> Result<PathBuf, QueueError> {
        let (path, file) = match self.free.take() {
            Some(pooled) => pooled,
            None => {
                let file = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(FILE_MODE)
                    .open(path)
                    .map_err(QueueError::io(path))?;
                (path.to_path_buf(), file)
            }
        };
        let written = (|| -> io::Result<()> {
            // Large enough for a small message whole, at most 64 KiB: a block of 64 KiB or
            // more makes glibc's free() consolidate and trim its heap, every message.
            let size: u64 = parts.iter().map(|p| p.len()).sum();
            let capacity = usize::try_from(size).unwrap_or(usize::MAX);
            let capacity = capacity.saturating_add(4096).min(60 * 1024);
            let mut out = BufWriter::with_capacity(capacity, file);
            format::encode_parts_to(&mut out, envelope, parts, self.key.as_deref())?;
            out.flush()?;
            let file = out.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()
        })();
        match written {
            Ok(()) => Ok(path),
            Err(e) => {
                let _ = fs::remove_file(&path);
                Err(QueueError::io(&path)(e))
            }
        }
    }

    /// Move `active/<id>` to `corrupt/` under a name not yet taken there; returns the new path.
    fn quarantine(&self, id: &str) -> Result<PathBuf, QueueError> {
        let mut target = self.corrupt.join(id);
        let mut n = 1u32;
        while target.symlink_metadata().is_ok() {
            target = self.corrupt.join(format!("{id}.{n}"));
            n += 1;
        }
        let active = self.active.join(id);
        fs::rename(&active, &target).map_err(QueueError::io(&active))?;
        sync_dir(&self.corrupt)?;
        sync_dir(&self.active)?;
        Ok(target)
    }
}

fn checked_id(id: &str) -> Result<&str, QueueError> {
    if is_valid_queue_id(id) {
        Ok(id)
    } else {
        Err(QueueError::InvalidId { id: id.to_string() })
    }
}

fn corrupt(path: &Path, reason: FormatError) -> QueueError {
    QueueError::Corrupt {
        location: path.display().to_string(),
        reason,
    }
}

fn check_envelope_id(id: &str, envelope: &Envelope) -> Result<(), FormatError> {
    if envelope.id == id {
        Ok(())
    } else {
        Err(FormatError::IdMismatch {
            expected: id.to_string(),
            found: envelope.id.clone(),
        })
    }
}

/// Rename `from` to `to`; false if `from` does not exist (someone else moved or deleted it).
fn rename_if_present(from: &Path, to: &Path) -> Result<bool, QueueError> {
    match fs::rename(from, to) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(QueueError::io(from)(e)),
    }
}

/// Create `dir` (and parents) if missing, and make sure it is mode 0700.
fn make_private_dir(dir: &Path) -> Result<(), QueueError> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(QueueError::io(dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE)).map_err(QueueError::io(dir))
}

/// Make the directory's entries (creations, renames, unlinks) durable, alone (startup,
/// recovery, rare moves); the per-message paths share fsyncs through [`GroupSync`].
fn sync_dir(dir: &Path) -> Result<(), QueueError> {
    group_sync::fsync_dir(dir).map_err(QueueError::io(dir))
}

/// File names in `dir` (UTF-8 ones; others cannot be queue ids and are skipped).
fn dir_names(dir: &Path) -> Result<Vec<String>, QueueError> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(QueueError::io(dir))? {
        let entry = entry.map_err(QueueError::io(dir))?;
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    Ok(names)
}

#[cfg(test)]
mod sealed_tests;

mod admin;
mod group_sync;
mod health;
mod recycle;
mod staging;
#[cfg(test)]
mod tests;

pub use staging::{Staged, Staging, Tail, HEAD_LIMIT};

//! Standard Maildirs: the writer behind `mailbox export`, and the plain Maildir store of the first
//! issue (one Maildir per mailbox under `<data_dir>/mailboxes/<address>/`), no longer used for
//! delivery: local mailboxes live in `EncryptedStore`. Delivery tags (`deliver_once`) live apart
//! from the Maildirs, in `<data_dir>/mailboxes/.deliveries/<address>/`, where no Maildir reader
//! looks and no mailbox name can reach.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::index::DELIVERY_TAG_DAYS;
use super::{summarize, MailStore, MessageSummary, StoreError};
use crate::mail::new_queue_id;

/// Messages stored as files in standard Maildirs (`tmp/`, `new/`, `cur/`), readable by any Maildir
/// reader. Delivery writes to `tmp/`, fsyncs, renames into `new/` and fsyncs `new/`.
pub struct PlainMaildirStore {
    root: PathBuf,
}

/// The directory of delivery tags under the store's root (a name no mailbox can have).
const TAGS: &str = ".deliveries";

impl PlainMaildirStore {
    /// The store under `<data_dir>/mailboxes`; delivery tags older than
    /// `index::DELIVERY_TAG_DAYS` are forgotten (as `EncryptedStore::open` does).
    pub fn new(data_dir: &Path) -> Self {
        let store = PlainMaildirStore {
            root: data_dir.join("mailboxes"),
        };
        let age = Duration::from_secs(DELIVERY_TAG_DAYS as u64 * 86_400);
        if let Some(before) = SystemTime::now().checked_sub(age) {
            if let Err(e) = store.prune_deliveries(before) {
                tracing::warn!("old delivery tags not removed: {e}");
            }
        }
        store
    }

    /// Forgets delivery tags written before `before`; returns how many.
    pub fn prune_deliveries(&self, before: SystemTime) -> Result<usize, StoreError> {
        let root = self.root.join(TAGS);
        let mut removed = 0;
        for dir in read_dir_paths(&root)? {
            for tag in read_dir_paths(&dir)? {
                let old = fs::symlink_metadata(&tag)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t < before);
                if old {
                    fs::remove_file(&tag).map_err(|e| StoreError::io(&tag, e))?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    fn mailbox_dir(&self, mailbox: &str) -> Result<PathBuf, StoreError> {
        let name = mailbox.to_ascii_lowercase();
        if name.is_empty() || name.contains('/') || name.starts_with('.') || !name.contains('@') {
            return Err(StoreError::NoSuchMailbox(mailbox.to_string()));
        }
        Ok(self.root.join(name))
    }

    /// A message id is a file name we wrote: hex digits only.
    fn message_path(&self, mailbox: &str, id: &str) -> Result<PathBuf, StoreError> {
        let dir = self.mailbox_dir(mailbox)?;
        let valid = !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit());
        let missing = || StoreError::NoSuchMessage {
            mailbox: mailbox.to_string(),
            id: id.to_string(),
        };
        if !valid {
            return Err(missing());
        }
        ["new", "cur"]
            .iter()
            .map(|sub| dir.join(sub).join(id))
            .find(|p| p.is_file())
            .ok_or_else(missing)
    }
}

fn sync_dir(path: &Path) -> Result<(), StoreError> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(path, e))
}

fn ensure_dir(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::DirBuilderExt;
    if path.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| StoreError::io(path, e))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Writes one message into the Maildir `dir` (creating `tmp/`, `new/`, `cur/`): to `tmp/`,
/// fsync, rename into `new/<name>`, fsync `new/`. `name` must be a plain file name.
pub fn write_maildir_message(dir: &Path, name: &str, message: &[u8]) -> Result<(), StoreError> {
    write_maildir_file(dir, name, message, None)
}

/// Like [`write_maildir_message`]; with `info` (the flag letters of a message already seen by
/// its reader, e.g. "FS"), the file goes to `cur/` as `name:2,info` instead of `new/`.
pub fn write_maildir_file(
    dir: &Path,
    name: &str,
    message: &[u8],
    info: Option<&str>,
) -> Result<(), StoreError> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(StoreError::Internal(format!(
            "bad Maildir file name {name:?}"
        )));
    }
    for sub in ["tmp", "new", "cur"] {
        ensure_dir(&dir.join(sub))?;
    }
    let tmp = dir.join("tmp").join(name);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| StoreError::io(&tmp, e))?;
    f.write_all(message)
        .and_then(|_| f.sync_all())
        .map_err(|e| StoreError::io(&tmp, e))?;
    let (sub, file) = match info {
        Some(info) => ("cur", format!("{name}:2,{info}")),
        None => ("new", name.to_string()),
    };
    let to = dir.join(sub).join(file);
    fs::rename(&tmp, &to).map_err(|e| StoreError::io(&to, e))?;
    sync_dir(&dir.join(sub))
}

/// The entries of a directory (none if it does not exist).
fn read_dir_paths(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.map(|e| e.path()).map_err(|e| StoreError::io(dir, e)))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(StoreError::io(dir, e)),
    }
}

/// The file name of a delivery key's tag: a hash, never the key itself.
fn tag_name(delivery: &str) -> String {
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        &[&b"sealpost delivery v1\0"[..], delivery.as_bytes()].concat(),
    );
    hex::encode(digest.as_ref())
}

/// The message id a tag names, or `None` if there is no such tag.
fn read_tag(path: &Path) -> Result<Option<String>, StoreError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io(path, e)),
    };
    let id = text.trim_end();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(StoreError::Integrity(format!(
            "delivery tag {} does not name a message",
            path.display()
        )));
    }
    Ok(Some(id.to_string()))
}

/// Writes a tag naming `id` durably and atomically (a whole file or none).
fn write_tag(path: &Path, id: &str) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| StoreError::io(&tmp, e))?;
    f.write_all(format!("{id}\n").as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| StoreError::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| StoreError::io(path, e))?;
    sync_dir(dir)
}

/// Whether message `id` is in the Maildir `dir` (`new/`, or `cur/` with or without flags).
fn present(dir: &Path, id: &str) -> Result<bool, StoreError> {
    if dir.join("new").join(id).is_file() || dir.join("cur").join(id).is_file() {
        return Ok(true);
    }
    let flagged = format!("{id}:");
    Ok(read_dir_paths(&dir.join("cur"))?.iter().any(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(&flagged))
    }))
}

impl MailStore for PlainMaildirStore {
    fn deliver(&self, mailbox: &str, message: &[u8]) -> Result<String, StoreError> {
        let dir = self.mailbox_dir(mailbox)?;
        let id = new_queue_id();
        write_maildir_message(&dir, &id, message)?;
        Ok(id)
    }

    /// At most once per key and mailbox, with a tag in `.deliveries/<mailbox>/`: first
    /// `<hash>.pending` naming the id the message will have, fsynced; then the message under that
    /// id; then the tag renamed to `<hash>` (done). A done tag returns its id whether or not the
    /// message is still there (it may have been read and deleted). A pending tag, left by a crash,
    /// finishes the delivery: the message is written under the named id unless it is already in
    /// `new/` or `cur/`. Deliveries of one key are not serialized between processes (the queue
    /// runner delivers a queue file from one worker at a time).
    fn deliver_once(
        &self,
        mailbox: &str,
        message: &[u8],
        delivery: &str,
    ) -> Result<String, StoreError> {
        let dir = self.mailbox_dir(mailbox)?;
        let name = tag_name(delivery);
        let tags = self.root.join(TAGS).join(mailbox.to_ascii_lowercase());
        let done = tags.join(&name);
        if let Some(id) = read_tag(&done)? {
            return Ok(id);
        }
        let pending = tags.join(format!("{name}.pending"));
        let id = match read_tag(&pending)? {
            Some(id) if present(&dir, &id)? => id,
            Some(id) => {
                // Not committed before the crash: start the message again from `tmp/`.
                let tmp = dir.join("tmp").join(&id);
                match fs::remove_file(&tmp) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(StoreError::io(&tmp, e))
                    }
                    _ => {}
                }
                write_maildir_message(&dir, &id, message)?;
                id
            }
            None => {
                ensure_dir(&self.root.join(TAGS))?;
                ensure_dir(&tags)?;
                let id = new_queue_id();
                write_tag(&pending, &id)?;
                write_maildir_message(&dir, &id, message)?;
                id
            }
        };
        fs::rename(&pending, &done).map_err(|e| StoreError::io(&done, e))?;
        sync_dir(&tags)?;
        Ok(id)
    }

    fn list(&self, mailbox: &str) -> Result<Vec<MessageSummary>, StoreError> {
        self.ids(mailbox)?
            .iter()
            .map(|id| self.read(mailbox, id).map(|bytes| summarize(id, &bytes)))
            .collect()
    }

    fn read(&self, mailbox: &str, id: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.message_path(mailbox, id)?;
        fs::read(&path).map_err(|e| StoreError::io(&path, e))
    }

    fn count(&self, mailbox: &str) -> Result<usize, StoreError> {
        self.ids(mailbox).map(|ids| ids.len())
    }
}

impl PlainMaildirStore {
    /// Message ids (file names in `new/` and `cur/`), oldest first.
    fn ids(&self, mailbox: &str) -> Result<Vec<String>, StoreError> {
        let dir = self.mailbox_dir(mailbox)?;
        if !dir.is_dir() {
            return Ok(Vec::new());
        }
        let mut ids = Vec::new();
        for sub in ["new", "cur"] {
            let path = dir.join(sub);
            let entries = match fs::read_dir(&path) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io(&path, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| StoreError::io(&path, e))?;
                if let Some(name) = entry.file_name().to_str() {
                    ids.push(name.to_string());
                }
            }
        }
        ids.sort();
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliver_list_read_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = PlainMaildirStore::new(dir.path());
        let msg = b"From: Alice <alice@a.test>\r\nSubject: hello\r\nDate: Sun, 22 Nov 2026 10:00:00 +0000\r\n\r\nbody\r\n";
        let id = store.deliver("Bob@B.test", msg).unwrap();
        let second = store
            .deliver("bob@b.test", b"Subject: two\r\n\r\nx\r\n")
            .unwrap();
        let list = store.list("bob@b.test").unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].id, id);
        assert_eq!(list[0].from, "alice@a.test");
        assert_eq!(list[0].subject, "hello");
        assert!(
            list[0].date.starts_with("2026-11-22T10:00:00"),
            "{}",
            list[0].date
        );
        assert_eq!(list[1].id, second);
        assert_eq!(store.read("bob@b.test", &id).unwrap(), msg);
        assert!(dir
            .path()
            .join("mailboxes/bob@b.test/new")
            .join(&id)
            .is_file());
        assert!(store.list("nobody@b.test").unwrap().is_empty());
        assert_eq!(store.count("bob@b.test").unwrap(), 2);
        assert_eq!(store.count("nobody@b.test").unwrap(), 0);
    }

    #[test]
    fn ids_and_mailboxes_cannot_escape_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = PlainMaildirStore::new(dir.path());
        store.deliver("bob@b.test", b"x").unwrap();
        assert!(matches!(
            store.read("bob@b.test", "../../etc/passwd"),
            Err(StoreError::NoSuchMessage { .. })
        ));
        assert!(matches!(
            store.deliver("../x@b.test", b"x"),
            Err(StoreError::NoSuchMailbox(_))
        ));
        assert!(matches!(
            store.read("bob@b.test", "ABCDEF"),
            Err(StoreError::NoSuchMessage { .. })
        ));
    }

    #[test]
    fn deliver_once_stores_a_delivery_key_once_per_mailbox() {
        let dir = tempfile::tempdir().unwrap();
        let store = PlainMaildirStore::new(dir.path());
        let id = store.deliver_once("bob@b.test", b"one", "Q1/bob").unwrap();
        assert_eq!(
            store.deliver_once("Bob@b.test", b"one", "Q1/bob").unwrap(),
            id
        );
        assert_eq!(store.count("bob@b.test").unwrap(), 1);
        let other = store.deliver_once("bob@b.test", b"two", "Q2/bob").unwrap();
        assert_ne!(other, id);
        let elsewhere = store.deliver_once("eve@b.test", b"one", "Q1/bob").unwrap();
        assert_ne!(elsewhere, id);
        assert_eq!(store.count("bob@b.test").unwrap(), 2);
        assert_eq!(store.count("eve@b.test").unwrap(), 1);
        assert_eq!(store.read("bob@b.test", &id).unwrap(), b"one");

        // Read and deleted: the key is still delivered, nothing is stored again.
        std::fs::remove_file(dir.path().join("mailboxes/bob@b.test/new").join(&id)).unwrap();
        assert_eq!(
            store.deliver_once("bob@b.test", b"one", "Q1/bob").unwrap(),
            id
        );
        assert_eq!(store.count("bob@b.test").unwrap(), 1);
        // The tags are not in the Maildir, and do not name the key.
        let tags = dir.path().join("mailboxes/.deliveries/bob@b.test");
        let names: Vec<_> = read_dir_paths(&tags).unwrap();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names.iter().all(|p| !p.to_string_lossy().contains("Q1")));
        assert!(store.list(".deliveries").is_err());
    }

    #[test]
    fn a_delivery_interrupted_by_a_crash_is_finished_under_its_tag() {
        let dir = tempfile::tempdir().unwrap();
        let store = PlainMaildirStore::new(dir.path());
        let tags = dir.path().join("mailboxes/.deliveries/bob@b.test");
        std::fs::create_dir_all(&tags).unwrap();
        let mailbox = dir.path().join("mailboxes/bob@b.test");

        // Crashed after the tag, before the message was committed (a partial copy in tmp/).
        write_tag(
            &tags.join(format!("{}.pending", tag_name("Q1/bob"))),
            "0A1B",
        )
        .unwrap();
        std::fs::create_dir_all(mailbox.join("tmp")).unwrap();
        std::fs::write(mailbox.join("tmp/0A1B"), b"on").unwrap();
        assert_eq!(
            store.deliver_once("bob@b.test", b"one", "Q1/bob").unwrap(),
            "0A1B"
        );
        assert_eq!(store.read("bob@b.test", "0A1B").unwrap(), b"one");
        assert!(tags.join(tag_name("Q1/bob")).is_file());

        // Crashed after the message was committed (and read: flags in cur/), before the tag was
        // marked done: not stored again.
        write_tag(
            &tags.join(format!("{}.pending", tag_name("Q2/bob"))),
            "0C2D",
        )
        .unwrap();
        std::fs::create_dir_all(mailbox.join("cur")).unwrap();
        std::fs::write(mailbox.join("cur/0C2D:2,S"), b"two").unwrap();
        assert_eq!(
            store.deliver_once("bob@b.test", b"two", "Q2/bob").unwrap(),
            "0C2D"
        );
        assert_eq!(store.count("bob@b.test").unwrap(), 2);

        // A tag that names no message is an integrity error, not a new delivery.
        std::fs::write(tags.join(tag_name("Q3/bob")), b"../x\n").unwrap();
        assert!(matches!(
            store.deliver_once("bob@b.test", b"three", "Q3/bob"),
            Err(StoreError::Integrity(_))
        ));
    }

    #[test]
    fn old_delivery_tags_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let store = PlainMaildirStore::new(dir.path());
        store.deliver_once("bob@b.test", b"one", "Q1/bob").unwrap();
        let past = SystemTime::now() - Duration::from_secs(3600);
        assert_eq!(store.prune_deliveries(past).unwrap(), 0);
        let future = SystemTime::now() + Duration::from_secs(3600);
        assert_eq!(store.prune_deliveries(future).unwrap(), 1);
        let again = store.deliver_once("bob@b.test", b"one", "Q1/bob").unwrap();
        assert_eq!(store.count("bob@b.test").unwrap(), 2, "{again}");
    }
}

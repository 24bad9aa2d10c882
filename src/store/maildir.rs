//! Standard Maildirs: the writer behind `mailbox export`, and the plain Maildir store of the first
//! issue (one Maildir per mailbox under `<data_dir>/mailboxes/<address>/`), no longer used for
//! delivery: local mailboxes live in `EncryptedStore`.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{summarize, MailStore, MessageSummary, StoreError};
use crate::mail::new_queue_id;

/// Messages stored as files in standard Maildirs (`tmp/`, `new/`, `cur/`), readable by any Maildir
/// reader. Delivery writes to `tmp/`, fsyncs, renames into `new/` and fsyncs `new/`.
pub struct PlainMaildirStore {
    root: PathBuf,
}

impl PlainMaildirStore {
    pub fn new(data_dir: &Path) -> Self {
        PlainMaildirStore {
            root: data_dir.join("mailboxes"),
        }
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
    let new = dir.join("new").join(name);
    fs::rename(&tmp, &new).map_err(|e| StoreError::io(&new, e))?;
    sync_dir(&dir.join("new"))
}

impl MailStore for PlainMaildirStore {
    fn deliver(&self, mailbox: &str, message: &[u8]) -> Result<String, StoreError> {
        let dir = self.mailbox_dir(mailbox)?;
        let id = new_queue_id();
        write_maildir_message(&dir, &id, message)?;
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
}

//! The blob store: one file per message under `store/blobs/xx/<opaque name>`, holding ciphertext
//! (or, for mailboxes under policy "none", the checksummed message), written durably.
//!
//! A blob file is `"SPB1"`, one kind byte, then the body: kind 0 the plain message, kind 1
//! AES-256-GCM chunks bound to the message id, kind 2 chunks bound to mailbox and message id.
//! Names are 128 random bits in hex, unrelated to message ids; only the index maps one to the other.
//!
//! [`BlobStore`] is the seam: these files, or rows of a database shared by several nodes
//! (`backend::pg_blobs`), holding the same framed bytes.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::StoreError;

const MAGIC: &[u8; 4] = b"SPB1";
pub const HEADER_LEN: usize = 5;

/// What a blob's body holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobKind {
    Plain = 0,
    /// Chunks whose AAD binds the message id (written before messages were bound to mailboxes).
    Encrypted = 1,
    /// Chunks whose AAD binds the mailbox and the message id.
    MailboxBound = 2,
}

/// A blob opened for reading piece by piece.
pub trait BlobRead: Read + Seek + Send {}
impl<T: Read + Seek + Send> BlobRead for T {}

/// An opened blob and its length in bytes.
pub type OpenBlob = (Box<dyn BlobRead>, u64);

/// Where sealed blobs are kept. A blob is written once under a fresh name and never rewritten;
/// the index row that names it is committed after it is durable, and it is removed after the row
/// is gone (a blob without a row is an orphan, never a message).
pub trait BlobStore: Send + Sync {
    /// Writes a new blob durably; an existing name is an error.
    fn write(&self, name: &str, framed: &[u8]) -> Result<(), StoreError>;
    /// A whole blob, `None` when there is none by that name.
    fn read(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// A blob opened for reading, `None` when there is none by that name.
    fn open(&self, name: &str) -> Result<Option<OpenBlob>, StoreError>;
    /// Removes a blob; a missing one is not an error.
    fn remove(&self, name: &str) -> Result<(), StoreError>;
    /// Every blob name, sorted.
    fn list(&self) -> Result<Vec<String>, StoreError>;
    /// Where a blob is, for error messages (a file, or a row of a table).
    fn location(&self, name: &str) -> PathBuf;
}

/// The blob files of one store.
pub struct Blobs {
    root: PathBuf,
}

/// The kind of a blob file, or `None` when its header is not ours.
pub fn kind(data: &[u8]) -> Option<BlobKind> {
    match (data.get(..4), data.get(4)) {
        (Some(m), Some(0)) if m == MAGIC => Some(BlobKind::Plain),
        (Some(m), Some(1)) if m == MAGIC => Some(BlobKind::Encrypted),
        (Some(m), Some(2)) if m == MAGIC => Some(BlobKind::MailboxBound),
        _ => None,
    }
}

/// Whether `name` is a blob name we make: 32 lowercase hex digits.
pub fn valid_name(name: &str) -> bool {
    name.len() == 32
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn sync_dir(path: &Path) -> Result<(), StoreError> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(path, e))
}

impl Blobs {
    pub fn new(store_dir: &Path) -> Blobs {
        Blobs {
            root: store_dir.join("blobs"),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A fresh random blob name.
    pub fn new_name() -> Result<String, StoreError> {
        let mut b = [0u8; 16];
        aws_lc_rs::rand::fill(&mut b)
            .map_err(|_| StoreError::Internal("random generator failed".into()))?;
        Ok(hex::encode(b))
    }

    /// The file of a blob name (names come from the index: checked before use).
    pub fn path(&self, name: &str) -> Result<PathBuf, StoreError> {
        if !valid_name(name) {
            return Err(StoreError::Internal(format!(
                "bad blob name in index: {name:?}"
            )));
        }
        Ok(self.root.join(&name[..2]).join(name))
    }

    /// A blob's header followed by `body`, allocated once.
    pub fn frame(kind: BlobKind, body_len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEADER_LEN + body_len);
        v.extend_from_slice(MAGIC);
        v.push(kind as u8);
        v
    }

    /// Writes a framed blob to a new file, fsyncs it and its directory.
    pub fn write(&self, name: &str, framed: &[u8]) -> Result<(), StoreError> {
        let path = self.path(name)?;
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        if !dir.is_dir() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|e| StoreError::io(&dir, e))?;
            sync_dir(&self.root)?;
        }
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        f.write_all(framed)
            .and_then(|_| f.sync_all())
            .map_err(|e| StoreError::io(&path, e))?;
        sync_dir(&dir)
    }

    /// Reads a whole blob file (see `kind`; the body starts at `HEADER_LEN`).
    pub fn read(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.path(name)?;
        fs::read(&path).map_err(|e| StoreError::io(&path, e))
    }

    /// Removes a blob (after the index stopped referring to it).
    pub fn remove(&self, name: &str) -> Result<(), StoreError> {
        let path = self.path(name)?;
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(path.parent().unwrap_or(&self.root)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }

    /// Every blob name on disk.
    pub fn list(&self) -> Result<Vec<String>, StoreError> {
        let mut names = Vec::new();
        let outer = match fs::read_dir(&self.root) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
            Err(e) => return Err(StoreError::io(&self.root, e)),
        };
        for sub in outer {
            let sub = sub.map_err(|e| StoreError::io(&self.root, e))?.path();
            if !sub.is_dir() {
                continue;
            }
            for entry in fs::read_dir(&sub).map_err(|e| StoreError::io(&sub, e))? {
                let entry = entry.map_err(|e| StoreError::io(&sub, e))?;
                if let Some(n) = entry.file_name().to_str() {
                    names.push(n.to_string());
                }
            }
        }
        names.sort();
        Ok(names)
    }
}

impl BlobStore for Blobs {
    fn write(&self, name: &str, framed: &[u8]) -> Result<(), StoreError> {
        Blobs::write(self, name, framed)
    }

    fn read(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path(name)?;
        match fs::read(&path) {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }

    fn open(&self, name: &str) -> Result<Option<OpenBlob>, StoreError> {
        let path = self.path(name)?;
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io(&path, e)),
        };
        let len = file.metadata().map_err(|e| StoreError::io(&path, e))?.len();
        Ok(Some((Box::new(file), len)))
    }

    fn remove(&self, name: &str) -> Result<(), StoreError> {
        Blobs::remove(self, name)
    }

    fn list(&self) -> Result<Vec<String>, StoreError> {
        Blobs::list(self)
    }

    fn location(&self, name: &str) -> PathBuf {
        self.path(name).unwrap_or_else(|_| self.root.join(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_list_remove() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::new(dir.path());
        let name = Blobs::new_name().unwrap();
        assert!(valid_name(&name));
        let mut framed = Blobs::frame(BlobKind::MailboxBound, 3);
        framed.extend_from_slice(b"abc");
        blobs.write(&name, &framed).unwrap();
        let data = blobs.read(&name).unwrap();
        assert_eq!(kind(&data), Some(BlobKind::MailboxBound));
        assert_eq!(kind(b"SPB1\x01"), Some(BlobKind::Encrypted));
        assert_eq!(kind(b"SPB1\x03"), None);
        assert_eq!(&data[HEADER_LEN..], b"abc");
        assert_eq!(blobs.list().unwrap(), vec![name.clone()]);
        assert!(blobs.write(&name, &framed).is_err(), "never overwrites");
        blobs.remove(&name).unwrap();
        assert!(blobs.list().unwrap().is_empty());
        assert!(blobs.path("../../etc/passwd").is_err());
    }
}

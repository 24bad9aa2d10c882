//! Sealed blobs as rows of `store_blob` (schema `src/pg/schema/003_mailbox_store.sql`): one
//! `bytea` per blob holding exactly the framed bytes a blob file holds. A blob is committed on its
//! own before the index row naming it, as a file is synced before it; once the commit returns it
//! is durable. One row per blob, not chunks: a message is bounded by the server's size limit, far
//! below `bytea`'s 1 GB, and the column is stored uncompressed (`STORAGE EXTERNAL`: ciphertext does
//! not compress). That also lets PostgreSQL read a slice of it without the rest, so a blob opened
//! for reading piece by piece ([`BlobStore::open`]) is fetched a [`WINDOW`] at a time: a large
//! message streams to an IMAP client without ever being whole in memory.

use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;

use crate::pg::Database;
use crate::store::blobs::{valid_name, BlobStore, OpenBlob};
use crate::store::StoreError;

/// How much of a blob one read from the database fetches.
pub const WINDOW: usize = 256 * 1024;

/// The blobs of a store in its database.
pub struct PgBlobs {
    db: Arc<Database>,
}

impl PgBlobs {
    pub fn new(db: Arc<Database>) -> PgBlobs {
        PgBlobs { db }
    }
}

/// A name from the index, checked before use like a file name.
fn checked(name: &str) -> Result<String, StoreError> {
    if !valid_name(name) {
        return Err(StoreError::Internal(format!(
            "bad blob name in index: {name:?}"
        )));
    }
    Ok(name.to_string())
}

impl BlobStore for PgBlobs {
    fn write(&self, name: &str, framed: &[u8]) -> Result<(), StoreError> {
        let name = checked(name)?;
        let data = framed.to_vec();
        self.db.run(|pool| async move {
            let c = crate::pg::connection(&pool).await?;
            c.execute(
                "INSERT INTO store_blob (name, data) VALUES ($1, $2)",
                &[&name, &data],
            )
            .await?;
            Ok(())
        })?;
        Ok(())
    }

    fn read(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let name = checked(name)?;
        Ok(self.db.run(|pool| async move {
            let c = crate::pg::connection(&pool).await?;
            let rows = c
                .query("SELECT data FROM store_blob WHERE name = $1", &[&name])
                .await?;
            Ok(rows.first().map(|r| r.get::<_, Vec<u8>>(0)))
        })?)
    }

    fn open(&self, name: &str) -> Result<Option<OpenBlob>, StoreError> {
        let name = checked(name)?;
        let query = name.clone();
        // The length of a value stored out of line is in its pointer: nothing else is read.
        let len = self.db.run(|pool| async move {
            let c = crate::pg::connection(&pool).await?;
            let rows = c
                .query(
                    "SELECT octet_length(data)::bigint FROM store_blob WHERE name = $1",
                    &[&query],
                )
                .await?;
            Ok(rows.first().map(|r| r.get::<_, i64>(0)))
        })?;
        Ok(len.map(|len| {
            let len = u64::try_from(len).unwrap_or(0);
            let reader = WindowReader {
                db: self.db.clone(),
                name,
                len,
                pos: 0,
                window: Vec::new(),
                window_at: 0,
            };
            (Box::new(reader) as _, len)
        }))
    }

    fn remove(&self, name: &str) -> Result<(), StoreError> {
        let name = checked(name)?;
        self.db.run(|pool| async move {
            let c = crate::pg::connection(&pool).await?;
            c.execute("DELETE FROM store_blob WHERE name = $1", &[&name])
                .await?;
            Ok(())
        })?;
        Ok(())
    }

    fn list(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.db.run(|pool| async move {
            let c = crate::pg::connection(&pool).await?;
            let rows = c
                .query(
                    "SELECT name FROM store_blob ORDER BY name COLLATE \"C\"",
                    &[],
                )
                .await?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })?)
    }

    fn location(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("{}: store_blob {name}", self.db.location()))
    }
}

/// A blob read a window at a time (`substring` of the stored value).
struct WindowReader {
    db: Arc<Database>,
    name: String,
    len: u64,
    pos: u64,
    /// The bytes of the blob from `window_at` on, as last fetched.
    window: Vec<u8>,
    window_at: u64,
}

impl WindowReader {
    /// Fetches the window that starts at `pos`. A blob removed meanwhile (its message expunged)
    /// is an error, never a short read.
    fn fetch(&mut self) -> io::Result<()> {
        let want = (self.len - self.pos).min(WINDOW as u64);
        // substring() counts from 1, in int4: a message is far below 2 GiB.
        let from = i32::try_from(self.pos + 1)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a blob offset past 2 GiB"))?;
        let (name, count) = (self.name.clone(), want as i32);
        let rows = self
            .db
            .run(|pool| async move {
                let c = crate::pg::connection(&pool).await?;
                Ok(c.query(
                    "SELECT substring(data FROM $2 FOR $3) FROM store_blob WHERE name = $1",
                    &[&name, &from, &count],
                )
                .await?)
            })
            .map_err(io::Error::other)?;
        let bytes: Vec<u8> = rows
            .first()
            .map(|r| r.get(0))
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the blob was removed"))?;
        if bytes.len() as u64 != want {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "blob {}: {} bytes where {want} were expected",
                    self.name,
                    bytes.len()
                ),
            ));
        }
        self.window = bytes;
        self.window_at = self.pos;
        Ok(())
    }
}

impl Read for WindowReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let end = self.window_at + self.window.len() as u64;
        if self.pos < self.window_at || self.pos >= end {
            self.fetch()?;
        }
        let from = (self.pos - self.window_at) as usize;
        let n = buf.len().min(self.window.len() - from);
        buf[..n].copy_from_slice(&self.window[from..from + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for WindowReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of a blob",
            )
        })?;
        Ok(self.pos)
    }
}

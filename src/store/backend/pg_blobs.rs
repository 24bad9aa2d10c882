//! Sealed blobs as rows of `store_blob` (schema `src/pg/schema/003_mailbox_store.sql`): one
//! `bytea` per blob holding exactly the framed bytes a blob file holds. A blob is committed on its
//! own before the index row naming it, as a file is synced before it; once the commit returns it
//! is durable. One row per blob, not chunks: a message is bounded by the server's size limit, far
//! below `bytea`'s 1 GB, and the column is stored uncompressed (`STORAGE EXTERNAL`: ciphertext does
//! not compress). Reading a blob piece by piece reads it whole into memory first.

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::Arc;

use crate::pg::Database;
use crate::store::blobs::{valid_name, BlobStore, OpenBlob};
use crate::store::StoreError;

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
        Ok(self.read(name)?.map(|data| {
            let len = data.len() as u64;
            (Box::new(Cursor::new(data)) as _, len)
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

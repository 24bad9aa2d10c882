//! `EncryptedStore`: the one `MailStore` for local mailboxes. Content is encrypted under the
//! mailbox's policy (root → policy → mailbox → content key), or kept plain but checksummed for
//! mailboxes explicitly under policy "none". Blobs, index and keystore are kept apart; every
//! encrypted message is bound to its mailbox (see `binding`).

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::audit::AuditLog;
use super::backend::{IndexBackend, IndexTransaction, KeyIndex, MailboxKeyRow};
use super::binding::{self, BindError, Binding};
use super::blobs::{self, BlobKind, BlobStore, Blobs, HEADER_LEN};
use super::index::{self, MessageRow};
use super::keyring::Keyring;
use super::rebind::{self, Rebinding};
use super::{summarize, MailStore, MessageSummary, StoreError};
use crate::config::{Config, PolicyRef};
use crate::crypto::sealing::{open_chunks, seal_chunks, sealed_len, SecretKey};

/// How a blob's body opens (see `EncryptedStore::blob_body`).
pub(super) enum BlobBody {
    Sealed {
        content: SecretKey,
        context: Vec<u8>,
    },
    Plain {
        digest: Vec<u8>,
    },
}

/// The summary fields kept in the index (sealed under the mailbox key when encrypted).
#[derive(Serialize, Deserialize)]
struct Meta {
    date: String,
    from: String,
    subject: String,
}

pub struct EncryptedStore {
    pub(super) dir: PathBuf,
    pub(super) blobs: Arc<dyn BlobStore>,
    index: Box<dyn IndexBackend>,
    pub(super) keyring: Keyring,
    pub(super) mailboxes: BTreeMap<String, PolicyRef>,
    rebinding: Rebinding,
}

/// The store the server delivers through: an `EncryptedStore` acting as `serve`.
pub fn open_store(config: &Config) -> Result<Arc<dyn MailStore>, StoreError> {
    Ok(Arc::new(EncryptedStore::open(config, "serve")?))
}

/// One store seen both as the delivery store and as IMAP folders.
pub type Stores = (Arc<dyn MailStore>, Arc<dyn super::Folders>);

/// The same store as `open_store`, seen both as the delivery store and as IMAP folders, relaying
/// to IMAP the changes other processes announce (`IndexBackend::relay_changes`).
pub fn open_stores(config: &Config) -> Result<Stores, StoreError> {
    let store = Arc::new(EncryptedStore::open(config, "serve")?);
    // IMAP sessions in IDLE hear at once of changes other nodes sharing the index make.
    store.index.relay_changes();
    Ok((store.clone(), store))
}

/// SHA-256 through aws-lc-rs (hardware-accelerated; the plain store's checksum).
fn sha256(data: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

/// What the index keeps of a delivery key: HMAC-SHA256 under the mailbox key for an encrypted
/// mailbox, SHA-256 for a plain one; labelled either way, never the key itself.
fn delivery_tag(mkey: Option<&SecretKey>, delivery: &str) -> Vec<u8> {
    const CONTEXT: &[u8] = b"sealpost delivery v1\0";
    match mkey {
        Some(k) => k.mac(CONTEXT, delivery.as_bytes()),
        None => sha256(&[CONTEXT, delivery.as_bytes()].concat()),
    }
}

pub(super) fn integrity(row: &MessageRow, what: impl std::fmt::Display) -> StoreError {
    StoreError::Integrity(format!("message {} in {}: {what}", row.id, row.mailbox))
}

/// The key a message row points to must be its mailbox's: the index-level check that names a
/// moved row plainly (the wraps' bindings catch what this check cannot: relabelled key rows).
fn check_owner(row: &MessageRow, key: &MailboxKeyRow) -> Result<(), StoreError> {
    if key.mailbox == row.mailbox {
        return Ok(());
    }
    Err(StoreError::Integrity(format!(
        "message {} is not bound to mailbox {}: its key belongs to {} (row moved in the index)",
        row.id, row.mailbox, key.mailbox
    )))
}

/// What a wrap of a message that failed to open means.
fn not_bound(row: &MessageRow, what: &str, e: BindError) -> StoreError {
    integrity(
        row,
        match e {
            BindError::NotBound => format!(
                "its {what} is not bound to this mailbox and message id (moved, copied or altered \
                 in the index)"
            ),
            BindError::LegacyRefused => format!(
                "its {what} is not bound to this mailbox: it has the legacy form, refused since \
                 this store's bindings were migrated (index altered or restored from an older copy)"
            ),
        },
    )
}

impl EncryptedStore {
    /// Opens (creating) `<data_dir>/store`; `actor` names the command in the audit log.
    pub fn open(config: &Config, actor: &str) -> Result<EncryptedStore, StoreError> {
        let dir = config.data_dir.join("store");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| StoreError::io(&dir, e))?;
        let (index, blobs, audit) = super::backend::open(config)?;
        let tx = index.write()?;
        tx.messages()
            .prune_deliveries(index::now() - index::DELIVERY_TAG_DAYS * 86_400)?;
        tx.commit()?;
        let mut store = EncryptedStore {
            blobs,
            dir,
            index,
            keyring: Keyring::new(config.encryption_policies.clone(), audit, actor),
            mailboxes: config.mailbox_policies.clone(),
            rebinding: Rebinding::default(),
        };
        store.rebinding = rebind::rebind(&store, &config.store.keystore_dir)?;
        Ok(store)
    }

    /// What opening did to messages and keys stored before they were bound to their mailbox.
    pub fn rebinding(&self) -> &Rebinding {
        &self.rebinding
    }

    /// `<data_dir>/store`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The index: key hierarchy, message rows, delivery tags and folders.
    pub(super) fn index(&self) -> &dyn IndexBackend {
        &*self.index
    }

    /// The mailbox key for a new message: the mailbox's current key, or a new one under its
    /// configured policy; `None` only for a mailbox configured "none" that has no live key
    /// (delivery never downgrades an encrypted mailbox to plain).
    pub(super) fn delivery_key(
        &self,
        ix: &dyn KeyIndex,
        mailbox: &str,
        configured: &PolicyRef,
    ) -> Result<Option<(i64, SecretKey)>, StoreError> {
        let reason = format!("deliver to {mailbox}");
        match ix.current_mailbox_key(mailbox)? {
            Some(row) if row.state == "active" => {
                Ok(Some((row.id, self.keyring.mailbox_key(ix, &row, &reason)?)))
            }
            _ => match configured {
                PolicyRef::Named(p) => {
                    // Another node may be making the key right now: wait for it, then use its.
                    ix.lock_key_creation()?;
                    match ix.current_mailbox_key(mailbox)? {
                        Some(row) if row.state == "active" => {
                            Ok(Some((row.id, self.keyring.mailbox_key(ix, &row, &reason)?)))
                        }
                        _ => Ok(Some(self.keyring.new_mailbox_key(ix, mailbox, p, &reason)?)),
                    }
                }
                PolicyRef::None => Ok(None),
            },
        }
    }

    /// Builds the blob and index row of a message (no I/O).
    pub(super) fn seal_message(
        id: &str,
        mailbox: &str,
        message: &[u8],
        key: Option<(i64, &SecretKey)>,
    ) -> Result<(Vec<u8>, MessageRow), StoreError> {
        let s = summarize(id, message);
        let meta = serde_json::to_vec(&Meta {
            date: s.date,
            from: s.from,
            subject: s.subject,
        })
        .map_err(|e| StoreError::Internal(e.to_string()))?;
        let mut row = MessageRow {
            seq: 0,
            id: id.to_string(),
            mailbox: mailbox.to_string(),
            received: index::now(),
            size: message.len() as i64,
            flags: 0,
            blob: Blobs::new_name()?,
            mailbox_key_id: None,
            wrapped_key: None,
            meta,
            digest: None,
        };
        let framed = match key {
            Some((mk_id, mkey)) => {
                let content = SecretKey::generate()?;
                let mut framed = Blobs::frame(BlobKind::MailboxBound, sealed_len(message.len()));
                let chunks = binding::chunk_context(mailbox, id);
                seal_chunks(&content, &chunks, message, &mut framed)?;
                row.mailbox_key_id = Some(mk_id);
                row.wrapped_key = Some(binding::wrap_content_key(mkey, mailbox, id, &content)?);
                let context = binding::meta_context(Binding::Mailbox, mailbox, id);
                row.meta = mkey.seal_record(&context, &row.meta)?;
                framed
            }
            None => {
                let mut framed = Blobs::frame(BlobKind::Plain, message.len());
                framed.extend_from_slice(message);
                row.digest = Some(sha256(message));
                framed
            }
        };
        Ok((framed, row))
    }

    /// The mailbox key a stored message needs (`None` for plain messages): it must be a key of
    /// the message's own mailbox, and open for that mailbox.
    pub(super) fn message_key(
        &self,
        ix: &dyn KeyIndex,
        row: &MessageRow,
        reason: &str,
    ) -> Result<Option<SecretKey>, StoreError> {
        let Some(mk_id) = row.mailbox_key_id else {
            return Ok(None);
        };
        let mk = ix
            .mailbox_key(mk_id)?
            .ok_or_else(|| integrity(row, "its mailbox key is missing from the index"))?;
        check_owner(row, &mk)?;
        match self.keyring.mailbox_key(ix, &mk, reason) {
            Ok(k) => Ok(Some(k)),
            Err(StoreError::Integrity(e)) => Err(integrity(row, e)),
            Err(e) => Err(e),
        }
    }

    /// Message `id`'s row and its mailbox key (none for a plain mailbox), for reading it.
    pub(super) fn row_and_key(
        &self,
        mailbox: &str,
        id: &str,
    ) -> Result<(MessageRow, Option<SecretKey>), StoreError> {
        let mailbox = mailbox.to_ascii_lowercase();
        let tx = self.index.read()?;
        let row =
            tx.messages()
                .message(&mailbox, id)?
                .ok_or_else(|| StoreError::NoSuchMessage {
                    mailbox: mailbox.clone(),
                    id: id.to_string(),
                })?;
        let key = self.message_key(&*tx.keys(), &row, &format!("read {mailbox} {id}"));
        // Committed whatever the outcome: the audit anchor of a key unwrap is in it.
        tx.commit()?;
        Ok((row, key?))
    }

    /// How a row's blob opens, from the kind in its header: the content key and the context its
    /// chunks bind, or the checksum of a plain blob. Anything that does not match the index fails.
    pub(super) fn blob_body(
        &self,
        row: &MessageRow,
        mkey: Option<&SecretKey>,
        kind: Option<BlobKind>,
    ) -> Result<BlobBody, StoreError> {
        let legacy = self.keyring.accepts_legacy();
        match (kind, mkey, &row.wrapped_key) {
            (Some(kind @ (BlobKind::Encrypted | BlobKind::MailboxBound)), Some(mkey), Some(w)) => {
                let (content, bound) =
                    binding::unwrap_content_key(mkey, &row.mailbox, &row.id, w, legacy)
                        .map_err(|e| not_bound(row, "content key", e))?;
                // A kind 1 blob's chunks bind the message id; its wrap, once migrated, binds the
                // mailbox. A kind 2 blob is only ever written with a bound wrap.
                let context = match (kind, bound) {
                    (BlobKind::MailboxBound, Binding::Mailbox) => {
                        binding::chunk_context(&row.mailbox, &row.id)
                    }
                    (BlobKind::Encrypted, _) => row.id.as_bytes().to_vec(),
                    _ => return Err(integrity(row, "blob header does not match the index")),
                };
                Ok(BlobBody::Sealed { content, context })
            }
            (Some(BlobKind::Plain), None, None) => Ok(BlobBody::Plain {
                digest: row.digest.clone().unwrap_or_default(),
            }),
            _ => Err(integrity(row, "blob header does not match the index")),
        }
    }

    /// Reads and authenticates a message's blob.
    pub(super) fn open_message(
        &self,
        row: &MessageRow,
        mkey: Option<&SecretKey>,
    ) -> Result<Vec<u8>, StoreError> {
        let Some(mut data) = self.blobs.read(&row.blob)? else {
            return Err(integrity(row, "its blob is missing"));
        };
        let body = self.blob_body(row, mkey, blobs::kind(&data))?;
        data.drain(..HEADER_LEN);
        let plain = match body {
            BlobBody::Sealed { content, context } => open_chunks(&content, &context, data)
                .map_err(|e| integrity(row, format!("{e} (blob altered, swapped or truncated)")))?,
            BlobBody::Plain { digest } => {
                if digest != sha256(&data) {
                    return Err(integrity(
                        row,
                        "checksum mismatch (blob altered or swapped)",
                    ));
                }
                data
            }
        };
        if plain.len() as i64 != row.size {
            return Err(integrity(row, "size does not match the index"));
        }
        Ok(plain)
    }

    /// The summary of a row from its (decrypted) metadata, sealed with the binding its content
    /// key's wrap has.
    pub(super) fn summary(
        &self,
        row: &MessageRow,
        mkey: Option<&SecretKey>,
    ) -> Result<MessageSummary, StoreError> {
        let meta = match mkey {
            Some(k) => {
                let wrapped = row.wrapped_key.as_deref().unwrap_or_default();
                let bound = binding::claimed(wrapped, self.keyring.accepts_legacy())
                    .map_err(|e| not_bound(row, "content key", e))?;
                let context = binding::meta_context(bound, &row.mailbox, &row.id);
                k.open_record(&context, &row.meta).map_err(|_| {
                    integrity(
                        row,
                        "its metadata failed authentication (not bound to this mailbox and \
                         message id, or altered)",
                    )
                })?
            }
            None => row.meta.clone(),
        };
        let meta: Meta = serde_json::from_slice(&meta)
            .map_err(|_| integrity(row, "its metadata is unreadable"))?;
        Ok(MessageSummary {
            id: row.id.clone(),
            date: meta.date,
            from: meta.from,
            subject: meta.subject,
            size: row.size as u64,
        })
    }

    /// The audit log's file (`None` when the log is the database's chain).
    pub fn audit_path(&self) -> Option<&Path> {
        self.keyring.audit_log().path()
    }

    /// The audit log: the file, or the database's chain.
    pub fn audit_log(&self) -> &AuditLog {
        self.keyring.audit_log()
    }

    /// The index rows of a mailbox, oldest first.
    pub fn rows(&self, mailbox: &str) -> Result<Vec<MessageRow>, StoreError> {
        self.index
            .read()?
            .messages()
            .messages(&mailbox.to_ascii_lowercase())
    }

    /// The policy a mailbox is configured with (`None`: not a configured mailbox).
    pub fn configured_policy(&self, mailbox: &str) -> Option<&PolicyRef> {
        self.mailboxes.get(&mailbox.to_ascii_lowercase())
    }
}

impl EncryptedStore {
    /// Stores a message; with a delivery key, at most once per key and mailbox (the key's tag is
    /// committed in the message row's transaction). Returns the new or the earlier message id.
    fn store(
        &self,
        mailbox: &str,
        message: &[u8],
        delivery: Option<&str>,
    ) -> Result<String, StoreError> {
        let mailbox = mailbox.to_ascii_lowercase();
        let configured = self
            .mailboxes
            .get(&mailbox)
            .ok_or_else(|| StoreError::NoSuchMailbox(mailbox.clone()))?;
        let key = {
            let tx = self.index.write()?;
            let key = self.delivery_key(&*tx.keys(), &mailbox, configured)?;
            tx.commit()?;
            key
        };
        let tag = delivery.map(|d| delivery_tag(key.as_ref().map(|(_, k)| k), d));
        if let Some(tag) = &tag {
            if let Some(earlier) = self.index.read()?.messages().delivered(&mailbox, tag)? {
                return Ok(earlier);
            }
        }
        let id = crate::mail::new_queue_id();
        let (framed, row) =
            Self::seal_message(&id, &mailbox, message, key.as_ref().map(|(i, k)| (*i, k)))?;
        self.blobs.write(&row.blob, &framed)?;
        let stored = (|| {
            let tx = self.index.write()?;
            let messages = tx.messages();
            if let Some(tag) = &tag {
                // Delivered meanwhile by another process or node: keep that one (the
                // transaction rolls back).
                if let Some(earlier) = messages.insert_delivery(&mailbox, tag, &id)? {
                    return Ok(earlier);
                }
            }
            if let Some((mk_id, _)) = &key {
                let live = tx
                    .keys()
                    .mailbox_key(*mk_id)?
                    .is_some_and(|r| r.state == "active");
                if !live {
                    return Err(StoreError::Revoked {
                        policy: configured.to_string(),
                        what: format!("the key of mailbox {mailbox} was destroyed during delivery"),
                    });
                }
            }
            messages.insert_message(&row, super::folders::INBOX)?;
            messages.announce(&mailbox)?;
            drop(messages);
            tx.commit()?;
            super::folders::changes::notify(&mailbox);
            Ok(id.clone())
        })();
        if stored.as_ref().map_or(true, |stored| *stored != id) {
            // Not committed: the blob is nobody's (an orphan if this removal fails).
            let _ = self.blobs.remove(&row.blob);
        }
        stored
    }
}

impl MailStore for EncryptedStore {
    fn deliver(&self, mailbox: &str, message: &[u8]) -> Result<String, StoreError> {
        self.store(mailbox, message, None)
    }

    fn deliver_once(
        &self,
        mailbox: &str,
        message: &[u8],
        delivery: &str,
    ) -> Result<String, StoreError> {
        self.store(mailbox, message, Some(delivery))
    }

    fn list(&self, mailbox: &str) -> Result<Vec<MessageSummary>, StoreError> {
        let mailbox = mailbox.to_ascii_lowercase();
        let tx = self.index.read()?;
        let listed = self.summaries(&*tx, &mailbox);
        // Committed whatever the outcome: the audit anchors of key unwraps are in it.
        tx.commit()?;
        listed
    }

    fn read(&self, mailbox: &str, id: &str) -> Result<Vec<u8>, StoreError> {
        let (row, key) = self.row_and_key(mailbox, id)?;
        self.open_message(&row, key.as_ref())
    }

    fn count(&self, mailbox: &str) -> Result<usize, StoreError> {
        self.index
            .read()?
            .messages()
            .count(&mailbox.to_ascii_lowercase())
    }
}

impl EncryptedStore {
    /// The summaries of a mailbox's messages, in a transaction of the caller's.
    fn summaries(
        &self,
        tx: &dyn IndexTransaction,
        mailbox: &str,
    ) -> Result<Vec<MessageSummary>, StoreError> {
        let ix = tx.keys();
        let ix = &*ix;
        let reason = format!("list {mailbox}");
        // Every row here is in `mailbox`, so a key found to be this mailbox's serves its other rows.
        let mut keys: HashMap<i64, SecretKey> = HashMap::new();
        let mut out = Vec::new();
        for row in tx.messages().messages(mailbox)? {
            let key = match row.mailbox_key_id {
                None => None,
                Some(id) => match keys.get(&id) {
                    Some(k) => Some(k.clone()),
                    None => {
                        let k = self.message_key(ix, &row, &reason)?;
                        if let Some(k) = &k {
                            keys.insert(id, k.clone());
                        }
                        k
                    }
                },
            };
            out.push(self.summary(&row, key.as_ref())?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;

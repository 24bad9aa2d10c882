//! `Folders` for `EncryptedStore`: folders, UIDs and flags are index metadata; message bytes
//! stay sealed in their blobs and are opened in memory only. Moving a message between folders
//! changes its index row only (its keys bind the mailbox and message id, not the folder); a copy
//! is sealed anew under a new id.

use super::backend::MessageIndex;
use super::folders::{
    canonical_folder, changes, FlagOp, Flags, FolderInfo, FolderMessage, FolderView, Folders,
    INBOX, SPECIAL_USE,
};
use super::stream::MessageSource;
use super::{EncryptedStore, IndexErrorKind, MailStore, StoreError};

fn no_folder(name: &str) -> StoreError {
    StoreError::index(IndexErrorKind::NotFound, format!("no folder {name:?}"))
}

/// The folder's id, or "no such folder".
fn existing_folder(ix: &dyn MessageIndex, mailbox: &str, name: &str) -> Result<i64, StoreError> {
    ix.folder_id(mailbox, name)?.ok_or_else(|| no_folder(name))
}

impl EncryptedStore {
    /// The lowercase mailbox, if configured and not revoked.
    fn live_mailbox(&self, mailbox: &str) -> Result<String, StoreError> {
        let mailbox = mailbox.to_ascii_lowercase();
        let policy = self
            .mailboxes
            .get(&mailbox)
            .ok_or_else(|| StoreError::NoSuchMailbox(mailbox.clone()))?;
        let current = self.index().read()?.keys().current_mailbox_key(&mailbox)?;
        if current.is_some_and(|k| k.state == "revoked") {
            return Err(StoreError::Revoked {
                policy: policy.to_string(),
                what: format!("the keys of mailbox {mailbox} were destroyed"),
            });
        }
        Ok(mailbox)
    }

    /// Seals a message into a folder with flags and an internal date; returns (UIDVALIDITY, UID).
    fn store_in_folder(
        &self,
        mailbox: &str,
        folder: &str,
        message: &[u8],
        flags: &Flags,
        received: Option<i64>,
    ) -> Result<(u32, u32), StoreError> {
        let configured = self
            .mailboxes
            .get(mailbox)
            .ok_or_else(|| StoreError::NoSuchMailbox(mailbox.to_string()))?;
        let key = {
            let tx = self.index().write()?;
            let key = self.delivery_key(&*tx.keys(), mailbox, configured)?;
            tx.commit()?;
            key
        };
        let id = crate::mail::new_queue_id();
        let (framed, mut row) =
            Self::seal_message(&id, mailbox, message, key.as_ref().map(|(i, k)| (*i, k)))?;
        if let Some(t) = received {
            row.received = t;
        }
        self.blobs.write(&row.blob, &framed)?;
        let stored = (|| {
            let tx = self.index().write()?;
            let ix = tx.messages();
            let fid = existing_folder(&*ix, mailbox, folder)?;
            let filed = ix.insert_message(&row, folder)?;
            ix.write_flags(filed.seq, flags)?;
            let (validity, _) = ix.folder_uids(fid)?;
            ix.announce(mailbox)?;
            drop(ix);
            tx.commit()?;
            changes::notify(mailbox);
            Ok((validity, filed.uid))
        })();
        if stored.is_err() {
            let _ = self.blobs.remove(&row.blob);
        }
        stored
    }

    /// The (UID, id, flags, received) of the given UIDs of a folder that exist.
    fn rows_at(
        &self,
        mailbox: &str,
        folder: &str,
        uids: &[u32],
    ) -> Result<Vec<(u32, String, Flags, i64)>, StoreError> {
        let tx = self.index().read()?;
        let ix = tx.messages();
        let fid = existing_folder(&*ix, mailbox, folder)?;
        let mut out = Vec::new();
        for &uid in uids {
            if let Some(m) = ix.message_at(fid, uid)? {
                out.push((uid, m.id, m.flags, m.received));
            }
        }
        Ok(out)
    }

    /// The message id at `uid` in a folder of a (live) mailbox.
    fn id_at(&self, mailbox: &str, folder: &str, uid: u32) -> Result<String, StoreError> {
        let name = canonical_folder(folder);
        let tx = self.index().read()?;
        let ix = tx.messages();
        let fid = existing_folder(&*ix, mailbox, &name)?;
        Ok(ix
            .message_at(fid, uid)?
            .ok_or_else(|| StoreError::NoSuchMessage {
                mailbox: mailbox.to_string(),
                id: format!("{name} UID {uid}"),
            })?
            .id)
    }

    /// Removes blobs whose rows are gone (a blob left behind is an orphan, never a message).
    fn remove_blobs(&self, blobs: impl IntoIterator<Item = String>) {
        for blob in blobs {
            let _ = self.blobs.remove(&blob);
        }
    }
}

impl Folders for EncryptedStore {
    fn ensure_default_folders(&self, mailbox: &str) -> Result<(), StoreError> {
        let mailbox = self.live_mailbox(mailbox)?;
        let tx = self.index().write()?;
        let ix = tx.messages();
        ix.ensure_folder(&mailbox, INBOX, None)?;
        for (name, special) in SPECIAL_USE {
            ix.ensure_folder(&mailbox, name, Some(special))?;
        }
        drop(ix);
        tx.commit()?;
        Ok(())
    }

    fn folders(&self, mailbox: &str) -> Result<Vec<FolderInfo>, StoreError> {
        let mailbox = self.live_mailbox(mailbox)?;
        let tx = self.index().write()?;
        let ix = tx.messages();
        ix.ensure_folder(&mailbox, INBOX, None)?;
        let list = ix.folder_list(&mailbox)?;
        drop(ix);
        tx.commit()?;
        Ok(list
            .into_iter()
            .map(|(name, special)| FolderInfo { name, special })
            .collect())
    }

    fn create_folder(&self, mailbox: &str, name: &str) -> Result<(), StoreError> {
        let mailbox = self.live_mailbox(mailbox)?;
        let name = canonical_folder(name);
        let tx = self.index().write()?;
        let ix = tx.messages();
        if ix.folder_id(&mailbox, &name)?.is_some() {
            return Err(StoreError::index(
                IndexErrorKind::Conflict,
                format!("folder {name:?} exists"),
            ));
        }
        ix.ensure_folder(&mailbox, &name, None)?;
        ix.announce(&mailbox)?;
        drop(ix);
        tx.commit()?;
        changes::notify(&mailbox);
        Ok(())
    }

    fn delete_folder(&self, mailbox: &str, name: &str) -> Result<(), StoreError> {
        let mailbox = self.live_mailbox(mailbox)?;
        let name = canonical_folder(name);
        if name == INBOX {
            return Err(StoreError::Policy("INBOX cannot be deleted".into()));
        }
        let tx = self.index().write()?;
        let ix = tx.messages();
        let fid = existing_folder(&*ix, &mailbox, &name)?;
        let blobs = ix.delete_folder(fid)?;
        ix.announce(&mailbox)?;
        drop(ix);
        tx.commit()?;
        self.remove_blobs(blobs);
        changes::notify(&mailbox);
        Ok(())
    }

    fn rename_folder(&self, mailbox: &str, from: &str, to: &str) -> Result<(), StoreError> {
        let mailbox = self.live_mailbox(mailbox)?;
        let (from, to) = (canonical_folder(from), canonical_folder(to));
        if from == INBOX || to == INBOX {
            return Err(StoreError::Policy("INBOX cannot be renamed".into()));
        }
        let tx = self.index().write()?;
        let ix = tx.messages();
        existing_folder(&*ix, &mailbox, &from)?;
        if ix.folder_id(&mailbox, &to)?.is_some() {
            return Err(StoreError::index(
                IndexErrorKind::Conflict,
                format!("folder {to:?} exists"),
            ));
        }
        ix.rename_folder(&mailbox, &from, &to)?;
        ix.announce(&mailbox)?;
        drop(ix);
        tx.commit()?;
        changes::notify(&mailbox);
        Ok(())
    }

    fn select(&self, mailbox: &str, folder: &str) -> Result<FolderView, StoreError> {
        let mailbox = self.live_mailbox(mailbox)?;
        let name = canonical_folder(folder);
        let tx = self.index().write()?;
        let ix = tx.messages();
        let fid = match ix.folder_id(&mailbox, &name)? {
            Some(id) => id,
            None if name == INBOX => ix.ensure_folder(&mailbox, INBOX, None)?,
            None => return Err(no_folder(&name)),
        };
        let (uid_validity, uid_next) = ix.folder_uids(fid)?;
        let messages = ix.folder_messages(fid)?;
        drop(ix);
        tx.commit()?;
        Ok(FolderView {
            name,
            uid_validity,
            uid_next,
            messages,
        })
    }

    fn message(&self, mailbox: &str, folder: &str, uid: u32) -> Result<Vec<u8>, StoreError> {
        let mailbox = self.live_mailbox(mailbox)?;
        let id = self.id_at(&mailbox, folder, uid)?;
        self.read(&mailbox, &id)
    }

    fn message_source(
        &self,
        mailbox: &str,
        folder: &str,
        uid: u32,
    ) -> Result<MessageSource, StoreError> {
        let mailbox = self.live_mailbox(mailbox)?;
        let id = self.id_at(&mailbox, folder, uid)?;
        self.source_of(&mailbox, &id)
    }

    fn set_flags(
        &self,
        mailbox: &str,
        folder: &str,
        uids: &[u32],
        op: FlagOp,
        flags: &Flags,
    ) -> Result<Vec<FolderMessage>, StoreError> {
        let mailbox = self.live_mailbox(mailbox)?;
        let name = canonical_folder(folder);
        let tx = self.index().write()?;
        let ix = tx.messages();
        let fid = existing_folder(&*ix, &mailbox, &name)?;
        for &uid in uids {
            if let Some(m) = ix.message_at(fid, uid)? {
                let mut now = m.flags;
                now.apply(op, flags);
                ix.write_flags(m.seq, &now)?;
            }
        }
        let changed = ix
            .folder_messages(fid)?
            .into_iter()
            .filter(|m| uids.contains(&m.uid))
            .collect();
        ix.announce(&mailbox)?;
        drop(ix);
        tx.commit()?;
        changes::notify(&mailbox);
        Ok(changed)
    }

    fn copy(
        &self,
        mailbox: &str,
        folder: &str,
        uids: &[u32],
        to: &str,
    ) -> Result<Vec<(u32, u32)>, StoreError> {
        let mailbox = self.live_mailbox(mailbox)?;
        let (name, to) = (canonical_folder(folder), canonical_folder(to));
        existing_folder(&*self.index().read()?.messages(), &mailbox, &to)?;
        let mut out = Vec::new();
        for (uid, id, flags, received) in self.rows_at(&mailbox, &name, uids)? {
            let bytes = self.read(&mailbox, &id)?;
            let (_, new) = self.store_in_folder(&mailbox, &to, &bytes, &flags, Some(received))?;
            out.push((uid, new));
        }
        Ok(out)
    }

    fn move_to(
        &self,
        mailbox: &str,
        folder: &str,
        uids: &[u32],
        to: &str,
    ) -> Result<Vec<(u32, u32)>, StoreError> {
        let mailbox = self.live_mailbox(mailbox)?;
        let (name, to) = (canonical_folder(folder), canonical_folder(to));
        let tx = self.index().write()?;
        let ix = tx.messages();
        let fid = existing_folder(&*ix, &mailbox, &name)?;
        existing_folder(&*ix, &mailbox, &to)?;
        let mut out = Vec::new();
        for &uid in uids {
            if let Some(m) = ix.message_at(fid, uid)? {
                out.push((uid, ix.file_message(m.seq, &mailbox, &to)?));
            }
        }
        ix.announce(&mailbox)?;
        drop(ix);
        tx.commit()?;
        changes::notify(&mailbox);
        Ok(out)
    }

    fn expunge(
        &self,
        mailbox: &str,
        folder: &str,
        uids: Option<&[u32]>,
    ) -> Result<Vec<u32>, StoreError> {
        let mailbox = self.live_mailbox(mailbox)?;
        let name = canonical_folder(folder);
        let tx = self.index().write()?;
        let ix = tx.messages();
        let fid = existing_folder(&*ix, &mailbox, &name)?;
        let mut removed = Vec::new();
        match uids {
            None => removed = ix.expunge(fid, None)?,
            Some(uids) => {
                for &uid in uids {
                    removed.extend(ix.expunge(fid, Some(uid))?);
                }
            }
        }
        if !removed.is_empty() {
            ix.announce(&mailbox)?;
        }
        drop(ix);
        tx.commit()?;
        let (uids, blobs): (Vec<u32>, Vec<String>) = removed.into_iter().unzip();
        self.remove_blobs(blobs);
        if !uids.is_empty() {
            changes::notify(&mailbox);
        }
        Ok(uids)
    }

    fn append(
        &self,
        mailbox: &str,
        folder: &str,
        message: &[u8],
        flags: &Flags,
    ) -> Result<(u32, u32), StoreError> {
        let mailbox = self.live_mailbox(mailbox)?;
        self.store_in_folder(&mailbox, &canonical_folder(folder), message, flags, None)
    }
}

//! `Folders` for `EncryptedStore`: folders, UIDs and flags are index metadata; message bytes
//! stay sealed in their blobs and are opened in memory only. Moving a message between folders
//! changes its index row only (its keys bind the mailbox and message id, not the folder); a copy
//! is sealed anew under a new id.

use rusqlite::{params, TransactionBehavior};

use super::backend::sqlite::SqliteKeyIndex;
use super::backend::KeyIndex;
use super::folder_index as fx;
use super::folders::{
    canonical_folder, changes, system, FlagOp, Flags, FolderInfo, FolderMessage, FolderView,
    Folders, INBOX, SPECIAL_USE,
};
use super::index;
use super::stream::MessageSource;
use super::{EncryptedStore, IndexErrorKind, MailStore, StoreError};

fn no_folder(name: &str) -> StoreError {
    StoreError::index(IndexErrorKind::NotFound, format!("no folder {name:?}"))
}

impl EncryptedStore {
    /// The lowercase mailbox, if configured and not revoked.
    fn live_mailbox(&self, mailbox: &str) -> Result<String, StoreError> {
        let mailbox = mailbox.to_ascii_lowercase();
        let policy = self
            .mailboxes
            .get(&mailbox)
            .ok_or_else(|| StoreError::NoSuchMailbox(mailbox.clone()))?;
        let current = SqliteKeyIndex::new(&*self.conn()?).current_mailbox_key(&mailbox)?;
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
        let key = self.delivery_key(&SqliteKeyIndex::new(&*self.conn()?), mailbox, configured)?;
        let id = crate::mail::new_queue_id();
        let (framed, mut row) =
            Self::seal_message(&id, mailbox, message, key.as_ref().map(|(i, k)| (*i, k)))?;
        if let Some(t) = received {
            row.received = t;
        }
        self.blobs.write(&row.blob, &framed)?;
        let stored = (|| {
            let mut c = self.conn()?;
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let fid = fx::folder_id(&tx, mailbox, folder)?.ok_or_else(|| no_folder(folder))?;
            let uid = index::insert_message_in(&tx, &row, folder)?;
            fx::write_flags(&tx, tx.last_insert_rowid(), flags)?;
            let (validity, _) = fx::folder_uids(&tx, fid)?;
            tx.commit()?;
            changes::notify(mailbox);
            Ok((validity, uid))
        })();
        if stored.is_err() {
            let _ = self.blobs.remove(&row.blob);
        }
        stored
    }

    /// The (seq, id, flags, received) of the given UIDs of a folder that exist.
    fn rows_at(
        &self,
        mailbox: &str,
        folder: &str,
        uids: &[u32],
    ) -> Result<Vec<(u32, String, Flags, i64)>, StoreError> {
        let c = self.conn()?;
        let fid = fx::existing_folder(&c, mailbox, folder)?;
        let mut out = Vec::new();
        for &uid in uids {
            if let Some((seq, id)) = fx::message_at(&c, fid, uid)? {
                let received: i64 =
                    c.query_row("SELECT received FROM messages WHERE seq = ?1", [seq], |r| {
                        r.get(0)
                    })?;
                out.push((uid, id, fx::flags_of(&c, seq)?, received));
            }
        }
        Ok(out)
    }

    /// The message id at `uid` in a folder of a (live) mailbox.
    fn id_at(&self, mailbox: &str, folder: &str, uid: u32) -> Result<String, StoreError> {
        let name = canonical_folder(folder);
        let c = self.conn()?;
        let fid = fx::existing_folder(&c, mailbox, &name)?;
        Ok(fx::message_at(&c, fid, uid)?
            .ok_or_else(|| StoreError::NoSuchMessage {
                mailbox: mailbox.to_string(),
                id: format!("{name} UID {uid}"),
            })?
            .1)
    }

    /// Removes message rows, then their blobs (a blob left behind is an orphan, never a message).
    fn remove_rows(&self, where_sql: &str, args: &[i64]) -> Result<Vec<u32>, StoreError> {
        let (uids, blobs) = {
            let mut c = self.conn()?;
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let found: Vec<(i64, u32, String)> = {
                let mut st = tx.prepare(&format!(
                    "SELECT seq, uid, blob FROM messages WHERE {where_sql}"
                ))?;
                let rows = st.query_map(rusqlite::params_from_iter(args), |r| {
                    Ok((r.get(0)?, r.get::<_, i64>(1)? as u32, r.get(2)?))
                })?;
                rows.collect::<Result<_, _>>()?
            };
            for (seq, _, _) in &found {
                tx.execute("DELETE FROM messages WHERE seq = ?1", [seq])?;
            }
            tx.commit()?;
            let uids = found.iter().map(|(_, u, _)| *u).collect::<Vec<_>>();
            (
                uids,
                found.into_iter().map(|(_, _, b)| b).collect::<Vec<_>>(),
            )
        };
        for blob in blobs {
            let _ = self.blobs.remove(&blob);
        }
        Ok(uids)
    }
}

impl Folders for EncryptedStore {
    fn ensure_default_folders(&self, mailbox: &str) -> Result<(), StoreError> {
        let mailbox = self.live_mailbox(mailbox)?;
        let mut c = self.conn()?;
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        fx::ensure_folder(&tx, &mailbox, INBOX, None)?;
        for (name, special) in SPECIAL_USE {
            fx::ensure_folder(&tx, &mailbox, name, Some(special))?;
        }
        tx.commit()?;
        Ok(())
    }

    fn folders(&self, mailbox: &str) -> Result<Vec<FolderInfo>, StoreError> {
        let mailbox = self.live_mailbox(mailbox)?;
        let c = self.conn()?;
        fx::ensure_folder(&c, &mailbox, INBOX, None)?;
        Ok(fx::folder_list(&c, &mailbox)?
            .into_iter()
            .map(|(name, special)| FolderInfo { name, special })
            .collect())
    }

    fn create_folder(&self, mailbox: &str, name: &str) -> Result<(), StoreError> {
        let mailbox = self.live_mailbox(mailbox)?;
        let name = canonical_folder(name);
        let c = self.conn()?;
        if fx::folder_id(&c, &mailbox, &name)?.is_some() {
            return Err(StoreError::index(
                IndexErrorKind::Conflict,
                format!("folder {name:?} exists"),
            ));
        }
        fx::ensure_folder(&c, &mailbox, &name, None)?;
        Ok(())
    }

    fn delete_folder(&self, mailbox: &str, name: &str) -> Result<(), StoreError> {
        let mailbox = self.live_mailbox(mailbox)?;
        let name = canonical_folder(name);
        if name == INBOX {
            return Err(StoreError::Policy("INBOX cannot be deleted".into()));
        }
        let fid = fx::existing_folder(&*self.conn()?, &mailbox, &name)?;
        self.remove_rows("folder_id = ?1", &[fid])?;
        self.conn()?
            .execute("DELETE FROM folders WHERE id = ?1", [fid])?;
        Ok(())
    }

    fn rename_folder(&self, mailbox: &str, from: &str, to: &str) -> Result<(), StoreError> {
        let mailbox = self.live_mailbox(mailbox)?;
        let (from, to) = (canonical_folder(from), canonical_folder(to));
        if from == INBOX || to == INBOX {
            return Err(StoreError::Policy("INBOX cannot be renamed".into()));
        }
        let mut c = self.conn()?;
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let fid = fx::existing_folder(&tx, &mailbox, &from)?;
        if fx::folder_id(&tx, &mailbox, &to)?.is_some() {
            return Err(StoreError::index(
                IndexErrorKind::Conflict,
                format!("folder {to:?} exists"),
            ));
        }
        tx.execute(
            "UPDATE folders SET name = ?2 WHERE id = ?1",
            params![fid, to],
        )?;
        tx.execute(
            "UPDATE folders SET name = ?3 || substr(name, length(?2) + 1)
             WHERE mailbox = ?1 AND substr(name, 1, length(?2)) = ?2",
            params![mailbox, format!("{from}/"), format!("{to}/")],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn select(&self, mailbox: &str, folder: &str) -> Result<FolderView, StoreError> {
        let mailbox = self.live_mailbox(mailbox)?;
        let name = canonical_folder(folder);
        let c = self.conn()?;
        let fid = match fx::folder_id(&c, &mailbox, &name)? {
            Some(id) => id,
            None if name == INBOX => fx::ensure_folder(&c, &mailbox, INBOX, None)?,
            None => return Err(no_folder(&name)),
        };
        let (uid_validity, uid_next) = fx::folder_uids(&c, fid)?;
        Ok(FolderView {
            name,
            uid_validity,
            uid_next,
            messages: fx::folder_messages(&c, fid)?,
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
        let mut c = self.conn()?;
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let fid = fx::existing_folder(&tx, &mailbox, &name)?;
        for &uid in uids {
            if let Some((seq, _)) = fx::message_at(&tx, fid, uid)? {
                let mut now = fx::flags_of(&tx, seq)?;
                now.apply(op, flags);
                fx::write_flags(&tx, seq, &now)?;
            }
        }
        let changed = fx::folder_messages(&tx, fid)?
            .into_iter()
            .filter(|m| uids.contains(&m.uid))
            .collect();
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
        fx::existing_folder(&*self.conn()?, &mailbox, &to)?;
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
        let mut c = self.conn()?;
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let fid = fx::existing_folder(&tx, &mailbox, &name)?;
        fx::existing_folder(&tx, &mailbox, &to)?;
        let mut out = Vec::new();
        for &uid in uids {
            if let Some((seq, _)) = fx::message_at(&tx, fid, uid)? {
                out.push((uid, fx::file_message(&tx, seq, &mailbox, &to)?));
            }
        }
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
        let fid = fx::existing_folder(&*self.conn()?, &mailbox, &name)?;
        let deleted = format!("folder_id = ?1 AND (flags & {}) != 0", system::DELETED);
        let removed = match uids {
            None => self.remove_rows(&deleted, &[fid]),
            Some(uids) => {
                let mut out = Vec::new();
                for &uid in uids {
                    out.extend(
                        self.remove_rows(&format!("{deleted} AND uid = ?2"), &[fid, uid as i64])?,
                    );
                }
                Ok(out)
            }
        };
        if removed.as_ref().is_ok_and(|r| !r.is_empty()) {
            changes::notify(&mailbox);
        }
        removed
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

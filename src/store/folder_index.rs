//! The index's folder table and the IMAP columns of message rows (folder, UID, keywords,
//! modification sequence), and the migration that adds them (index version 3).

use rusqlite::{params, Connection, OptionalExtension};

use super::folders::{Flags, FolderMessage, INBOX};
use super::index::now;
use super::StoreError;

/// Adds folders to an index of version 2 or less: every existing message lands in its mailbox's
/// INBOX, UIDs in received order. Runs in one transaction; a second process that migrated first
/// leaves nothing to do.
pub(super) fn migrate(c: &mut Connection) -> Result<(), StoreError> {
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version >= 3 {
        return Ok(());
    }
    tx.execute_batch(
        r#"
CREATE TABLE IF NOT EXISTS folders(
    id INTEGER PRIMARY KEY,
    mailbox TEXT NOT NULL,
    name TEXT NOT NULL,
    uidvalidity INTEGER NOT NULL,
    uidnext INTEGER NOT NULL,
    special TEXT,
    UNIQUE (mailbox, name));
CREATE TABLE IF NOT EXISTS uidvalidity_issued(
    mailbox TEXT PRIMARY KEY,
    last INTEGER NOT NULL);
ALTER TABLE messages ADD COLUMN folder_id INTEGER REFERENCES folders(id);
ALTER TABLE messages ADD COLUMN uid INTEGER;
ALTER TABLE messages ADD COLUMN keywords TEXT NOT NULL DEFAULT '';
ALTER TABLE messages ADD COLUMN modseq INTEGER NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX IF NOT EXISTS messages_by_folder_uid ON messages(folder_id, uid);
CREATE INDEX IF NOT EXISTS messages_by_modseq ON messages(modseq);
"#,
    )?;
    let seqs: Vec<(i64, String)> = {
        let mut st = tx.prepare("SELECT seq, mailbox FROM messages ORDER BY received, seq")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    for (seq, mailbox) in seqs {
        file_message(&tx, seq, &mailbox, INBOX)?;
    }
    tx.pragma_update(None, "user_version", 3)?;
    tx.commit()?;
    Ok(())
}

/// The folder's id, made if missing (with a UIDVALIDITY above any the mailbox was given).
pub(super) fn ensure_folder(
    c: &Connection,
    mailbox: &str,
    name: &str,
    special: Option<&str>,
) -> Result<i64, StoreError> {
    if let Some(id) = folder_id(c, mailbox, name)? {
        return Ok(id);
    }
    // Never reused for the mailbox, even after its folder with the highest one was deleted.
    let issued: Option<i64> = c
        .query_row(
            "SELECT last FROM uidvalidity_issued WHERE mailbox = ?1",
            [mailbox],
            |r| r.get(0),
        )
        .optional()?;
    let validity = now().max(issued.unwrap_or(0) + 1);
    c.execute(
        "INSERT INTO uidvalidity_issued(mailbox, last) VALUES (?1, ?2)
         ON CONFLICT(mailbox) DO UPDATE SET last = excluded.last",
        params![mailbox, validity],
    )?;
    c.execute(
        "INSERT INTO folders(mailbox, name, uidvalidity, uidnext, special) VALUES (?1, ?2, ?3, 1, ?4)",
        params![mailbox, name, validity, special],
    )?;
    Ok(c.last_insert_rowid())
}

pub(super) fn folder_id(
    c: &Connection,
    mailbox: &str,
    name: &str,
) -> Result<Option<i64>, StoreError> {
    Ok(c.query_row(
        "SELECT id FROM folders WHERE mailbox = ?1 AND name = ?2",
        [mailbox, name],
        |r| r.get(0),
    )
    .optional()?)
}

/// The next modification sequence of the index.
fn next_modseq(c: &Connection) -> Result<i64, StoreError> {
    Ok(c.query_row(
        "SELECT COALESCE(MAX(modseq), 0) + 1 FROM messages",
        [],
        |r| r.get(0),
    )?)
}

/// Puts a message row into a folder under the folder's next UID; returns the UID.
pub(super) fn file_message(
    c: &Connection,
    seq: i64,
    mailbox: &str,
    folder: &str,
) -> Result<u32, StoreError> {
    let fid = ensure_folder(c, mailbox, folder, None)?;
    let uid: i64 = c.query_row("SELECT uidnext FROM folders WHERE id = ?1", [fid], |r| {
        r.get(0)
    })?;
    c.execute(
        "UPDATE folders SET uidnext = uidnext + 1 WHERE id = ?1",
        [fid],
    )?;
    let modseq = next_modseq(c)?;
    c.execute(
        "UPDATE messages SET folder_id = ?2, uid = ?3, modseq = ?4 WHERE seq = ?1",
        params![seq, fid, uid, modseq],
    )?;
    Ok(uid as u32)
}

/// (uidvalidity, uidnext) of a folder.
pub(super) fn folder_uids(c: &Connection, fid: i64) -> Result<(u32, u32), StoreError> {
    Ok(c.query_row(
        "SELECT uidvalidity, uidnext FROM folders WHERE id = ?1",
        [fid],
        |r| Ok((r.get::<_, i64>(0)? as u32, r.get::<_, i64>(1)? as u32)),
    )?)
}

/// The messages of a folder, ascending UID.
pub(super) fn folder_messages(c: &Connection, fid: i64) -> Result<Vec<FolderMessage>, StoreError> {
    let mut st = c.prepare(
        "SELECT uid, flags, keywords, size, received, modseq FROM messages
         WHERE folder_id = ?1 ORDER BY uid",
    )?;
    let rows = st.query_map([fid], |r| {
        Ok(FolderMessage {
            uid: r.get::<_, i64>(0)? as u32,
            flags: Flags::from_parts(r.get(1)?, &r.get::<_, String>(2)?),
            size: r.get::<_, i64>(3)? as u64,
            internal_date: r.get(4)?,
            modseq: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Writes a message's flags with a new modification sequence.
pub(super) fn write_flags(c: &Connection, seq: i64, flags: &Flags) -> Result<(), StoreError> {
    let modseq = next_modseq(c)?;
    c.execute(
        "UPDATE messages SET flags = ?2, keywords = ?3, modseq = ?4 WHERE seq = ?1",
        params![seq, flags.system, flags.keywords_text(), modseq],
    )?;
    Ok(())
}

/// A folder's name and special-use attribute, INBOX first then by name.
pub(super) fn folder_list(
    c: &Connection,
    mailbox: &str,
) -> Result<Vec<(String, Option<String>)>, StoreError> {
    let mut st = c.prepare(
        "SELECT name, special FROM folders WHERE mailbox = ?1
         ORDER BY name <> 'INBOX', name",
    )?;
    let rows = st.query_map([mailbox], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_index_files_its_messages_into_inbox_in_received_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        let old = Connection::open(&path).unwrap();
        old.execute_batch(include_str!("../../fixtures/store/index-v1.sql"))
            .unwrap();
        // Inserted out of received order, two mailboxes.
        for (id, mailbox, received) in [
            ("M1", "a@t.test", 30),
            ("M2", "a@t.test", 10),
            ("M3", "b@t.test", 20),
        ] {
            old.execute(
                "INSERT INTO messages(id, mailbox, received, size, blob, meta)
                 VALUES (?1, ?2, ?3, 1, ?1, x'7b7d')",
                params![id, mailbox, received],
            )
            .unwrap();
        }
        drop(old);
        let c = super::super::index::open(&path).unwrap();
        let v: i64 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, 3);
        let a = folder_id(&c, "a@t.test", INBOX).unwrap().unwrap();
        let uids: Vec<(u32, i64)> = folder_messages(&c, a)
            .unwrap()
            .into_iter()
            .map(|m| (m.uid, m.internal_date))
            .collect();
        assert_eq!(uids, [(1, 10), (2, 30)], "UIDs follow the received time");
        assert_eq!(folder_uids(&c, a).unwrap().1, 3);
        let b = folder_id(&c, "b@t.test", INBOX).unwrap().unwrap();
        assert_eq!(folder_messages(&c, b).unwrap().len(), 1);
        drop(c);
        // Opening again changes nothing.
        let c = super::super::index::open(&path).unwrap();
        assert_eq!(folder_uids(&c, a).unwrap().1, 3);
        assert_eq!(folder_messages(&c, a).unwrap().len(), 2);
    }
}

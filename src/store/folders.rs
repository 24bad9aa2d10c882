//! Folders, UIDs and flags of a mailbox, as IMAP sees them: the `Folders` trait the IMAP session
//! reaches the store through, and the values it passes.

use std::collections::BTreeSet;

use super::StoreError;

/// Changes to mailboxes (deliveries, appends, flags, moves, expunges, folders created, deleted
/// or renamed), so that IMAP sessions in IDLE wait for news of their mailbox instead of polling
/// the index: those made in this process, and those other processes announce through the index
/// backend (`IndexBackend::relay_changes`).
pub mod changes {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Mutex, MutexGuard, OnceLock};

    use tokio::sync::watch;

    fn senders() -> MutexGuard<'static, HashMap<String, watch::Sender<u64>>> {
        static SENDERS: OnceLock<Mutex<HashMap<String, watch::Sender<u64>>>> = OnceLock::new();
        SENDERS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn wake(sender: &watch::Sender<u64>) {
        sender.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Counts the subscriptions made, so that a cache of the watched mailboxes knows when to
    /// look again.
    static SUBSCRIPTIONS: AtomicU64 = AtomicU64::new(0);

    /// Tells the mailbox's watchers it changed (after the change is committed).
    pub fn notify(mailbox: &str) {
        if let Some(sender) = senders().get(&mailbox.to_ascii_lowercase()) {
            wake(sender);
        }
    }

    /// Tells every watched mailbox's watchers it may have changed (changes may have been
    /// missed, e.g. while the announcements of other processes could not be heard).
    pub fn notify_all() {
        for sender in senders().values() {
            wake(sender);
        }
    }

    /// The mailboxes someone watches now (lower case).
    pub fn watched() -> Vec<String> {
        let mut map = senders();
        map.retain(|_, s| s.receiver_count() > 0);
        map.keys().cloned().collect()
    }

    /// How many subscriptions were made so far: while it stays the same, nobody started
    /// watching a mailbox (some may have stopped).
    pub fn subscriptions() -> u64 {
        SUBSCRIPTIONS.load(Ordering::Acquire)
    }

    /// A receiver that sees every later [`notify`] of the mailbox. Channels nobody watches any
    /// more are dropped here, so the map grows only with the mailboxes watched.
    pub fn subscribe(mailbox: &str) -> watch::Receiver<u64> {
        let mut map = senders();
        map.retain(|_, s| s.receiver_count() > 0);
        let receiver = map
            .entry(mailbox.to_ascii_lowercase())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        SUBSCRIPTIONS.fetch_add(1, Ordering::Release);
        receiver
    }
}

/// The folder every mailbox has; its name is case-insensitive (RFC 9051 §5.1).
pub const INBOX: &str = "INBOX";

/// The special-use folders (RFC 6154) made on first login, with their attribute.
pub const SPECIAL_USE: &[(&str, &str)] = &[
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
];

/// System flags as bits; keywords are kept apart.
pub mod system {
    pub const SEEN: i64 = 1;
    pub const ANSWERED: i64 = 2;
    pub const FLAGGED: i64 = 4;
    pub const DELETED: i64 = 8;
    pub const DRAFT: i64 = 16;
    /// Every bit above, with its IMAP name.
    pub const ALL: &[(i64, &str)] = &[
        (SEEN, "\\Seen"),
        (ANSWERED, "\\Answered"),
        (FLAGGED, "\\Flagged"),
        (DELETED, "\\Deleted"),
        (DRAFT, "\\Draft"),
    ];
}

/// The flags of one message: system flag bits and keywords.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags {
    pub system: i64,
    pub keywords: BTreeSet<String>,
}

impl Flags {
    pub fn has(&self, bit: i64) -> bool {
        self.system & bit != 0
    }

    /// The keywords as the index keeps them (space-separated).
    pub fn keywords_text(&self) -> String {
        self.keywords.iter().cloned().collect::<Vec<_>>().join(" ")
    }

    pub fn from_parts(system: i64, keywords: &str) -> Flags {
        Flags {
            system,
            keywords: keywords.split_whitespace().map(str::to_string).collect(),
        }
    }

    /// Applies a STORE operation.
    pub fn apply(&mut self, op: FlagOp, other: &Flags) {
        match op {
            FlagOp::Replace => *self = other.clone(),
            FlagOp::Add => {
                self.system |= other.system;
                self.keywords.extend(other.keywords.iter().cloned());
            }
            FlagOp::Remove => {
                self.system &= !other.system;
                self.keywords.retain(|k| !other.keywords.contains(k));
            }
        }
    }
}

/// How STORE changes flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagOp {
    Replace,
    Add,
    Remove,
}

/// One folder of a mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderInfo {
    pub name: String,
    /// The special-use attribute (`\Sent`, ...), if any.
    pub special: Option<String>,
}

/// One message of a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderMessage {
    pub uid: u32,
    pub flags: Flags,
    pub size: u64,
    /// INTERNALDATE: seconds since the epoch (when the message was received or appended).
    pub internal_date: i64,
    pub modseq: i64,
}

/// A folder opened by SELECT or EXAMINE, or looked at by STATUS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderView {
    pub name: String,
    pub uid_validity: u32,
    pub uid_next: u32,
    /// Ascending UIDs: message sequence number n is `messages[n - 1]`.
    pub messages: Vec<FolderMessage>,
}

/// The folders of local mailboxes, for IMAP. Folder names are relative to the mailbox (an
/// address); `INBOX` is made on first use. Calls block (run them off the async reactor). A
/// mailbox whose keys were revoked answers `StoreError::Revoked` to anything that reads it.
pub trait Folders: Send + Sync {
    /// Makes INBOX and the special-use folders where missing.
    fn ensure_default_folders(&self, mailbox: &str) -> Result<(), StoreError>;
    /// The folders of a mailbox, INBOX first.
    fn folders(&self, mailbox: &str) -> Result<Vec<FolderInfo>, StoreError>;
    fn create_folder(&self, mailbox: &str, name: &str) -> Result<(), StoreError>;
    /// Deletes a folder and its messages (INBOX cannot be deleted).
    fn delete_folder(&self, mailbox: &str, name: &str) -> Result<(), StoreError>;
    /// Renames a folder (renaming INBOX is refused in this version).
    fn rename_folder(&self, mailbox: &str, from: &str, to: &str) -> Result<(), StoreError>;
    /// The folder's UIDVALIDITY, UIDNEXT and messages.
    fn select(&self, mailbox: &str, folder: &str) -> Result<FolderView, StoreError>;
    /// The bytes of one message, decrypted in memory.
    fn message(&self, mailbox: &str, folder: &str, uid: u32) -> Result<Vec<u8>, StoreError>;
    /// One message to be read piece by piece (a large one): its keys are opened here, its blob
    /// only when read.
    fn message_source(
        &self,
        mailbox: &str,
        folder: &str,
        uid: u32,
    ) -> Result<super::stream::MessageSource, StoreError>;
    /// Changes the flags of the given messages; returns them as they are now.
    fn set_flags(
        &self,
        mailbox: &str,
        folder: &str,
        uids: &[u32],
        op: FlagOp,
        flags: &Flags,
    ) -> Result<Vec<FolderMessage>, StoreError>;
    /// Copies messages to another folder; returns (source uid, new uid) pairs.
    fn copy(
        &self,
        mailbox: &str,
        folder: &str,
        uids: &[u32],
        to: &str,
    ) -> Result<Vec<(u32, u32)>, StoreError>;
    /// Moves messages to another folder (new UIDs there); returns (source uid, new uid) pairs.
    fn move_to(
        &self,
        mailbox: &str,
        folder: &str,
        uids: &[u32],
        to: &str,
    ) -> Result<Vec<(u32, u32)>, StoreError>;
    /// Removes the messages flagged `\Deleted` (only those in `uids` when given); returns the
    /// UIDs removed.
    fn expunge(
        &self,
        mailbox: &str,
        folder: &str,
        uids: Option<&[u32]>,
    ) -> Result<Vec<u32>, StoreError>;
    /// Stores a message in a folder with flags; returns (UIDVALIDITY, new UID).
    fn append(
        &self,
        mailbox: &str,
        folder: &str,
        message: &[u8],
        flags: &Flags,
    ) -> Result<(u32, u32), StoreError>;
}

/// A folder name as the index keeps it: INBOX in any case is `INBOX`.
pub fn canonical_folder(name: &str) -> String {
    if name.eq_ignore_ascii_case(INBOX) {
        INBOX.to_string()
    } else {
        name.to_string()
    }
}

/// The set of flags as a set of names, for tests and logs.
pub fn flag_names(flags: &Flags) -> Vec<String> {
    let mut out: Vec<String> = system::ALL
        .iter()
        .filter(|(bit, _)| flags.has(*bit))
        .map(|(_, n)| n.to_string())
        .collect();
    out.extend(flags.keywords.iter().cloned());
    out
}

//! Mailbox changes announced between the nodes of one database: a transaction that changes a
//! mailbox sends a `NOTIFY` on [`CHANNEL`] (delivered to listeners only if it commits), and each
//! node listening turns the notifications of other processes into wakes of its own watchers
//! (`folders::changes`), so that an IMAP IDLE on one node hears at once of mail another node
//! delivered.
//!
//! The payload is `<token> <origin>`: the token is a keyed hash of the mailbox (HMAC-SHA256
//! under a key derived from the service key, which every node of one database holds), so that
//! whoever can listen on the database learns that some mailbox changed and when, not which
//! address; the origin is a random tag of the sending process, so that a process skips its own
//! announcements (its watchers were woken already).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use aws_lc_rs::hmac;

use crate::pg::Heard;
use crate::store::folders::changes;

/// The channel the nodes notify and listen on.
pub const CHANNEL: &str = "sealpost_mailbox";

/// What the service key's HMAC key is derived for.
pub const PURPOSE: &str = "sealpost mailbox change v1";

/// Bytes of the HMAC kept in a token (128 bits, hex in the payload).
const TOKEN_BYTES: usize = 16;

/// Tokens of mailboxes for the announcements, and the relay of the ones heard.
pub struct MailboxChanges {
    key: hmac::Key,
    /// The mailboxes watched here, by token.
    known: Mutex<Known>,
}

/// The watched mailboxes (lower case) by token, as of a count of subscriptions.
struct Known {
    subscriptions: Option<u64>,
    by_token: HashMap<String, String>,
}

/// This process's tag in payloads, random, the same for every store the process opens.
fn origin() -> &'static str {
    static ORIGIN: OnceLock<String> = OnceLock::new();
    ORIGIN.get_or_init(|| hex::encode(rand::random::<[u8; 8]>()))
}

impl MailboxChanges {
    /// Tokens made with `key` (every node of one database must use the same key; the store uses
    /// `ServiceKey::fingerprint_key(PURPOSE)`).
    pub fn new(key: hmac::Key) -> MailboxChanges {
        MailboxChanges {
            key,
            known: Mutex::new(Known {
                subscriptions: None,
                by_token: HashMap::new(),
            }),
        }
    }

    /// The mailbox's token: the hex of the first 16 bytes of HMAC-SHA256(key, lower-case address).
    pub fn token(&self, mailbox: &str) -> String {
        let mac = hmac::sign(&self.key, mailbox.to_ascii_lowercase().as_bytes());
        hex::encode(&mac.as_ref()[..TOKEN_BYTES])
    }

    /// The payload announcing a change of `mailbox`.
    pub fn payload(&self, mailbox: &str) -> String {
        format!("{} {}", self.token(mailbox), origin())
    }

    /// Passes on what the listening connection heard: wakes the watchers of the mailbox a
    /// notification of another process names (a mailbox nobody here watches is ignored), or
    /// every watcher after a reconnect.
    pub fn heard(&self, heard: Heard<'_>) {
        let payload = match heard {
            Heard::Resumed => return changes::notify_all(),
            Heard::Notification(payload) => payload,
        };
        let Some((token, from)) = payload.split_once(' ') else {
            return;
        };
        if from == origin() {
            return;
        }
        let mailbox = {
            let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
            // The tokens are made again only when someone started watching a mailbox since:
            // a notification is a lookup, whatever the number of mailboxes watched.
            let subscriptions = changes::subscriptions();
            if known.subscriptions != Some(subscriptions) {
                let mut old: HashMap<String, String> = std::mem::take(&mut known.by_token)
                    .into_iter()
                    .map(|(token, name)| (name, token))
                    .collect();
                for name in changes::watched() {
                    let token = old.remove(&name).unwrap_or_else(|| self.token(&name));
                    known.by_token.insert(token, name);
                }
                known.subscriptions = Some(subscriptions);
            }
            known.by_token.get(token).cloned()
        };
        if let Some(name) = mailbox {
            changes::notify(&name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes_under(key: &[u8]) -> MailboxChanges {
        MailboxChanges::new(hmac::Key::new(hmac::HMAC_SHA256, key))
    }

    #[test]
    fn tokens_are_keyed_case_blind_and_hide_the_address() {
        let a = changes_under(b"one key");
        let t = a.token("Alice@Contoso.test");
        assert_eq!(t, a.token("alice@contoso.test"));
        assert_eq!(t.len(), 2 * TOKEN_BYTES);
        assert_ne!(t, a.token("bob@contoso.test"));
        assert_ne!(t, changes_under(b"another key").token("alice@contoso.test"));
        let payload = a.payload("alice@contoso.test");
        assert!(
            !payload.contains("alice") && !payload.contains("contoso"),
            "{payload}"
        );
    }

    #[test]
    fn a_notification_of_another_process_wakes_the_mailbox_watchers_only() {
        let a = changes_under(b"relay key");
        let mut watcher = changes::subscribe("relay-watched@contoso.test");
        let mut other = changes::subscribe("relay-other@contoso.test");
        let from_elsewhere = format!("{} someone-else", a.token("relay-watched@contoso.test"));
        a.heard(Heard::Notification(&from_elsewhere));
        assert!(watcher.has_changed().unwrap());
        assert!(!other.has_changed().unwrap());
        watcher.mark_unchanged();

        // This process's own announcement: its watchers were woken when it committed.
        a.heard(Heard::Notification(
            &a.payload("relay-watched@contoso.test"),
        ));
        assert!(!watcher.has_changed().unwrap());
        // Garbage and unknown tokens wake nobody.
        a.heard(Heard::Notification("nonsense"));
        a.heard(Heard::Notification("00ff other"));
        assert!(!watcher.has_changed().unwrap());

        // A mailbox first watched after the tokens were made is heard too.
        let later = changes::subscribe("relay-later@contoso.test");
        let for_later = format!("{} someone-else", a.token("relay-later@contoso.test"));
        a.heard(Heard::Notification(&for_later));
        assert!(later.has_changed().unwrap());
        assert!(!watcher.has_changed().unwrap());

        // After a reconnect everybody looks again.
        a.heard(Heard::Resumed);
        assert!(watcher.has_changed().unwrap());
        assert!(other.has_changed().unwrap());
        other.mark_unchanged();
    }
}

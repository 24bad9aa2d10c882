//! Recognising a message sent again by a client that never saw our 250.
//!
//! Between the moment a message is safely in the queue and the moment the client has read our
//! 250, a crash of either side (or a lost connection) leaves the client believing the message was
//! not taken, so it sends it again later (RFC 1047). Each accepted transaction's fingerprint —
//! an HMAC under the service key of sender, recipients and the exact message bytes — is kept in
//! its queue file's envelope (durable with the message, before the 250) and, once the message has
//! left the queue, in `queue/transmissions.log` for [`WINDOW`]. A transaction with a fingerprint
//! seen in that window is answered 250 with the first copy's queue id and not queued again.
//!
//! With the queue in a database shared by several nodes ([`SharedTransmissions`]), the
//! fingerprints are there instead of the log: each is recorded by the statement that queues its
//! message, and a transmission this node did not accept itself is looked up in the database, so
//! a client that sends the message again to another node gets the first copy's ids too.
//!
//! Only messages with a Message-ID header or a Received header are fingerprinted: two such
//! transmissions with the same sender, recipients and bytes (the Message-ID, or the previous hop's
//! Received header with its queue id and time) are the same message.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::{QueueError, Spool};
use crate::crypto::keyfile::ServiceKey;

/// How long a fingerprint is remembered after the message was accepted.
pub const WINDOW: i64 = 24 * 3600;

/// Fingerprints kept where every node of a shared queue sees them (the queue's database). The
/// queue records the fingerprint in an envelope's `transmission` with the message itself.
pub trait SharedTransmissions: Send + Sync {
    /// The ids of the messages accepted with this fingerprint at or after `since` (unix
    /// seconds), by any node; `None` when there are none.
    fn accepted_as(&self, fingerprint: &[u8; 32], since: i64)
        -> Result<Option<String>, QueueError>;

    /// Forgets, in the background, what was accepted before `before`.
    fn forget_before(&self, before: i64);

    /// Where they are kept, for logs.
    fn location(&self) -> String;
}

/// The fingerprints of recently accepted transactions.
pub struct Retransmissions {
    /// Derived from the service key once.
    key: aws_lc_rs::hmac::Key,
    /// Where every node's fingerprints are, when the queue is shared; then there is no log.
    shared: Option<Arc<dyn SharedTransmissions>>,
    log_path: PathBuf,
    seen: Mutex<Seen>,
    log: Mutex<Option<File>>,
}

/// A transaction's fingerprint, computed as its bytes arrive: HMAC-SHA256 of the bytes, then
/// the sender and the sorted recipients (lowercased), then the three lengths, so that no two
/// different transactions share an input.
#[derive(Clone)]
pub struct Fingerprinter {
    ctx: aws_lc_rs::hmac::Context,
    len: u64,
}

impl Fingerprinter {
    /// More of the message's bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.ctx.update(data);
        self.len = self.len.saturating_add(data.len() as u64);
    }

    /// The fingerprint (hex) of the bytes seen with this envelope.
    pub fn finish(mut self, mail_from: &str, recipients: &[String]) -> String {
        let mut rcpts: Vec<String> = recipients.iter().map(|r| r.to_ascii_lowercase()).collect();
        rcpts.sort();
        let joined = rcpts.join("\0");
        let from = mail_from.to_ascii_lowercase();
        self.ctx.update(from.as_bytes());
        self.ctx.update(joined.as_bytes());
        for len in [self.len, from.len() as u64, joined.len() as u64] {
            self.ctx.update(&len.to_be_bytes());
        }
        hex::encode(self.ctx.sign().as_ref())
    }
}

/// Fingerprint → (queue ids, accepted at), and when expired entries are next dropped (the map
/// stays empty with a shared queue, whose fingerprints are all in its database).
struct Seen {
    map: HashMap<[u8; 32], (String, i64)>,
    next_prune: i64,
}

/// How often expired fingerprints are dropped from memory (seconds).
const PRUNE_EVERY: i64 = 60;

/// A fingerprint's bytes from its hex form.
pub(crate) fn raw(fingerprint: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(fingerprint, &mut out).ok()?;
    Some(out)
}

/// A line of `transmissions.log` (`<fingerprint> <accepted at> <queue ids>`) still within the
/// window at `now`; `None` for an older one or one cut short by a crash.
fn log_line(line: &str, now: i64) -> Option<([u8; 32], i64, &str)> {
    let mut parts = line.splitn(3, ' ');
    let (fp, at, ids) = (parts.next()?, parts.next()?, parts.next()?);
    let at = at.parse::<i64>().ok()?;
    (now - at < WINDOW).then_some(())?;
    Some((raw(fp)?, at, ids))
}

/// The fingerprints in the spool's `transmissions.log` accepted within the window at `now`,
/// one per queue id: (fingerprint, queue id, accepted at). Nothing when there is no log. For
/// `storage migrate`, which copies them where a shared queue keeps them.
pub fn recent_in_log(spool: &Spool, now: i64) -> Result<Vec<([u8; 32], String, i64)>, QueueError> {
    let path = spool.root().join("transmissions.log");
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(QueueError::io(&path)(e)),
    };
    let mut out = Vec::new();
    for line in BufReader::new(file).lines() {
        let line = line.map_err(QueueError::io(&path))?;
        if let Some((fp, at, ids)) = log_line(&line, now) {
            out.extend(
                ids.split(' ')
                    .filter(|id| !id.is_empty())
                    .map(|id| (fp, id.to_string(), at)),
            );
        }
    }
    Ok(out)
}

impl Retransmissions {
    /// The fingerprints of a queue shared by several nodes, kept in `shared` (no log, and none
    /// in memory: every fingerprint is looked up there).
    pub fn shared(
        spool: &Spool,
        key: &ServiceKey,
        shared: Arc<dyn SharedTransmissions>,
        now: i64,
    ) -> Self {
        shared.forget_before(now - WINDOW);
        Retransmissions {
            key: key.fingerprint_key("sealpost transmission v2"),
            shared: Some(shared),
            log_path: spool.root().join("transmissions.log"),
            seen: Mutex::new(Seen {
                map: HashMap::new(),
                next_prune: now + PRUNE_EVERY,
            }),
            log: Mutex::new(None),
        }
    }

    /// Loads the fingerprints of messages in the queue and of those that left it within the
    /// window, and compacts the log. Run after `Spool::recover`.
    pub fn open(spool: &Spool, key: &ServiceKey, now: i64) -> Result<Self, QueueError> {
        let log_path = spool.root().join("transmissions.log");
        let mut seen: HashMap<[u8; 32], (String, i64)> = HashMap::new();
        let mut kept = Vec::new();
        match File::open(&log_path) {
            Ok(file) => {
                for line in BufReader::new(file).lines() {
                    let line = line.map_err(QueueError::io(&log_path))?;
                    if let Some((fp, at, ids)) = log_line(&line, now) {
                        seen.insert(fp, (ids.to_string(), at));
                        kept.push(line);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(QueueError::io(&log_path)(e)),
        }
        for entry in spool.list()? {
            if let Some(fp) = entry.envelope.transmission.as_deref().and_then(raw) {
                seen.insert(fp, (entry.envelope.id, entry.envelope.received_at));
            }
        }
        let tmp = log_path.with_extension("log.tmp");
        let mut text = kept.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        fs::write(&tmp, text).map_err(QueueError::io(&tmp))?;
        fs::rename(&tmp, &log_path).map_err(QueueError::io(&log_path))?;
        let log = OpenOptions::new()
            .append(true)
            .open(&log_path)
            .map_err(QueueError::io(&log_path))?;
        Ok(Retransmissions {
            key: key.fingerprint_key("sealpost transmission v2"),
            shared: None,
            log_path,
            seen: Mutex::new(Seen {
                map: seen,
                next_prune: now + PRUNE_EVERY,
            }),
            log: Mutex::new(Some(log)),
        })
    }

    /// The fingerprint of a transaction (hex); see [`Fingerprinter`].
    pub fn fingerprint(&self, mail_from: &str, recipients: &[String], data: &[u8]) -> String {
        let mut f = self.fingerprinter();
        f.update(data);
        f.finish(mail_from, recipients)
    }

    /// A fingerprint computed while the message arrives.
    pub fn fingerprinter(&self) -> Fingerprinter {
        Fingerprinter {
            ctx: aws_lc_rs::hmac::Context::with_key(&self.key),
            len: 0,
        }
    }

    /// The queue ids a transmission with this fingerprint was accepted as, within the window:
    /// by this process, or with a shared queue by any node (looked up there: the database holds
    /// this node's fingerprints too, so nothing is kept in memory). A shared store that cannot
    /// answer is logged and taken as "not seen": the message is queued (at worst a duplicate).
    pub fn accepted_as(&self, fingerprint: &str, now: i64) -> Option<String> {
        let fp = raw(fingerprint)?;
        if let Some(shared) = &self.shared {
            return match shared.accepted_as(&fp, now - WINDOW + 1) {
                Ok(ids) => ids,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot look up a transmission's fingerprint; queued as new");
                    None
                }
            };
        }
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.map
            .get(&fp)
            .filter(|(_, at)| now - at < WINDOW)
            .map(|(ids, _)| ids.clone())
    }

    /// A transmission was queued (its fingerprint is in the queue files' envelopes, or with a
    /// shared queue in the database). Expired entries are dropped at most once a minute, not on
    /// every insert.
    pub fn accepted(&self, fingerprint: &str, ids: &str, now: i64) {
        let Some(fp) = raw(fingerprint) else { return };
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if now >= seen.next_prune {
            seen.map.retain(|_, (_, at)| now - *at < WINDOW);
            seen.next_prune = now + PRUNE_EVERY;
            if let Some(shared) = &self.shared {
                shared.forget_before(now - WINDOW);
            }
        }
        if self.shared.is_none() {
            seen.map.insert(fp, (ids.to_string(), now));
        }
    }

    /// A message leaves the queue: its fingerprint moves to the log for the rest of the window.
    /// Written without fsync: losing a line costs at most a duplicate, never a message. With a
    /// shared queue there is nothing to do: the fingerprint stays in the shared store.
    pub fn left_queue(&self, fingerprint: &str, id: &str, accepted_at: i64) {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(file) = log.as_mut() {
            let line = format!("{fingerprint} {accepted_at} {id}\n");
            if let Err(e) = file.write_all(line.as_bytes()) {
                tracing::warn!(path = %self.log_path.display(), error = %e, "cannot record a delivered message's fingerprint");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::Envelope;
    use std::sync::Arc;

    fn setup() -> (tempfile::TempDir, Spool, Arc<ServiceKey>) {
        let dir = tempfile::tempdir().unwrap();
        let key = Arc::new(ServiceKey::load_or_create(&dir.path().join("keys")).unwrap());
        let spool = Spool::open(dir.path(), key.clone()).unwrap();
        (dir, spool, key)
    }

    #[test]
    fn fingerprints_depend_on_envelope_and_bytes_and_key() {
        let (_d, spool, key) = setup();
        let r = Retransmissions::open(&spool, &key, 1000).unwrap();
        let to = vec!["b@x.test".to_string(), "c@x.test".to_string()];
        let swapped = vec!["C@x.test".to_string(), "b@x.test".to_string()];
        let a = r.fingerprint("a@x.test", &to, b"Message-ID: <1@x>\r\n\r\nhi\r\n");
        assert_eq!(a.len(), 64);
        assert_eq!(
            a,
            r.fingerprint("A@x.test", &swapped, b"Message-ID: <1@x>\r\n\r\nhi\r\n")
        );
        assert_ne!(
            a,
            r.fingerprint("a@x.test", &to, b"Message-ID: <1@x>\r\n\r\nhi!\r\n")
        );
        assert_ne!(
            a,
            r.fingerprint("a@x.test", &to[..1], b"Message-ID: <1@x>\r\n\r\nhi\r\n")
        );
        let (_d2, spool2, key2) = setup();
        let other = Retransmissions::open(&spool2, &key2, 1000).unwrap();
        assert_ne!(
            a,
            other.fingerprint("a@x.test", &to, b"Message-ID: <1@x>\r\n\r\nhi\r\n"),
            "another server's key gives another fingerprint"
        );
    }

    #[test]
    fn a_fingerprint_made_piece_by_piece_is_the_whole_ones() {
        let (_d, spool, key) = setup();
        let r = Retransmissions::open(&spool, &key, 1000).unwrap();
        let to = vec!["b@x.test".to_string()];
        let data = b"Message-ID: <1@x>\r\n\r\nhello there\r\n";
        let mut f = r.fingerprinter();
        for piece in data.chunks(5) {
            f.update(piece);
        }
        assert_eq!(
            f.finish("a@x.test", &to),
            r.fingerprint("a@x.test", &to, data)
        );
        // Where the bytes end and the envelope starts is part of the input.
        assert_ne!(
            r.fingerprint("a@x.test", &to, b"x"),
            r.fingerprint("xa@x.test", &to, b"")
        );
    }

    #[test]
    fn queued_and_logged_fingerprints_survive_a_restart_within_the_window() {
        let (_d, spool, key) = setup();
        let r = Retransmissions::open(&spool, &key, 1000).unwrap();
        let queued = r.fingerprint("a@x.test", &["b@x.test".into()], b"one");
        let left = r.fingerprint("a@x.test", &["b@x.test".into()], b"two");
        let old = r.fingerprint("a@x.test", &["b@x.test".into()], b"three");
        let mut env = Envelope::new(
            "0660DE2B47832D5343F6",
            "a@x.test",
            vec!["b@x.test".into()],
            "h",
            "c",
            1000,
        );
        env.transmission = Some(queued.clone());
        spool.enqueue(&env, b"one").unwrap();
        r.left_queue(&left, "0660DE2B47832D5343F7", 1000);
        r.left_queue(&old, "0660DE2B47832D5343F8", 1000 - WINDOW);
        assert_eq!(
            r.accepted_as(&left, 1000),
            None,
            "not in memory until recorded"
        );
        r.accepted(&left, "0660DE2B47832D5343F7", 1000);
        assert!(r.accepted_as(&left, 1000).is_some());
        assert_eq!(r.accepted_as(&left, 1000 + WINDOW), None, "expired");
        let later = r.fingerprint("a@x.test", &["b@x.test".into()], b"four");
        r.accepted(&later, "0660DE2B47832D5343F9", 1000 + WINDOW + PRUNE_EVERY);
        assert_eq!(
            r.seen.lock().unwrap().map.len(),
            1,
            "expired fingerprints are dropped from memory"
        );
        drop(r);

        let again = Retransmissions::open(&spool, &key, 1010).unwrap();
        assert_eq!(
            again.accepted_as(&queued, 1010).as_deref(),
            Some("0660DE2B47832D5343F6")
        );
        assert_eq!(
            again.accepted_as(&left, 1010).as_deref(),
            Some("0660DE2B47832D5343F7")
        );
        assert_eq!(again.accepted_as(&old, 1010), None);
        let log = fs::read_to_string(spool.root().join("transmissions.log")).unwrap();
        assert_eq!(
            log.lines().count(),
            1,
            "expired lines are compacted away: {log}"
        );
    }
}

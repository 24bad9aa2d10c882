//! Store operations behind `sealpost store …` and `mailbox export`: key rotations and moves that
//! re-wrap keys without touching content, reencrypt, crypto-shred, verify, audit verify, export.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::backend::{KeyIndex, MailboxKeyRow, Shredded};
use super::binding;
use super::encrypted::EncryptedStore;
use super::kek::Kek;
use super::{write_maildir_file, MailStore, StoreError};
use crate::config::PolicyRef;
use crate::crypto::sealing::SecretKey;
use crate::keys::KekRef;

pub use super::audit_ops::{record_event, verify_audit, verify_earlier_audit_file};

/// Progress of a long operation (the CLI draws a bar; tests pass `NoProgress`).
pub trait Progress {
    fn begin(&self, what: &str, total: u64);
    fn step(&self);
    fn finish(&self);
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn begin(&self, _: &str, _: u64) {}
    fn step(&self) {}
    fn finish(&self) {}
}

#[derive(Debug, PartialEq, Eq)]
pub struct PolicyRotation {
    pub old_generation: i64,
    pub new_generation: i64,
    pub mailbox_keys: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub struct RootRotation {
    pub generation: i64,
    pub old_key_id: String,
    pub new_key_id: String,
}

#[derive(Debug, PartialEq, Eq)]
pub struct PolicyMove {
    /// The policy the mailbox key was under ("none" if it had no key).
    pub from: String,
    pub to: String,
    /// Messages of the mailbox still stored in clear (until `reencrypt`).
    pub plain_messages: u64,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reencryption {
    pub mailboxes_moved: u64,
    pub messages_encrypted: u64,
    /// Mailboxes that could not be moved (e.g. their configured policy was revoked): `addr: why`.
    pub skipped: Vec<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Revocation {
    pub generations: u64,
    pub mailbox_keys: u64,
    /// Messages that can no longer be read.
    pub messages: u64,
}

#[derive(Debug, Default)]
pub struct Verification {
    pub checked: u64,
    pub ok: u64,
    /// Messages failing authentication: `mailbox id: problem`.
    pub failures: Vec<String>,
    /// Messages whose keys are revoked or unavailable.
    pub unreadable: Vec<String>,
    /// Blob files no index row refers to.
    pub orphans: Vec<String>,
}

fn policy_of(ix: &dyn KeyIndex, row: &MailboxKeyRow) -> Result<String, StoreError> {
    Ok(match row.policy_key_id {
        Some(id) => ix.policy_key(id)?.map(|pk| pk.policy).unwrap_or_default(),
        None => "none".into(),
    })
}

/// `store policy rotate NAME`: a new policy key; every mailbox key under the old one is re-wrapped,
/// then the old one's wraps are destroyed. No message content is touched.
pub fn rotate_policy(
    store: &EncryptedStore,
    name: &str,
    progress: &dyn Progress,
) -> Result<PolicyRotation, StoreError> {
    let tx = store.index().write()?;
    let ix = tx.keys();
    let old = ix.active_policy_key(name)?.ok_or_else(|| {
        StoreError::Policy(format!(
            "policy {name} has no key yet (no mailbox was stored under it)"
        ))
    })?;
    let old_key = store
        .keyring
        .policy_key(&*ix, &old, "store policy rotate")?;
    let (new, new_key) = store
        .keyring
        .create_policy_key(&*ix, name, "store policy rotate")?;
    let rows = ix.mailbox_keys_under(old.id)?;
    progress.begin("re-wrapping mailbox keys", rows.len() as u64);
    for row in &rows {
        let wrapped = row.wrapped.as_deref().unwrap_or_default();
        let mkey = store
            .keyring
            .open_mailbox_wrap(&old_key, name, &row.mailbox, wrapped)?;
        let wrapped = binding::wrap_mailbox_key(&new_key, &row.mailbox, &mkey)?;
        ix.rewrap_mailbox_key(row.id, new.id, &wrapped)?;
        progress.step();
    }
    ix.retire_policy_key(old.id)?;
    store.keyring.record(
        &*ix,
        "policy-rotate",
        name,
        "",
        &format!(
            "generation {} -> {}; {} mailbox key(s) re-wrapped; old policy key destroyed",
            old.generation,
            new.generation,
            rows.len()
        ),
    )?;
    drop(ix);
    tx.commit()?;
    progress.finish();
    Ok(PolicyRotation {
        old_generation: old.generation,
        new_generation: new.generation,
        mailbox_keys: rows.len() as u64,
    })
}

/// `store root rotate NAME --old K --new K`: re-wraps the policy key under a new root key in place
/// of the old one; either may be a key file or a token key, so this also moves a root key into an
/// HSM. The configuration must then name the new key.
pub fn rotate_root(
    store: &EncryptedStore,
    name: &str,
    old: &KekRef,
    new: &KekRef,
) -> Result<RootRotation, StoreError> {
    let load = |r: &KekRef| Kek::open(r).map_err(|e| StoreError::Policy(format!("{r}: {e}")));
    let (old_key, new_key) = (load(old)?, load(new)?);
    let tx = store.index().write()?;
    let ix = tx.keys();
    let pk = ix
        .active_policy_key(name)?
        .ok_or_else(|| StoreError::Policy(format!("policy {name} has no key yet")))?;
    let wraps = ix.wraps(pk.id)?;
    let ids: Vec<&str> = wraps.iter().map(|w| w.key_id.as_str()).collect();
    let (old_id, new_id) = (old_key.id(), new_key.id());
    if ids.contains(&new_id.as_str()) {
        return Err(StoreError::Policy(format!(
            "{new} is already a key of policy {name}"
        )));
    }
    let wrap = wraps
        .iter()
        .find(|w| w.kind == "root" && w.key_id == old_id)
        .ok_or_else(|| {
            StoreError::Policy(format!(
                "{old} (key id {old_id}) is not a root key of policy {name} (its keys: {})",
                ids.join(", ")
            ))
        })?;
    let pkey = old_key.unwrap_key(&wrap.wrapped).map_err(|e| {
        StoreError::Integrity(format!(
            "the policy key of {name} does not unwrap under {old}: {e}"
        ))
    })?;
    store.keyring.record(
        &*ix,
        "policy-key-unwrap",
        name,
        &format!("root {old} {old_id}"),
        "store root rotate",
    )?;
    let wrapped = new_key
        .wrap(&pkey)
        .map_err(|e| StoreError::Policy(format!("{new}: {e}")))?;
    ix.replace_root_wrap(pk.id, &old_id, &new_id, &wrapped)?;
    store.keyring.record(
        &*ix,
        "root-rotate",
        name,
        &format!("root {new} {new_id}"),
        &format!("root key {old_id} replaced by {new_id}"),
    )?;
    drop(ix);
    tx.commit()?;
    Ok(RootRotation {
        generation: pk.generation,
        old_key_id: old_id,
        new_key_id: new_id,
    })
}

/// Puts a mailbox's key under `policy` (re-wrap, or a new key when it has none). Inside the
/// caller's transaction.
fn move_mailbox(
    store: &EncryptedStore,
    ix: &dyn KeyIndex,
    mailbox: &str,
    policy: &str,
    reason: &str,
) -> Result<(String, i64, SecretKey), StoreError> {
    store.keyring.policy(policy)?;
    match ix.current_mailbox_key(mailbox)? {
        Some(row) if row.state == "active" => {
            let from = policy_of(ix, &row)?;
            let mkey = store.keyring.mailbox_key(ix, &row, reason)?;
            let (pk, pkey) = store.keyring.current_policy_key(ix, policy, reason)?;
            if row.policy_key_id != Some(pk.id) {
                let wrapped = binding::wrap_mailbox_key(&pkey, mailbox, &mkey)?;
                ix.rewrap_mailbox_key(row.id, pk.id, &wrapped)?;
            }
            Ok((from, row.id, mkey))
        }
        _ => {
            let (id, key) = store.keyring.new_mailbox_key(ix, mailbox, policy, reason)?;
            Ok(("none".into(), id, key))
        }
    }
}

/// `store mailbox set-policy ADDR NAME`: re-wraps one mailbox key under another policy.
pub fn set_policy(
    store: &EncryptedStore,
    mailbox: &str,
    policy: &str,
) -> Result<PolicyMove, StoreError> {
    if policy == "none" {
        return Err(StoreError::Policy(
            "set-policy only moves mailboxes onto a policy; \"none\" would leave keys without protection".into(),
        ));
    }
    let mailbox = mailbox.to_ascii_lowercase();
    let tx = store.index().write()?;
    let ix = tx.keys();
    if store.configured_policy(&mailbox).is_none()
        && ix.current_mailbox_key(&mailbox)?.is_none()
        && tx.messages().count(&mailbox)? == 0
    {
        return Err(StoreError::NoSuchMailbox(mailbox));
    }
    let reason = format!("store mailbox set-policy {mailbox} {policy}");
    let (from, _, _) = move_mailbox(store, &*ix, &mailbox, policy, &reason)?;
    let plain = tx
        .messages()
        .messages(&mailbox)?
        .iter()
        .filter(|m| m.mailbox_key_id.is_none())
        .count() as u64;
    store.keyring.record(
        &*ix,
        "set-policy",
        policy,
        "",
        &format!("{mailbox}: {from} -> {policy}"),
    )?;
    drop(ix);
    tx.commit()?;
    Ok(PolicyMove {
        from,
        to: policy.to_string(),
        plain_messages: plain,
    })
}

/// `store reencrypt`: moves every mailbox onto its configured policy (re-wrapping its key) and
/// encrypts messages still stored in clear. The only operation that rewrites content.
pub fn reencrypt(
    store: &EncryptedStore,
    progress: &dyn Progress,
) -> Result<Reencryption, StoreError> {
    let mut report = Reencryption::default();
    for (mailbox, configured) in &store.mailboxes {
        let PolicyRef::Named(policy) = configured else {
            continue;
        };
        let reason = format!("store reencrypt {mailbox}");
        let (mk_id, mkey, plain) = {
            let tx = store.index().write()?;
            let ix = tx.keys();
            let before = ix.current_mailbox_key(mailbox)?;
            let plain: Vec<_> = tx
                .messages()
                .messages(mailbox)?
                .into_iter()
                .filter(|m| m.mailbox_key_id.is_none())
                .collect();
            let current = match &before {
                Some(row) if row.state == "active" => Some(policy_of(&*ix, row)?),
                _ => None,
            };
            let aligned = current.as_deref().is_none_or(|c| c == policy.as_str());
            if aligned && plain.is_empty() {
                continue; // nothing stored in clear, nothing under another policy
            }
            let (from, mk_id, mkey) = match move_mailbox(store, &*ix, mailbox, policy, &reason) {
                Ok(moved) => moved,
                Err(
                    e @ (StoreError::Revoked { .. }
                    | StoreError::KeyUnavailable { .. }
                    | StoreError::Policy(_)),
                ) => {
                    report.skipped.push(format!("{mailbox}: {e}"));
                    continue;
                }
                Err(e) => return Err(e),
            };
            if from != *policy {
                report.mailboxes_moved += 1;
                store.keyring.record(
                    &*ix,
                    "reencrypt",
                    policy,
                    "",
                    &format!("{mailbox}: {from} -> {policy}"),
                )?;
            }
            drop(ix);
            tx.commit()?;
            (mk_id, mkey, plain)
        };
        progress.begin(&format!("encrypting {mailbox}"), plain.len() as u64);
        for row in plain {
            let bytes = store.open_message(&row, None)?;
            let (framed, mut new) =
                EncryptedStore::seal_message(&row.id, mailbox, &bytes, Some((mk_id, &mkey)))?;
            new.seq = row.seq;
            new.received = row.received;
            new.flags = row.flags;
            store.blobs.write(&new.blob, &framed)?;
            let updated = store.index().write().and_then(|tx| {
                tx.messages().update_message_crypto(&new)?;
                tx.commit()
            });
            if let Err(e) = updated {
                let _ = store.blobs.remove(&new.blob);
                return Err(e);
            }
            store.blobs.remove(&row.blob)?;
            report.messages_encrypted += 1;
            progress.step();
        }
        progress.finish();
    }
    if report.messages_encrypted > 0 {
        // The plain metadata of the old rows must not survive in the WAL's old page images.
        store.index().checkpoint()?;
    }
    Ok(report)
}

/// `store policy revoke NAME`: destroys every wrap of the policy's keys and of the mailbox keys
/// under it (crypto-shred). With `confirm = false` nothing changes and the counts are a preview.
pub fn revoke_policy(
    store: &EncryptedStore,
    name: &str,
    confirm: bool,
) -> Result<Revocation, StoreError> {
    let tx = store.index().write()?;
    let ix = tx.keys();
    let Shredded {
        generations,
        mailbox_keys,
        messages,
    } = ix.revoke_policy(name)?;
    if generations == 0 {
        return Err(StoreError::Policy(format!(
            "policy {name} has no live key in this store (never used, or already revoked)"
        )));
    }
    let report = Revocation {
        generations,
        mailbox_keys,
        messages,
    };
    if !confirm {
        return Ok(report); // dropping the transaction rolls it back
    }
    store.keyring.record(
        &*ix,
        "policy-revoke",
        name,
        "",
        &format!("{mailbox_keys} mailbox key(s) destroyed; {messages} message(s) unreadable"),
    )?;
    drop(ix);
    tx.commit()?;
    store.index().checkpoint()?;
    store.keyring.forget();
    Ok(report)
}

/// `store verify`: authenticates every message and looks for blobs nobody refers to.
pub fn verify(store: &EncryptedStore, progress: &dyn Progress) -> Result<Verification, StoreError> {
    let rows = store.index().read()?.messages().all_messages()?;
    let mut report = Verification::default();
    // By key row and the mailbox of the rows using it: a key is checked against each mailbox.
    type Found = Result<SecretKey, (bool, String)>;
    let mut keys: HashMap<(i64, &str), Found> = HashMap::new();
    progress.begin("verifying messages", rows.len() as u64);
    for row in &rows {
        report.checked += 1;
        let key = match row.mailbox_key_id {
            None => Ok(None),
            Some(id) => match keys.get(&(id, row.mailbox.as_str())) {
                Some(k) => k.clone().map(Some),
                None => {
                    let tx = store.index().read()?;
                    let k = match store.message_key(&*tx.keys(), row, "store verify") {
                        Ok(Some(k)) => Ok(k),
                        Ok(None) => Err((false, "no key".to_string())),
                        // Tampering is a failure; revoked or unavailable keys make it unreadable.
                        Err(e) => Err((matches!(e, StoreError::Integrity(_)), e.to_string())),
                    };
                    // The audit anchor of a key unwrap is in it.
                    tx.commit()?;
                    // A failure names its message: kept for the next rows only when it does not.
                    if !matches!(k, Err((true, _))) {
                        keys.insert((id, row.mailbox.as_str()), k.clone());
                    }
                    k.map(Some)
                }
            },
        };
        match key {
            Err((true, e)) => report
                .failures
                .push(format!("{} {}: {e}", row.mailbox, row.id)),
            Err((false, e)) => report
                .unreadable
                .push(format!("{} {}: {e}", row.mailbox, row.id)),
            Ok(k) => match store.open_message(row, k.as_ref()) {
                Ok(_) => report.ok += 1,
                Err(e) => report
                    .failures
                    .push(format!("{} {}: {e}", row.mailbox, row.id)),
            },
        }
        progress.step();
    }
    progress.finish();
    let referenced: HashSet<&str> = rows.iter().map(|r| r.blob.as_str()).collect();
    report.orphans = store
        .blobs
        .list()?
        .into_iter()
        .filter(|b| !referenced.contains(b.as_str()))
        .collect();
    Ok(report)
}

/// What `mailbox export` did.
#[derive(Debug, Default)]
pub struct Exported {
    /// Messages written.
    pub written: u64,
    /// Messages already in the Maildir (exported before, in `new/` or `cur/`), left as they are.
    pub present: u64,
    /// The messages that could not be read, and why.
    pub problems: Vec<String>,
}

/// `mailbox export`: writes every readable message of a mailbox into a standard Maildir, with
/// LF line endings as Maildir readers expect; a message with flags (set over IMAP) goes to
/// `cur/` with them in its name. A message exported before (whatever a reader
/// did with it since: moved to `cur/`, flagged) is not written again.
pub fn export(
    store: &EncryptedStore,
    mailbox: &str,
    maildir: &Path,
    progress: &dyn Progress,
) -> Result<Exported, StoreError> {
    let rows = store.rows(mailbox)?;
    let present = maildir_names(maildir)?;
    let mut out = Exported::default();
    progress.begin("exporting", rows.len() as u64);
    for row in rows {
        let name = format!("{}.{}.sealpost", row.received, row.id);
        if present.contains(&name) {
            out.present += 1;
            progress.step();
            continue;
        }
        match store.read(mailbox, &row.id) {
            Ok(bytes) => {
                let info = maildir_info(row.flags);
                write_maildir_file(maildir, &name, &lf_endings(&bytes), info.as_deref())?;
                out.written += 1;
            }
            Err(e) => out.problems.push(format!("{}: {e}", row.id)),
        }
        progress.step();
    }
    progress.finish();
    Ok(out)
}

/// The Maildir info letters of a message's IMAP system flags, in ASCII order (D draft,
/// F flagged, R answered, S seen, T deleted); None for a message without flags (it goes to
/// `new/`).
fn maildir_info(flags: i64) -> Option<String> {
    use super::folders::system::{ANSWERED, DELETED, DRAFT, FLAGGED, SEEN};
    let letters: String = [
        (DRAFT, 'D'),
        (FLAGGED, 'F'),
        (ANSWERED, 'R'),
        (SEEN, 'S'),
        (DELETED, 'T'),
    ]
    .iter()
    .filter(|(bit, _)| flags & bit != 0)
    .map(|(_, c)| *c)
    .collect();
    (!letters.is_empty()).then_some(letters)
}

/// The unique names of the messages in a Maildir's `new/` and `cur/` (a `cur/` name without
/// its `:2,FLAGS` info).
fn maildir_names(maildir: &Path) -> Result<std::collections::HashSet<String>, StoreError> {
    let mut names = std::collections::HashSet::new();
    for sub in ["new", "cur"] {
        let dir = maildir.join(sub);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(StoreError::io(&dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(&dir, e))?;
            if let Some(name) = entry.file_name().to_str() {
                names.insert(name.split(':').next().unwrap_or(name).to_string());
            }
        }
    }
    Ok(names)
}

/// The message with CRLF line endings turned into LF (the Maildir convention; a lone CR stays).
fn lf_endings(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len());
    let mut i = 0;
    while i < message.len() {
        if message[i] == b'\r' && message.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(message[i]);
        i += 1;
    }
    out
}

//! Binding what was stored before messages were bound to their mailbox: when the store opens,
//! legacy wraps of mailbox keys and content keys (and legacy metadata) are re-made in the bound
//! form, without touching any blob; once none is left, a marker in the keystore makes the store
//! refuse the legacy form for good.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use super::backend::MailboxKeyRow;
use super::binding::{self, Binding};
use super::encrypted::EncryptedStore;
use super::index::MessageRow;
use super::StoreError;
use crate::crypto::sealing::{SecretKey, WRAPPED_LEN};

/// The marker's file name in the keystore directory, and its contents.
const MARKER: &str = "store-bindings";
const MARKER_TEXT: &[u8] = b"sealpost-store-bindings v2\n";

/// The audit log's reason for the key unwraps that re-binding needs.
const REASON: &str = "bind legacy messages to their mailbox";

/// What opening the store did to legacy rows.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rebinding {
    /// Messages whose content key and metadata were re-bound at this opening.
    pub messages: u64,
    /// Mailbox keys whose wrap was re-bound at this opening.
    pub mailbox_keys: u64,
    /// Legacy rows left as they are because their keys are not available now (`what: why`);
    /// re-binding is tried again at the next opening, and until it succeeds the legacy form is
    /// still accepted.
    pub pending: Vec<String>,
    /// Legacy rows that cannot be re-bound because they fail authentication or point at another
    /// mailbox's key (`what: why`); they stay unreadable.
    pub failed: Vec<String>,
    /// Whether the store refuses the legacy form (the marker is in the keystore).
    pub complete: bool,
}

/// Either the marker says the store is bound, or every legacy row that can be is re-bound now
/// and, when none is left pending, the marker is written.
pub(super) fn rebind(store: &EncryptedStore, keystore_dir: &Path) -> Result<Rebinding, StoreError> {
    let marker = keystore_dir.join(MARKER);
    match std::fs::symlink_metadata(&marker) {
        Ok(_) => {
            store.keyring.refuse_legacy();
            return Ok(Rebinding {
                complete: true,
                ..Rebinding::default()
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(StoreError::io(&marker, e)),
    }
    let mut report = Rebinding::default();
    rebind_messages(store, &mut report)?;
    rebind_mailbox_keys(store, &mut report)?;
    if report.messages + report.mailbox_keys > 0 || !report.failed.is_empty() {
        let summary = format!(
            "{} message(s) and {} mailbox key(s) bound to their mailbox; {} pending, {} failed",
            report.messages,
            report.mailbox_keys,
            report.pending.len(),
            report.failed.len()
        );
        tracing::info!("{summary}");
        let recorded = store.index().write().and_then(|tx| {
            store
                .keyring
                .record(&*tx.keys(), "rebind", "", "", &summary)?;
            tx.commit()
        });
        if let Err(e) = recorded {
            tracing::warn!("rebind not recorded in the audit log: {e}");
        }
    }
    for f in &report.failed {
        tracing::warn!("not bound to its mailbox, stays unreadable: {f}");
    }
    if report.pending.is_empty() {
        // Nothing legitimate is left in the legacy form: refuse it from now on, and say so in the
        // keystore so that later openings do not bind legacy rows put into the index meanwhile.
        store.keyring.refuse_legacy();
        report.complete = true;
        if let Err(e) = write_marker(keystore_dir, &marker) {
            tracing::warn!("the store is bound, but its marker could not be written: {e}");
        }
    } else {
        for p in &report.pending {
            tracing::warn!("legacy rows not yet bound to their mailbox: {p}");
        }
    }
    Ok(report)
}

/// Sorts a failure to get a key: keys that may come back leave the rows pending, a revoked key
/// leaves nothing to bind, a key that fails authentication makes them failed.
fn triage(report: &mut Rebinding, what: String, e: StoreError) -> Result<(), StoreError> {
    match e {
        StoreError::Revoked { .. } => {}
        StoreError::KeyUnavailable { .. }
        | StoreError::Policy(_)
        | StoreError::Audit(_)
        | StoreError::Io { .. } => report.pending.push(format!("{what}: {e}")),
        StoreError::Integrity(_) => report.failed.push(format!("{what}: {e}")),
        _ => return Err(e),
    }
    Ok(())
}

fn legacy_messages(store: &EncryptedStore) -> Result<Vec<MessageRow>, StoreError> {
    let rows = store.index().read()?.messages().all_messages()?;
    Ok(rows
        .into_iter()
        .filter(|r| {
            r.wrapped_key
                .as_ref()
                .is_some_and(|w| w.len() == WRAPPED_LEN)
        })
        .collect())
}

/// Each legacy message's content key re-wrapped and metadata re-sealed, bound to its mailbox;
/// one transaction per mailbox key. A row whose key is another mailbox's is not touched.
fn rebind_messages(store: &EncryptedStore, report: &mut Rebinding) -> Result<(), StoreError> {
    let mut by_key: BTreeMap<i64, Vec<MessageRow>> = BTreeMap::new();
    for row in legacy_messages(store)? {
        if let Some(k) = row.mailbox_key_id {
            by_key.entry(k).or_default().push(row);
        }
    }
    for (key_id, rows) in by_key {
        let tx = store.index().write()?;
        let (keys, messages) = (tx.keys(), tx.messages());
        let what = |r: &MessageRow| format!("message {} in {}", r.id, r.mailbox);
        let Some(mk) = keys.mailbox_key(key_id)? else {
            for r in &rows {
                report
                    .failed
                    .push(format!("{}: its key is missing", what(r)));
            }
            continue;
        };
        let mkey = match store.keyring.mailbox_key(&*keys, &mk, REASON) {
            Ok(k) => k,
            Err(e) => {
                let n = rows.len();
                triage(report, format!("{n} message(s) of {}", mk.mailbox), e)?;
                continue;
            }
        };
        for row in &rows {
            if row.mailbox != mk.mailbox {
                report.failed.push(format!(
                    "{}: not bound to mailbox {}, its key belongs to {}",
                    what(row),
                    row.mailbox,
                    mk.mailbox
                ));
                continue;
            }
            let Some((wrapped, meta)) = rebound(&mkey, row) else {
                report.failed.push(format!(
                    "{}: its content key or metadata fails authentication",
                    what(row)
                ));
                continue;
            };
            // Only if the row is still what was read (another process may have bound it).
            let Some(mut now) = messages.message(&row.mailbox, &row.id)? else {
                continue;
            };
            if now.seq != row.seq || now.wrapped_key != row.wrapped_key {
                continue;
            }
            now.wrapped_key = Some(wrapped);
            now.meta = meta;
            messages.update_message_crypto(&now)?;
            report.messages += 1;
        }
        drop((keys, messages));
        tx.commit()?;
    }
    Ok(())
}

/// The bound content-key wrap and metadata of a legacy row, or `None` if either fails to open.
fn rebound(mkey: &SecretKey, row: &MessageRow) -> Option<(Vec<u8>, Vec<u8>)> {
    let (mailbox, id) = (&row.mailbox, &row.id);
    let wrapped = row.wrapped_key.as_deref()?;
    let (content, _) = binding::unwrap_content_key(mkey, mailbox, id, wrapped, true).ok()?;
    let legacy = binding::meta_context(Binding::Legacy, mailbox, id);
    let meta = mkey.open_record(&legacy, &row.meta).ok()?;
    let bound = binding::meta_context(Binding::Mailbox, mailbox, id);
    Some((
        binding::wrap_content_key(mkey, mailbox, id, &content).ok()?,
        mkey.seal_record(&bound, &meta).ok()?,
    ))
}

/// Each active mailbox key with a legacy wrap re-wrapped under its policy key, bound to its
/// mailbox.
fn rebind_mailbox_keys(store: &EncryptedStore, report: &mut Rebinding) -> Result<(), StoreError> {
    let tx = store.index().write()?;
    let ix = tx.keys();
    // A mailbox has one active key, its newest: the keys before it were revoked.
    let mut rows: Vec<MailboxKeyRow> = Vec::new();
    for mailbox in tx.messages().mailboxes()? {
        if let Some(row) = ix.current_mailbox_key(&mailbox)? {
            if row.state == "active" && row.wrapped.as_ref().map(Vec::len) == Some(WRAPPED_LEN) {
                rows.push(row);
            }
        }
    }
    rows.sort_by_key(|r| r.id);
    for row in rows {
        let what = format!("the key of mailbox {}", row.mailbox);
        let (Some(pk_id), Some(wrapped)) = (row.policy_key_id, row.wrapped.as_deref()) else {
            continue;
        };
        let Some(pk) = ix.policy_key(pk_id)? else {
            report
                .failed
                .push(format!("{what}: its policy key is missing"));
            continue;
        };
        let pkey = match store.keyring.policy_key(&*ix, &pk, REASON) {
            Ok(k) => k,
            Err(e) => {
                triage(report, what, e)?;
                continue;
            }
        };
        let Ok((key, _)) = binding::unwrap_mailbox_key(&pkey, &row.mailbox, wrapped, true) else {
            report.failed.push(format!(
                "{what}: does not unwrap under policy {}",
                pk.policy
            ));
            continue;
        };
        let bound = binding::wrap_mailbox_key(&pkey, &row.mailbox, &key)?;
        ix.rewrap_mailbox_key(row.id, pk_id, &bound)?;
        report.mailbox_keys += 1;
    }
    drop(ix);
    tx.commit()
}

/// Writes the marker durably (mode 0600, fsynced with its directory); one already there is kept.
fn write_marker(dir: &Path, marker: &Path) -> Result<(), StoreError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| StoreError::io(dir, e))?;
    let mut f = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(marker)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(StoreError::io(marker, e)),
    };
    f.write_all(MARKER_TEXT)
        .and_then(|_| f.sync_all())
        .map_err(|e| StoreError::io(marker, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}

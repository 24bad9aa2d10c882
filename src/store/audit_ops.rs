//! The store's audit operations: recording another part of the server's events, and
//! `store audit verify`.

use std::path::PathBuf;

use super::audit::file::FileLog;
use super::audit::{AuditLog, AuditReport};
use super::encrypted::EncryptedStore;
use super::StoreError;

/// Appends an event of another part of the server (the licensing service's accesses) to the
/// audit log, anchored in the index like the store's own events.
pub fn record_event(
    store: &EncryptedStore,
    event: &str,
    policy: &str,
    key: &str,
    reason: &str,
) -> Result<(), StoreError> {
    // The line is written before the index is locked, so events recorded at the same time
    // share one fsync; whoever then holds the index anchors the newest of them, and the others
    // find their line covered (the anchor only moves forward).
    let written = store.keyring.append(event, policy, key, reason)?;
    if !store.keyring.audit_log().anchors_in_index() {
        // The database's chain: the line committed with the chain's head.
        return Ok(());
    }
    let tx = store.index().write()?;
    let Some(anchor) = store.keyring.anchor_to_commit(&written) else {
        return Ok(());
    };
    tx.keys().set_audit_anchor(&anchor)?;
    tx.commit()?;
    store.keyring.anchored(&anchor);
    Ok(())
}

/// `store audit verify`: the file's hash chain and its newest line against the index's anchor,
/// or the database's chain (hashes, sequence numbers, MACs, head, this node's mark).
pub fn verify_audit(store: &EncryptedStore) -> Result<AuditReport, StoreError> {
    let log = store.keyring.audit_log();
    let anchor = if log.anchors_in_index() {
        store.index().read()?.keys().audit_anchor()?
    } else {
        None
    };
    log.verify(anchor.as_ref())
}

/// A node's own audit log file kept from before its store moved into the database's shared
/// chain, checked against the anchor the database keeps for this node; `None` when the store
/// keeps its log in that file anyway, or there is no such file.
pub fn verify_earlier_audit_file(
    store: &EncryptedStore,
) -> Result<Option<(PathBuf, AuditReport)>, StoreError> {
    let AuditLog::Postgres(chain) = store.keyring.audit_log() else {
        return Ok(None);
    };
    let file = FileLog::new(chain.keystore_dir());
    if !file.path().exists() {
        return Ok(None);
    }
    let anchor = store.index().read()?.keys().audit_anchor()?;
    let report = file.verify(anchor.as_ref())?;
    Ok(Some((file.path().to_path_buf(), report)))
}

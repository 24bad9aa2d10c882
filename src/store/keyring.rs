//! The key hierarchy at work: unwrapping a policy key with either root key (the availability key
//! only when both are unavailable for a system reason), creating policy and mailbox keys, caching
//! unwrapped keys in memory (zeroized on drop), auditing every policy-key unwrap, and opening a
//! mailbox key only for the mailbox it is bound to.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use super::audit::{Anchor, AuditEvent, AuditLog};
use super::backend::{KeyIndex, MailboxKeyRow, PolicyKeyRow, WrapRow};
use super::binding::{self, BindError};
use super::kek::{Kek, KekError};
use super::{IndexErrorKind, StoreError};
use crate::config::EncryptionPolicy;
use crate::crypto::sealing::SecretKey;
use crate::keys::KekRef;

pub struct Keyring {
    policies: BTreeMap<String, EncryptionPolicy>,
    audit: AuditLog,
    actor: String,
    policy_keys: Mutex<HashMap<i64, SecretKey>>,
    /// By key row id: the mailbox the key was opened for, and the key.
    mailbox_keys: Mutex<HashMap<i64, (String, SecretKey)>>,
    /// Whether wraps of the legacy (unbound) form are still accepted.
    legacy: AtomicBool,
    /// The newest audit line whose anchor this handle has committed to the index.
    anchored: AtomicU64,
}

/// How a key file was tried.
enum Attempt {
    /// Missing or unreadable: a system reason, the availability key may be used.
    Unavailable(String),
    /// Readable but not able to open the wrap: an integrity alarm, never a reason to fall back.
    Wrong(String),
}

fn describe(kind: &str, key_ref: &KekRef, key: &Kek) -> String {
    format!("{kind} {key_ref} {}", key.id())
}

impl Keyring {
    pub fn new(policies: BTreeMap<String, EncryptionPolicy>, audit: AuditLog, actor: &str) -> Self {
        Keyring {
            policies,
            audit,
            actor: actor.to_string(),
            policy_keys: Mutex::new(HashMap::new()),
            mailbox_keys: Mutex::new(HashMap::new()),
            legacy: AtomicBool::new(true),
            anchored: AtomicU64::new(0),
        }
    }

    /// Whether keys and messages wrapped in the legacy form (not bound to their mailbox) are
    /// still accepted: only until the store's bindings are migrated.
    pub fn accepts_legacy(&self) -> bool {
        self.legacy.load(Ordering::SeqCst)
    }

    /// From now on, refuses every wrap of the legacy form.
    pub fn refuse_legacy(&self) {
        self.legacy.store(false, Ordering::SeqCst);
    }

    pub fn audit_log(&self) -> &AuditLog {
        &self.audit
    }

    /// A configured policy, or an error saying its keys are not configured.
    pub fn policy(&self, name: &str) -> Result<&EncryptionPolicy, StoreError> {
        self.policies.get(name).ok_or_else(|| {
            StoreError::Policy(format!(
                "policy {name} is not in the configuration: its root keys are needed"
            ))
        })
    }

    /// Appends an audit record and anchors it in the index (where the log needs that).
    pub fn record(
        &self,
        ix: &dyn KeyIndex,
        event: &str,
        policy: &str,
        key: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let anchor = self.append(event, policy, key, reason)?;
        if !self.audit.anchors_in_index() {
            return Ok(());
        }
        ix.set_audit_anchor(&anchor)
    }

    /// What to anchor so that the line `written` is covered: `None` when an anchor at or after
    /// it is already committed or the log needs none (the database's chain), else the newest line this handle has fsynced (at or after
    /// `written`), so that events recorded together commit one anchor.
    pub fn anchor_to_commit(&self, written: &Anchor) -> Option<Anchor> {
        if !self.audit.anchors_in_index() || self.anchored.load(Ordering::Acquire) >= written.seq {
            return None;
        }
        Some(
            self.audit
                .synced()
                .filter(|newest| newest.seq >= written.seq)
                .unwrap_or_else(|| written.clone()),
        )
    }

    /// Notes that `anchor` is committed in the index.
    pub fn anchored(&self, anchor: &Anchor) {
        self.anchored.fetch_max(anchor.seq, Ordering::AcqRel);
    }

    /// Appends an event to the audit log (fsynced, possibly together with events other threads
    /// append at the same time) without anchoring it; the caller anchors the returned line.
    pub fn append(
        &self,
        event: &str,
        policy: &str,
        key: &str,
        reason: &str,
    ) -> Result<Anchor, StoreError> {
        self.audit.append(&AuditEvent {
            event,
            policy,
            key,
            actor: &self.actor,
            reason,
        })
    }

    /// Forgets every unwrapped key (after a revocation).
    pub fn forget(&self) {
        if let Ok(mut m) = self.policy_keys.lock() {
            m.clear();
        }
        if let Ok(mut m) = self.mailbox_keys.lock() {
            m.clear();
        }
    }

    /// The plaintext policy key of generation `pk`, from the cache or unwrapped (and audited).
    pub fn policy_key(
        &self,
        ix: &dyn KeyIndex,
        pk: &PolicyKeyRow,
        reason: &str,
    ) -> Result<SecretKey, StoreError> {
        if let Some(k) = self
            .policy_keys
            .lock()
            .ok()
            .and_then(|m| m.get(&pk.id).cloned())
        {
            return Ok(k);
        }
        let key = self.unwrap_policy_key(ix, pk, reason)?;
        if let Ok(mut m) = self.policy_keys.lock() {
            m.insert(pk.id, key.clone());
        }
        Ok(key)
    }

    /// Customer Key order: either root key; the availability key only if both root keys are
    /// unavailable for a system reason. Every success is audited; availability use is warned.
    fn unwrap_policy_key(
        &self,
        ix: &dyn KeyIndex,
        pk: &PolicyKeyRow,
        reason: &str,
    ) -> Result<SecretKey, StoreError> {
        let policy = self.policy(&pk.policy)?;
        let wraps = ix.wraps(pk.id)?;
        let mut tried = Vec::new();
        for path in &policy.root_keys {
            match self.try_key(path, "root", &wraps) {
                Ok((key, plain)) => {
                    if tried.iter().any(|a| matches!(a, Attempt::Wrong(_))) {
                        tracing::warn!(policy = %pk.policy, "a root key does not open its policy key: integrity alarm");
                    }
                    self.record(
                        ix,
                        "policy-key-unwrap",
                        &pk.policy,
                        &describe("root", path, &key),
                        reason,
                    )?;
                    return Ok(plain);
                }
                Err(a) => tried.push(a),
            }
        }
        if tried.iter().all(|a| matches!(a, Attempt::Unavailable(_))) {
            let path = &policy.availability_key;
            match self.try_key(path, "availability", &wraps) {
                Ok((key, plain)) => {
                    tracing::warn!(
                        policy = %pk.policy,
                        availability_key = %path,
                        reason,
                        "both root keys unavailable: policy key unwrapped with the availability key"
                    );
                    self.record(
                        ix,
                        "policy-key-unwrap",
                        &pk.policy,
                        &describe("availability", path, &key),
                        &format!("{reason} (both root keys unavailable)"),
                    )?;
                    return Ok(plain);
                }
                Err(a) => tried.push(a),
            }
        }
        let tried = tried
            .into_iter()
            .map(|a| match a {
                Attempt::Unavailable(s) | Attempt::Wrong(s) => s,
            })
            .collect();
        Err(StoreError::KeyUnavailable {
            policy: pk.policy.clone(),
            tried,
        })
    }

    fn try_key(
        &self,
        key_ref: &KekRef,
        kind: &str,
        wraps: &[WrapRow],
    ) -> Result<(Kek, SecretKey), Attempt> {
        let key = match Kek::open(key_ref) {
            Ok(k) => k,
            Err(e) => {
                return Err(Attempt::Unavailable(format!(
                    "{kind} key {key_ref}: unavailable ({e})"
                )))
            }
        };
        let id = key.id();
        let Some(w) = wraps.iter().find(|w| w.kind == kind && w.key_id == id) else {
            return Err(Attempt::Wrong(format!(
                "{kind} key {key_ref}: not a key of this policy (key id {id})"
            )));
        };
        match key.unwrap_key(&w.wrapped) {
            Ok(plain) => Ok((key, plain)),
            Err(KekError::Unavailable(e)) => Err(Attempt::Unavailable(format!(
                "{kind} key {key_ref}: unavailable ({e})"
            ))),
            Err(KekError::Refused(_)) => Err(Attempt::Wrong(format!(
                "{kind} key {key_ref}: wrap does not open (wrong key or altered index)"
            ))),
        }
    }

    /// Wraps a policy key under both root keys and the availability key (all must be readable).
    pub fn wrap_policy_key(
        &self,
        policy: &EncryptionPolicy,
        key: &SecretKey,
    ) -> Result<Vec<WrapRow>, StoreError> {
        let mut wraps = Vec::new();
        let named = [
            ("root", &policy.root_keys[0]),
            ("root", &policy.root_keys[1]),
            ("availability", &policy.availability_key),
        ];
        for (kind, path) in named {
            let unavailable = |e: KekError| StoreError::KeyUnavailable {
                policy: policy.name.clone(),
                tried: vec![format!("{kind} key {path}: {e}")],
            };
            let kek = Kek::open(path).map_err(unavailable)?;
            wraps.push(WrapRow {
                kind: kind.into(),
                key_id: kek.id(),
                wrapped: kek.wrap(key).map_err(unavailable)?,
            });
        }
        Ok(wraps)
    }

    /// The active policy key of `policy`, created on first use; refused once revoked.
    pub fn current_policy_key(
        &self,
        ix: &dyn KeyIndex,
        policy: &str,
        reason: &str,
    ) -> Result<(PolicyKeyRow, SecretKey), StoreError> {
        if let Some(pk) = ix.active_policy_key(policy)? {
            let key = self.policy_key(ix, &pk, reason)?;
            return Ok((pk, key));
        }
        if ix.policy_revoked(policy)? {
            return Err(StoreError::Revoked {
                policy: policy.to_string(),
                what: "new mail cannot be stored under it; assign another policy".into(),
            });
        }
        self.create_policy_key(ix, policy, reason)
    }

    /// Makes a new generation of a policy key (first use or rotation).
    pub fn create_policy_key(
        &self,
        ix: &dyn KeyIndex,
        policy: &str,
        reason: &str,
    ) -> Result<(PolicyKeyRow, SecretKey), StoreError> {
        let key = SecretKey::generate()?;
        let wraps = self.wrap_policy_key(self.policy(policy)?, &key)?;
        let pk = ix.insert_policy_key(policy, &wraps)?;
        self.record(
            ix,
            "policy-key-create",
            policy,
            "",
            &format!("generation {} ({reason})", pk.generation),
        )?;
        if let Ok(mut m) = self.policy_keys.lock() {
            m.insert(pk.id, key.clone());
        }
        Ok((pk, key))
    }

    /// The plaintext key of a mailbox key row (cached); a revoked row is a clear error.
    pub fn mailbox_key(
        &self,
        ix: &dyn KeyIndex,
        row: &MailboxKeyRow,
        reason: &str,
    ) -> Result<SecretKey, StoreError> {
        let (Some(pk_id), Some(wrapped), "active") =
            (row.policy_key_id, row.wrapped.as_ref(), row.state.as_str())
        else {
            let policy = row
                .policy_key_id
                .and_then(|id| ix.policy_key(id).ok().flatten())
                .map(|pk| pk.policy)
                .unwrap_or_default();
            return Err(StoreError::Revoked {
                policy,
                what: format!("the key of mailbox {} was destroyed", row.mailbox),
            });
        };
        let cached = self.mailbox_keys.lock().ok().and_then(|m| {
            m.get(&row.id)
                .filter(|(owner, _)| *owner == row.mailbox)
                .map(|(_, k)| k.clone())
        });
        if let Some(k) = cached {
            return Ok(k);
        }
        let pk = ix.policy_key(pk_id)?.ok_or_else(|| {
            StoreError::index(
                IndexErrorKind::NotFound,
                format!("mailbox key {} has no policy key", row.id),
            )
        })?;
        let pkey = self.policy_key(ix, &pk, reason)?;
        let key = self.open_mailbox_wrap(&pkey, &pk.policy, &row.mailbox, wrapped)?;
        if let Ok(mut m) = self.mailbox_keys.lock() {
            m.insert(row.id, (row.mailbox.clone(), key.clone()));
        }
        Ok(key)
    }

    /// Opens the wrap of `mailbox`'s key under a policy key of `policy`; a wrap that is not bound
    /// to that mailbox (moved or copied in the index) or altered is an integrity error.
    pub fn open_mailbox_wrap(
        &self,
        policy_key: &SecretKey,
        policy: &str,
        mailbox: &str,
        wrapped: &[u8],
    ) -> Result<SecretKey, StoreError> {
        binding::unwrap_mailbox_key(policy_key, mailbox, wrapped, self.accepts_legacy())
            .map(|(k, _)| k)
            .map_err(|e| {
                StoreError::Integrity(match e {
                    BindError::NotBound => format!(
                        "the key of mailbox {mailbox} is not bound to {mailbox} under policy \
                         {policy} (key row moved, copied or altered in the index)"
                    ),
                    BindError::LegacyRefused => format!(
                        "the key of mailbox {mailbox} is not bound to {mailbox}: it has the \
                         legacy form, refused since this store's bindings were migrated (index \
                         altered or restored from an older copy)"
                    ),
                })
            })
    }

    /// A new mailbox key under `policy`; returns its row id and the key.
    pub fn new_mailbox_key(
        &self,
        ix: &dyn KeyIndex,
        mailbox: &str,
        policy: &str,
        reason: &str,
    ) -> Result<(i64, SecretKey), StoreError> {
        let (pk, pkey) = self.current_policy_key(ix, policy, reason)?;
        let key = SecretKey::generate()?;
        let wrapped = binding::wrap_mailbox_key(&pkey, mailbox, &key)?;
        let id = ix.insert_mailbox_key(mailbox, pk.id, &wrapped)?;
        if let Ok(mut m) = self.mailbox_keys.lock() {
            m.insert(id, (mailbox.to_string(), key.clone()));
        }
        Ok((id, key))
    }
}

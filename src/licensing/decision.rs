//! Whether a reader gets a use license: a pure function of the publishing license, the
//! authenticated reader, the revocations, the clock and the service's policy. Only the random
//! bytes of RSA-OAEP and RSA-PSS vary between two calls with the same inputs.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crate::crypto::rms::{
    format_expiry, license_sha256, normalize_principal, unwrap_content_key, Grant, License,
    ReaderKey, Rights, RmsError, TenantKeys, UseLicense, ANYONE,
};

/// What a reader asks for.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The publishing license bytes, exactly as signed (container §3).
    pub license: &'a [u8],
    /// The tenant's RSASSA-PSS signature over `license`.
    pub signature: &'a [u8],
    /// Who the reader authenticated as.
    pub principal: &'a str,
    /// The key the content key is wrapped to.
    pub reader: ReaderKeySource<'a>,
}

/// Where the reader's key comes from, which depends on how the reader proved who it is.
#[derive(Clone, Copy, Debug)]
pub enum ReaderKeySource<'a> {
    /// The X.509 certificate (PEM or DER) that proved the reader: its key, and it must name
    /// the principal (its one email address), so a use license never goes to another's key.
    Certificate(&'a [u8]),
    /// The RSA public key (SubjectPublicKeyInfo, PEM or DER) a reader who proved itself with
    /// a password sent with its request.
    PublicKey(&'a [u8]),
}

/// The service's side: its tenant keys, its own URL and how long use licenses last.
#[derive(Clone, Copy, Debug)]
pub struct Policy<'a> {
    pub tenant_keys: &'a TenantKeys,
    /// This service's URL, written into every use license.
    pub licensing_url: &'a str,
    /// How long a use license is valid (it never outlives the publishing license).
    pub validity: Duration,
}

/// Revoked messages: when a publishing license stopped granting anything.
pub trait Revocations {
    /// The time `license` (whose bytes hash to `license_sha256`) was revoked, if it was.
    fn revoked_at(&self, license: &License, license_sha256: &[u8; 32]) -> Option<SystemTime>;
}

/// Revocations held in memory, by original Message-ID and by publishing-license hash.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RevocationList {
    by_message_id: BTreeMap<String, SystemTime>,
    by_license: BTreeMap<[u8; 32], SystemTime>,
}

impl RevocationList {
    /// Revokes every license of the message with this Message-ID (as in its header) from `at`.
    pub fn revoke_message(&mut self, message_id: &str, at: SystemTime) {
        self.by_message_id.insert(message_id.trim().to_string(), at);
    }

    /// Revokes the publishing license with this hash from `at`.
    pub fn revoke_license(&mut self, license_sha256: [u8; 32], at: SystemTime) {
        self.by_license.insert(license_sha256, at);
    }

    /// Takes back the revocation of a message; false if it was not revoked.
    pub fn unrevoke_message(&mut self, message_id: &str) -> bool {
        self.by_message_id.remove(message_id.trim()).is_some()
    }

    /// The revoked messages and since when, by Message-ID.
    pub fn messages(&self) -> impl Iterator<Item = (&str, SystemTime)> {
        self.by_message_id.iter().map(|(id, at)| (id.as_str(), *at))
    }
}

impl Revocations for RevocationList {
    fn revoked_at(&self, license: &License, license_sha256: &[u8; 32]) -> Option<SystemTime> {
        let by_id = license
            .message_id
            .as_deref()
            .and_then(|m| self.by_message_id.get(m.trim()));
        [by_id, self.by_license.get(license_sha256)]
            .into_iter()
            .flatten()
            .min()
            .copied()
    }
}

/// Why no use license was issued. `code()` is stable for machines; Display is for the reader.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The publishing license does not decode or its signature does not verify.
    #[error("the publishing license is not valid: {0}")]
    BadLicense(String),
    /// The license names a tenant key this service does not hold.
    #[error("protected with tenant key {key_id}, which this service does not hold")]
    UnknownKey { key_id: String },
    #[error("revoked on {}", format_expiry(*at))]
    Revoked { at: SystemTime },
    #[error("expired on {}", format_expiry(*at))]
    Expired { at: SystemTime },
    /// The reader holds no rights, or not VIEW.
    #[error("{}", no_rights(principal, *rights))]
    NoRights { principal: String, rights: Rights },
    /// The reader's certificate or key is unreadable or unusable (not RSA, under 2048 bits, a
    /// certificate naming someone else).
    #[error("the reader's key cannot be used: {0}")]
    BadCertificate(String),
    /// The service failed (crypto library, its own URL); not caused by the request.
    #[error("the licensing service failed: {0}")]
    Internal(String),
}

fn no_rights(principal: &str, rights: Rights) -> String {
    if rights.is_empty() {
        format!("{principal} has no rights on this message")
    } else {
        format!("{principal} may not view this message (its rights: {rights})")
    }
}

impl Refusal {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::BadLicense(_) => "bad-license",
            Refusal::UnknownKey { .. } => "unknown-key",
            Refusal::Revoked { .. } => "revoked",
            Refusal::Expired { .. } => "expired",
            Refusal::NoRights { .. } => "no-rights",
            Refusal::BadCertificate(_) => "bad-certificate",
            Refusal::Internal(_) => "internal",
        }
    }
}

/// Decides a request at `now`. In order: the publishing license decodes; its tenant key is one
/// the service holds (unknown-key; the signature can only be checked with that key) and its
/// signature verifies (bad-license); it is not revoked; it has not expired; the reader holds
/// VIEW (own entry ∪ `*@domain` ∪ `ANYONE`, as `License::rights_of`); the certificate's key is
/// usable. The use license is valid until `now + validity`, or the license's expiry if sooner.
pub fn decide(
    request: &Request<'_>,
    policy: &Policy<'_>,
    revocations: &dyn Revocations,
    now: SystemTime,
) -> Result<UseLicense, Refusal> {
    let license =
        License::decode(request.license).map_err(|e| Refusal::BadLicense(e.to_string()))?;
    let Some(tenant) = policy.tenant_keys.get(&license.tenant_key_id) else {
        return Err(Refusal::UnknownKey {
            key_id: license.tenant_key_hex(),
        });
    };
    if !tenant.verifies(request.license, request.signature) {
        return Err(Refusal::BadLicense("the signature does not verify".into()));
    }
    let hash = license_sha256(request.license);
    if let Some(at) = revocations.revoked_at(&license, &hash) {
        if now >= at {
            return Err(Refusal::Revoked { at });
        }
    }
    let expires = license.expires_at();
    if let Some(at) = expires {
        if now >= at {
            return Err(Refusal::Expired { at });
        }
    }
    let principal = normalize_principal(request.principal)
        .filter(|p| p != ANYONE && !p.starts_with("*@"))
        .ok_or_else(|| Refusal::NoRights {
            principal: request.principal.trim().to_string(),
            rights: Rights::empty(),
        })?;
    let rights = license.rights_of(&principal);
    if !rights.contains(Rights::VIEW) {
        return Err(Refusal::NoRights { principal, rights });
    }
    let reader = reader_key(request.reader, &principal, now)?;
    let content_key =
        unwrap_content_key(&license, tenant).map_err(|e| Refusal::BadLicense(e.to_string()))?;
    let mut valid_until = now.checked_add(policy.validity).unwrap_or(now);
    if let Some(at) = expires {
        valid_until = valid_until.min(at);
    }
    let grant = Grant {
        license_sha256: hash,
        principal,
        rights,
        issued: now,
        valid_until,
        licensing_url: policy.licensing_url.to_string(),
    };
    UseLicense::issue(&grant, &content_key, &reader, tenant)
        .map_err(|e| Refusal::Internal(e.to_string()))
}

/// The reader's key, checked usable; a certificate must name `principal`.
fn reader_key(
    source: ReaderKeySource<'_>,
    principal: &str,
    now: SystemTime,
) -> Result<ReaderKey, Refusal> {
    let unusable = |e| match e {
        RmsError::ReaderKey(problem) => Refusal::BadCertificate(problem),
        other => Refusal::BadCertificate(other.to_string()),
    };
    match source {
        ReaderKeySource::Certificate(cert) => {
            let key = ReaderKey::from_certificate(cert, now).map_err(unusable)?;
            let named = super::identity::certificate_email(cert)
                .map_err(|e| Refusal::BadCertificate(e.to_string()))?;
            if named != principal {
                return Err(Refusal::BadCertificate(format!(
                    "it names {named}, not the reader {principal}"
                )));
            }
            Ok(key)
        }
        ReaderKeySource::PublicKey(spki) => ReaderKey::from_public_key(spki).map_err(unusable),
    }
}

#[cfg(test)]
mod tests;

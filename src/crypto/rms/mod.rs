//! RMS-style protected messages (DESIGN.md §5): a signed publishing license with rights per
//! principal, the content key wrapped under the tenant's RSA key, and the whole original message
//! AES-CBC encrypted, carried as the attachment `message.sealed` (docs/protected-message-format.md).
//!
//! The reader verifies the RSA-PSS signature, the key id and the ciphertext digest before any
//! decryption, so altered messages are refused as a whole (no padding oracle).

mod container;
mod license;
mod mime;
mod template;
mod tenant;
mod tenant_token;
mod use_license;

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

pub use container::{parse as parse_container, Framed, MAGIC, VERSION, VERSION_2};
pub use license::{
    licensing_url_problem, normalize_principal, License, Rights, RmsAlgorithm, ANYONE, MAX_URL,
};
pub use mime::{extract_container, is_protected, MARKER};
pub use template::{builtin as builtin_template, license_for};
pub use tenant::{
    activate_tenant_key, generate_tenant_key, list_tenant_keys, TenantKey, TenantKeyInfo,
    TenantKeys, TenantPublicKey, ACTIVE_FILE,
};
pub use tenant_token::{generate_tenant_key_in_token, read_reference, TokenReference};
pub use use_license::{
    license_sha256, unwrap_content_key, Grant, ReaderKey, UseLicense, USE_LICENSE_MAGIC,
    USE_LICENSE_VERSION,
};

/// What to put in the license of a message about to be protected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LicenseRequest {
    /// Who protects the message (the sender's address).
    pub issuer: String,
    pub template: String,
    /// Principal (normalised: address, `*@domain`, `ANYONE`) → rights.
    pub rights: BTreeMap<String, Rights>,
    pub issued: SystemTime,
    pub expires: Option<SystemTime>,
    pub message_id: Option<String>,
    pub algorithm: RmsAlgorithm,
    /// The licensing service readers ask for a use license (`[rms.licensing] url`); when set
    /// the license is written as version 2.
    pub licensing_url: Option<String>,
}

impl LicenseRequest {
    /// The same request naming a licensing service (or none).
    pub fn with_licensing_url(mut self, url: Option<String>) -> Self {
        self.licensing_url = url;
        self
    }
}

/// Why a message could not be protected or opened. Each kind has an exit code (`exit_code`).
#[derive(Debug, thiserror::Error)]
pub enum RmsError {
    /// The input is neither a protected message nor a container.
    #[error("not a protected message (no message.sealed attachment)")]
    NotProtected,
    /// The signature, key id or ciphertext digest does not check: the message was altered.
    #[error("integrity check failed: the protected message was altered or damaged")]
    Integrity,
    /// None of the given tenant keys is the one the message was protected with.
    #[error("protected with tenant key {protected_with}, you gave {}", given.join(", "))]
    WrongTenantKey {
        protected_with: String,
        given: Vec<String>,
    },
    /// The license has expired.
    #[error("the license expired on {} (--ignore-expiry opens it anyway)", format_time(*at))]
    Expired { at: SystemTime },
    /// Truncated or malformed container or license.
    #[error("the protected message is corrupted: {0}")]
    Corrupted(String),
    /// A container version, field or algorithm this reader does not know.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A tenant key file or directory that cannot be used.
    #[error("tenant key: {0}")]
    Key(String),
    /// A reader's certificate or key that cannot be used for a use license (not RSA, under
    /// 2048 bits, outside its validity), or a use license that does not open with the key.
    #[error("reader key: {0}")]
    ReaderKey(String),
    /// `--as ADDR`: the address does not hold VIEW.
    #[error("{address} may not view this message (its rights: {rights})")]
    NotPermitted { address: String, rights: Rights },
    /// The message is already protected (or S/MIME / PGP encrypted).
    #[error("the message is already protected or encrypted")]
    AlreadyProtected,
    /// No active tenant key to protect with.
    #[error("no active tenant key (sealpost keys tenant activate ID --dir DIR)")]
    NoActiveKey,
    /// The crypto library failed; not caused by the input.
    #[error("cryptographic operation failed: {0}")]
    Crypto(String),
}

impl RmsError {
    /// Exit code of `sealpost decrypt` (continues the S/MIME table in docs/crypto.md).
    ///
    /// | code | error |
    /// |---|---|
    /// | 1 | protecting failed (already protected, no active key, crypto library) |
    /// | 3 | not protected |
    /// | 7 | corrupted |
    /// | 8 | unsupported |
    /// | 9 | tenant key or reader key unusable |
    /// | 10 | integrity check failed |
    /// | 11 | wrong tenant key |
    /// | 12 | expired |
    /// | 13 | `--as` address lacks VIEW |
    pub fn exit_code(&self) -> u8 {
        match self {
            RmsError::NotProtected => 3,
            RmsError::Corrupted(_) => 7,
            RmsError::Unsupported(_) => 8,
            RmsError::Key(_) | RmsError::ReaderKey(_) => 9,
            RmsError::Integrity => 10,
            RmsError::WrongTenantKey { .. } => 11,
            RmsError::Expired { .. } => 12,
            RmsError::NotPermitted { .. } => 13,
            RmsError::AlreadyProtected | RmsError::NoActiveKey | RmsError::Crypto(_) => 1,
        }
    }
}

/// RFC 3339 UTC, seconds precision.
pub(crate) fn format_time(t: SystemTime) -> String {
    let secs = unix_seconds(t);
    i64::try_from(secs)
        .ok()
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| format!("{secs} seconds after 1970-01-01T00:00:00Z"))
}

/// Seconds since the epoch, clamped to 0 ..= year 9999 (what a license can carry).
pub(crate) fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .min(license::MAX_TIME)
}

/// Protects a whole RFC 5322 message with the active tenant key: returns the outer message
/// (routing header fields kept, a notice, and the attachment `message.sealed`).
pub fn protect(
    message: &[u8],
    tenant: &TenantKey,
    license: LicenseRequest,
) -> Result<Vec<u8>, RmsError> {
    if is_protected(message) || crate::crypto::smime::is_encrypted(message) {
        return Err(RmsError::AlreadyProtected);
    }
    let (container, license) = container::seal(message, tenant, &license)?;
    Ok(mime::outer_message(message, &container, &license))
}

/// Protects with the active key of `keys`.
pub fn protect_active(
    message: &[u8],
    keys: &TenantKeys,
    license: LicenseRequest,
) -> Result<Vec<u8>, RmsError> {
    protect(
        message,
        keys.active().ok_or(RmsError::NoActiveKey)?,
        license,
    )
}

/// Opens a protected message (or a bare container): returns the verified license and the
/// original message, byte for byte. Nothing is returned unless signature, key id and ciphertext
/// digest checked, the license has not expired (unless `ignore_expiry`) and the content
/// decrypted.
pub fn unprotect(
    message_or_container: &[u8],
    keys: &TenantKeys,
    now: SystemTime,
    ignore_expiry: bool,
) -> Result<(License, Vec<u8>), RmsError> {
    let container = extract_container(message_or_container)?;
    container::open(&container, keys, now, ignore_expiry)
}

/// Opens a protected message (or a bare container) as its reader, with a use license instead of
/// the tenant key: the use license must be signed by `tenant`, still valid at `now`, grant VIEW
/// and name this message's publishing license; the container is then checked exactly as
/// `unprotect` checks it (signature, key id, ciphertext digest, expiry) before the content key,
/// unwrapped with `reader`, decrypts it. The result is what `unprotect` returns.
pub fn unprotect_with_use_license(
    message_or_container: &[u8],
    use_license: &UseLicense,
    reader: &crate::crypto::keys::DecryptKey,
    tenant: &TenantPublicKey,
    now: SystemTime,
) -> Result<(License, Vec<u8>), RmsError> {
    use_license.verify(tenant)?;
    if now >= use_license.valid_until_at() {
        return Err(RmsError::Expired {
            at: use_license.valid_until_at(),
        });
    }
    if !use_license.rights.contains(Rights::VIEW) {
        return Err(RmsError::NotPermitted {
            address: use_license.principal.clone(),
            rights: use_license.rights,
        });
    }
    let bytes = extract_container(message_or_container)?;
    let framed = container::parse(&bytes)?;
    if &framed.key_id != tenant.id() {
        return Err(RmsError::WrongTenantKey {
            protected_with: hex::encode(framed.key_id),
            given: vec![tenant.id_hex()],
        });
    }
    if !tenant.verifies(framed.license, framed.signature) {
        return Err(RmsError::Integrity);
    }
    if license_sha256(framed.license) != use_license.license_sha256 {
        return Err(RmsError::Key(
            "the use license is for another message".into(),
        ));
    }
    let license = container::checked_license(&framed)?;
    if let Some(at) = license.expires_at() {
        if now >= at {
            return Err(RmsError::Expired { at });
        }
    }
    let cek = use_license.unwrap_key(reader)?;
    let plain = container::decrypt(&license, framed.ciphertext, &cek)?;
    Ok((license, plain))
}

/// Seals a message into a bare container (no outer message), for tests, fuzzing and tools.
pub fn seal_container(
    message: &[u8],
    tenant: &TenantKey,
    license: &LicenseRequest,
) -> Result<Vec<u8>, RmsError> {
    container::seal(message, tenant, license).map(|(c, _)| c)
}

/// A time as the CLI and error messages show it (RFC 3339, UTC).
pub fn format_expiry(t: SystemTime) -> String {
    format_time(t)
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_use_license;

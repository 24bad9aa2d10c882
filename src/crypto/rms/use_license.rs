//! The use license: what the licensing service gives one reader for one protected message. It
//! names the publishing license (by hash), the reader, the reader's rights and a validity window,
//! and carries the content key wrapped to the reader's certificate key, all signed by the tenant
//! key (docs/protected-message-format.md §8).
//!
//! Layout (integers big endian): signed bytes = magic `SEALUSE\0` (8) | version 1 (1) | fields
//! length (4) | fields; then signature length (2) | signature (RSASSA-PSS-SHA256 over the signed
//! bytes). Fields are `tag (1) | length (4) | value`, tags strictly increasing, all required.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest;
use aws_lc_rs::rsa::{OaepPublicEncryptingKey, PublicEncryptingKey, OAEP_SHA256_MGF1SHA256};
use zeroize::Zeroizing;

use super::license::{licensing_url_problem, normalize_principal, put, License, Rights, MAX_TIME};
use super::tenant::{verify_pss, TenantKey, TenantKeys, TenantPublicKey};
use super::RmsError;
use crate::crypto::keys::{DecryptKey, MIN_RSA_BITS};

/// The first bytes of a use license.
pub const USE_LICENSE_MAGIC: &[u8; 8] = b"SEALUSE\0";
/// The use-license format version written and read.
pub const USE_LICENSE_VERSION: u8 = 1;
/// Longest use license accepted (a 8192-bit key's wrap and signature, a long URL: well under).
const MAX_USE_LICENSE: usize = 16 * 1024;

const T_KEY_ID: u8 = 0x01;
const T_LICENSE_HASH: u8 = 0x02;
const T_PRINCIPAL: u8 = 0x03;
const T_RIGHTS: u8 = 0x04;
const T_ISSUED: u8 = 0x05;
const T_VALID_UNTIL: u8 = 0x06;
const T_WRAPPED_KEY: u8 = 0x07;
const T_URL: u8 = 0x08;

/// A signed use license (fields as on the wire, plus the signed bytes and signature).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UseLicense {
    /// The tenant key that signed it (and the publishing license).
    pub tenant_key_id: [u8; 32],
    /// SHA-256 of the publishing license bytes (exactly what its signature covers).
    pub license_sha256: [u8; 32],
    /// The reader: a normalised address.
    pub principal: String,
    /// The reader's effective rights (`License::rights_of`).
    pub rights: Rights,
    /// Seconds since the Unix epoch.
    pub issued: u64,
    /// Seconds since the Unix epoch; the use license is void when now ≥ valid_until.
    pub valid_until: u64,
    /// The content key, RSA-OAEP (SHA-256, MGF1-SHA-256, empty label) to the reader's key.
    pub wrapped_key: Vec<u8>,
    /// The licensing service that issued it.
    pub licensing_url: String,
    signed: Vec<u8>,
    signature: Vec<u8>,
}

/// What a use license grants: everything but the content key and the signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub license_sha256: [u8; 32],
    pub principal: String,
    pub rights: Rights,
    pub issued: SystemTime,
    pub valid_until: SystemTime,
    pub licensing_url: String,
}

/// The RSA key of a reader's certificate, checked usable (RSA, 2048 bits or more).
#[derive(Debug)]
pub struct ReaderKey(PublicEncryptingKey);

impl ReaderKey {
    /// From a PEM or DER X.509 certificate. Non-RSA keys and RSA keys under 2048 bits are
    /// refused, saying which.
    /// The certificate must also be usable at `now` (within its validity, and its key usages,
    /// when present, allowing key encipherment and email protection).
    pub fn from_certificate(cert: &[u8], now: SystemTime) -> Result<ReaderKey, RmsError> {
        let cert =
            crate::crypto::smime::RecipientCert::from_bytes(cert).map_err(RmsError::ReaderKey)?;
        if let Some(problem) = cert.unusable_reason(now) {
            return Err(RmsError::ReaderKey(problem));
        }
        let key = cert.public_key().map_err(|e| match e {
            crate::crypto::smime::SmimeError::Unusable { reason, .. } => {
                RmsError::ReaderKey(reason)
            }
            other => RmsError::ReaderKey(other.to_string()),
        })?;
        ReaderKey::from_public(key.clone())
    }

    /// From a reader's own RSA public key as a SubjectPublicKeyInfo, PEM (`PUBLIC KEY`, what
    /// `openssl pkey -pubout` writes) or DER: the key of a reader who proved itself otherwise
    /// than with a certificate (a password).
    pub fn from_public_key(spki: &[u8]) -> Result<ReaderKey, RmsError> {
        let der = if spki.starts_with(b"-----BEGIN") {
            let (label, der) = der::pem::decode_vec(spki.trim_ascii())
                .map_err(|e| RmsError::ReaderKey(format!("bad PEM public key: {e}")))?;
            if label != "PUBLIC KEY" {
                return Err(RmsError::ReaderKey(format!(
                    "expected a PUBLIC KEY in PEM, got {label}"
                )));
            }
            der
        } else {
            spki.to_vec()
        };
        let key = PublicEncryptingKey::from_der(&der).map_err(|_| {
            RmsError::ReaderKey("not an RSA public key (SubjectPublicKeyInfo)".into())
        })?;
        ReaderKey::from_public(key)
    }

    /// From an RSA public key (2048 bits or more).
    pub fn from_public(key: PublicEncryptingKey) -> Result<ReaderKey, RmsError> {
        if key.key_size_bits() < MIN_RSA_BITS {
            return Err(RmsError::ReaderKey(format!(
                "RSA key of {} bits is below the {MIN_RSA_BITS}-bit minimum",
                key.key_size_bits()
            )));
        }
        Ok(ReaderKey(key))
    }
}

fn corrupted(what: impl std::fmt::Display) -> RmsError {
    RmsError::Corrupted(format!("use license: {what}"))
}

impl UseLicense {
    /// Wraps `content_key` to `reader` and signs the grant with `tenant`.
    pub fn issue(
        grant: &Grant,
        content_key: &[u8],
        reader: &ReaderKey,
        tenant: &TenantKey,
    ) -> Result<UseLicense, RmsError> {
        let principal = normalize_principal(&grant.principal)
            .filter(|p| p == &grant.principal && !p.starts_with("*@") && p != super::ANYONE)
            .ok_or_else(|| {
                RmsError::ReaderKey(format!("not a reader address: {}", grant.principal))
            })?;
        if let Some(problem) = licensing_url_problem(&grant.licensing_url) {
            return Err(RmsError::Unsupported(format!("licensing URL {problem}")));
        }
        let (issued, valid_until) = (
            super::unix_seconds(grant.issued),
            super::unix_seconds(grant.valid_until),
        );
        if grant.rights.is_empty() || valid_until <= issued {
            return Err(RmsError::Unsupported(
                "a use license without rights or validity".into(),
            ));
        }
        let oaep = OaepPublicEncryptingKey::new(reader.0.clone())
            .map_err(|_| RmsError::Crypto("RSA-OAEP key".into()))?;
        let mut wrapped_key = vec![0u8; oaep.ciphertext_size()];
        let n = oaep
            .encrypt(&OAEP_SHA256_MGF1SHA256, content_key, &mut wrapped_key, None)
            .map_err(|_| RmsError::Crypto("RSA-OAEP wrap of the content key".into()))?
            .len();
        wrapped_key.truncate(n);
        let mut ul = UseLicense {
            tenant_key_id: *tenant.id(),
            license_sha256: grant.license_sha256,
            principal,
            rights: grant.rights,
            issued,
            valid_until,
            wrapped_key,
            licensing_url: grant.licensing_url.clone(),
            signed: Vec::new(),
            signature: Vec::new(),
        };
        ul.signed = ul.signed_bytes();
        ul.signature = tenant.sign_pss(&ul.signed)?;
        Ok(ul)
    }

    /// The canonical signed bytes of these fields.
    fn signed_bytes(&self) -> Vec<u8> {
        let mut fields = Vec::with_capacity(256 + self.wrapped_key.len());
        put(&mut fields, T_KEY_ID, &self.tenant_key_id);
        put(&mut fields, T_LICENSE_HASH, &self.license_sha256);
        put(&mut fields, T_PRINCIPAL, self.principal.as_bytes());
        put(&mut fields, T_RIGHTS, &[self.rights.bits()]);
        put(&mut fields, T_ISSUED, &self.issued.to_be_bytes());
        put(&mut fields, T_VALID_UNTIL, &self.valid_until.to_be_bytes());
        put(&mut fields, T_WRAPPED_KEY, &self.wrapped_key);
        put(&mut fields, T_URL, self.licensing_url.as_bytes());
        let mut out = Vec::with_capacity(13 + fields.len());
        out.extend_from_slice(USE_LICENSE_MAGIC);
        out.push(USE_LICENSE_VERSION);
        out.extend_from_slice(&(fields.len() as u32).to_be_bytes());
        out.extend_from_slice(&fields);
        out
    }

    /// Exactly the bytes the signature covers.
    pub fn signed(&self) -> &[u8] {
        &self.signed
    }

    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// The wire form: signed bytes | signature length (2) | signature.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.signed.len() + 2 + self.signature.len());
        out.extend_from_slice(&self.signed);
        out.extend_from_slice(&(self.signature.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.signature);
        out
    }

    /// Parses the wire form strictly (no signature check: see `verify`): magic, version, every
    /// field once in order with its exact length, no trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<UseLicense, RmsError> {
        if bytes.len() > MAX_USE_LICENSE {
            return Err(corrupted("too long"));
        }
        if !bytes.starts_with(USE_LICENSE_MAGIC) {
            return Err(corrupted("not a use license"));
        }
        let version = *bytes.get(8).ok_or_else(|| corrupted("truncated"))?;
        if version != USE_LICENSE_VERSION {
            return Err(RmsError::Unsupported(format!(
                "use license version {version} (this reader knows {USE_LICENSE_VERSION})"
            )));
        }
        let len = bytes
            .get(9..13)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(|| corrupted("truncated"))?;
        let end = 13usize
            .checked_add(len)
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| corrupted("fields truncated"))?;
        let (signed, rest) = bytes.split_at(end);
        let (sig_len, signature) = rest
            .split_first_chunk::<2>()
            .ok_or_else(|| corrupted("no signature length"))?;
        let sig_len = u16::from_be_bytes(*sig_len) as usize;
        if !(256..=1024).contains(&sig_len) || signature.len() != sig_len {
            return Err(corrupted("bad signature length"));
        }
        let mut ul = decode_fields(&signed[13..])?;
        ul.signed = signed.to_vec();
        ul.signature = signature.to_vec();
        Ok(ul)
    }

    /// Whether the tenant key `key` signed this use license (and its id is the one named).
    pub fn verify(&self, key: &TenantPublicKey) -> Result<(), RmsError> {
        if key.id() != &self.tenant_key_id || !key.verifies(&self.signed, &self.signature) {
            return Err(RmsError::Integrity);
        }
        Ok(())
    }

    /// `verify` with the key of `keys` that the use license names.
    pub fn verify_with(&self, keys: &TenantKeys) -> Result<(), RmsError> {
        let key = keys
            .get(&self.tenant_key_id)
            .ok_or_else(|| RmsError::WrongTenantKey {
                protected_with: hex::encode(self.tenant_key_id),
                given: keys.ids(),
            })?;
        if !verify_pss(key.public_pkcs1(), &self.signed, &self.signature) {
            return Err(RmsError::Integrity);
        }
        Ok(())
    }

    /// The time it stops being valid.
    pub fn valid_until_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.valid_until)
    }

    /// Unwraps the content key with the reader's private key. A wrong key or an altered wrap
    /// fails as a whole (RSA-OAEP checks its padding in constant time); nothing partial is
    /// returned.
    pub fn unwrap_key(&self, reader: &DecryptKey) -> Result<Zeroizing<Vec<u8>>, RmsError> {
        let oaep = aws_lc_rs::rsa::OaepPrivateDecryptingKey::new(reader.rsa().clone())
            .map_err(|_| RmsError::Crypto("RSA-OAEP key".into()))?;
        let mut key = Zeroizing::new(vec![0u8; oaep.min_output_size()]);
        let n = oaep
            .decrypt(&OAEP_SHA256_MGF1SHA256, &self.wrapped_key, &mut key, None)
            .map_err(|_| {
                RmsError::ReaderKey(
                    "the use license's content key does not open with this key".into(),
                )
            })?
            .len();
        key.truncate(n);
        Ok(key)
    }
}

/// The content key of a publishing license, unwrapped with the tenant key that protected it;
/// it must have the length of the license's algorithm.
pub fn unwrap_content_key(
    license: &License,
    tenant: &TenantKey,
) -> Result<Zeroizing<Vec<u8>>, RmsError> {
    let key = tenant.unwrap_oaep(&license.wrapped_key)?;
    if key.len() != license.algorithm.key_len() {
        return Err(RmsError::Corrupted(
            "content key of the wrong length".into(),
        ));
    }
    Ok(key)
}

/// SHA-256 of publishing license bytes, as a use license names them.
pub fn license_sha256(license: &[u8]) -> [u8; 32] {
    let mut h = [0u8; 32];
    h.copy_from_slice(digest::digest(&digest::SHA256, license).as_ref());
    h
}

fn decode_fields(mut rest: &[u8]) -> Result<UseLicense, RmsError> {
    let mut next = |tag: u8| -> Result<&[u8], RmsError> {
        let (&t, tail) = rest
            .split_first()
            .ok_or_else(|| corrupted(format!("no field {tag:#04x}")))?;
        if t != tag {
            return Err(corrupted(format!(
                "field {t:#04x} where {tag:#04x} belongs"
            )));
        }
        let (len, tail) = tail
            .split_first_chunk::<4>()
            .ok_or_else(|| corrupted("truncated field length"))?;
        let len = u32::from_be_bytes(*len) as usize;
        if tail.len() < len {
            return Err(corrupted(format!("field {tag:#04x} truncated")));
        }
        let (value, tail) = tail.split_at(len);
        rest = tail;
        Ok(value)
    };
    let fixed32 = |v: &[u8], name: &str| -> Result<[u8; 32], RmsError> {
        <[u8; 32]>::try_from(v).map_err(|_| corrupted(format!("{name} is not 32 bytes")))
    };
    let time = |v: &[u8], name: &str| -> Result<u64, RmsError> {
        <[u8; 8]>::try_from(v)
            .map(u64::from_be_bytes)
            .ok()
            .filter(|t| *t <= MAX_TIME)
            .ok_or_else(|| corrupted(format!("bad {name}")))
    };
    let tenant_key_id = fixed32(next(T_KEY_ID)?, "tenant key id")?;
    let license_sha256 = fixed32(next(T_LICENSE_HASH)?, "license hash")?;
    let principal = std::str::from_utf8(next(T_PRINCIPAL)?)
        .ok()
        .filter(|p| {
            normalize_principal(p).as_deref() == Some(*p)
                && !p.starts_with("*@")
                && *p != super::ANYONE
        })
        .ok_or_else(|| corrupted("bad principal"))?
        .to_string();
    let rights = match next(T_RIGHTS)? {
        [b] => Rights::from_bits(*b).filter(|r| !r.is_empty()),
        _ => None,
    }
    .ok_or_else(|| corrupted("bad rights"))?;
    let issued = time(next(T_ISSUED)?, "issue time")?;
    let valid_until = time(next(T_VALID_UNTIL)?, "end of validity")?;
    if valid_until <= issued {
        return Err(corrupted("valid until before issued"));
    }
    let wrapped_key = next(T_WRAPPED_KEY)?.to_vec();
    if !(256..=1024).contains(&wrapped_key.len()) {
        return Err(corrupted("wrapped key length"));
    }
    let licensing_url = std::str::from_utf8(next(T_URL)?)
        .ok()
        .filter(|u| licensing_url_problem(u).is_none())
        .ok_or_else(|| corrupted("bad licensing URL"))?
        .to_string();
    if !rest.is_empty() {
        return Err(corrupted("bytes after the last field"));
    }
    Ok(UseLicense {
        tenant_key_id,
        license_sha256,
        principal,
        rights,
        issued,
        valid_until,
        wrapped_key,
        licensing_url,
        signed: Vec::new(),
        signature: Vec::new(),
    })
}

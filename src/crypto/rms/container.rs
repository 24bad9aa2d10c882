//! The binary container (`message.sealed`): framing, sealing and the verify-then-decrypt reader.
//!
//! Layout (all integers big endian): magic `SEALRMS\0` (8) | version 1 or 2 (1) | tenant key id (32)
//! | license length (4) | license | signature length (2) | signature | ciphertext length (8) |
//! ciphertext. Nothing may follow.

use std::time::SystemTime;

use aws_lc_rs::cipher::{
    DecryptionContext, EncryptionContext, PaddedBlockDecryptingKey, PaddedBlockEncryptingKey,
    UnboundCipherKey, AES_128, AES_256,
};
use aws_lc_rs::digest;
use aws_lc_rs::rsa::{OaepPublicEncryptingKey, OAEP_SHA256_MGF1SHA256};
use aws_lc_rs::signature::{UnparsedPublicKey, RSA_PSS_2048_8192_SHA256};
use zeroize::Zeroizing;

use super::license::{License, RmsAlgorithm, MAX_LICENSE};
use super::tenant::{TenantKey, TenantKeys};
use super::{LicenseRequest, RmsError};

/// The container's first bytes.
pub const MAGIC: &[u8; 8] = b"SEALRMS\0";
/// The container version written for licenses without a licensing URL (and read).
pub const VERSION: u8 = 1;
/// The container version written for licenses with a licensing URL (and read).
pub const VERSION_2: u8 = 2;
const HEADER: usize = 8 + 1 + 32;

fn crypto(what: &str) -> RmsError {
    RmsError::Crypto(what.to_string())
}

/// The container split into its parts (no cryptography yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framed<'a> {
    /// `VERSION` or `VERSION_2`; the license inside must be of the same version.
    pub version: u8,
    pub key_id: [u8; 32],
    pub license: &'a [u8],
    pub signature: &'a [u8],
    pub ciphertext: &'a [u8],
}

fn take<'a>(rest: &mut &'a [u8], n: usize, what: &str) -> Result<&'a [u8], RmsError> {
    if rest.len() < n {
        return Err(RmsError::Corrupted(format!(
            "container truncated in the {what}"
        )));
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Ok(head)
}

fn be(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
}

/// Splits a container into header key id, license, signature and ciphertext.
pub fn parse(bytes: &[u8]) -> Result<Framed<'_>, RmsError> {
    if !bytes.starts_with(MAGIC) {
        return Err(RmsError::NotProtected);
    }
    let mut rest = &bytes[MAGIC.len()..];
    let version = take(&mut rest, 1, "version")?[0];
    if version != VERSION && version != VERSION_2 {
        return Err(RmsError::Unsupported(format!(
            "container version {version} (this reader knows {VERSION} and {VERSION_2})"
        )));
    }
    let mut key_id = [0u8; 32];
    key_id.copy_from_slice(take(&mut rest, 32, "key id")?);
    let n = be(take(&mut rest, 4, "license length")?) as usize;
    if n > MAX_LICENSE {
        return Err(RmsError::Corrupted("license length too large".into()));
    }
    let license = take(&mut rest, n, "license")?;
    let n = be(take(&mut rest, 2, "signature length")?) as usize;
    if !(256..=1024).contains(&n) {
        return Err(RmsError::Corrupted(format!("signature length {n}")));
    }
    let signature = take(&mut rest, n, "signature")?;
    let n = be(take(&mut rest, 8, "ciphertext length")?);
    if n != rest.len() as u64 {
        return Err(RmsError::Corrupted(format!(
            "ciphertext length {n}, but {} bytes follow",
            rest.len()
        )));
    }
    if rest.is_empty() || !rest.len().is_multiple_of(16) {
        return Err(RmsError::Corrupted(
            "ciphertext is not a whole number of AES blocks".into(),
        ));
    }
    Ok(Framed {
        version,
        key_id,
        license,
        signature,
        ciphertext: rest,
    })
}

fn aes_key(algorithm: RmsAlgorithm, key: &[u8]) -> Result<UnboundCipherKey, RmsError> {
    let alg = match algorithm {
        RmsAlgorithm::Aes256Cbc => &AES_256,
        RmsAlgorithm::Aes128Cbc => &AES_128,
    };
    UnboundCipherKey::new(alg, key).map_err(|_| crypto("AES key"))
}

/// Encrypts `message` under a fresh content key and IV, writes and signs the license, and
/// returns the container bytes and the license.
pub fn seal(
    message: &[u8],
    tenant: &TenantKey,
    req: &LicenseRequest,
) -> Result<(Vec<u8>, License), RmsError> {
    let mut cek = Zeroizing::new(vec![0u8; req.algorithm.key_len()]);
    aws_lc_rs::rand::fill(&mut cek).map_err(|_| crypto("random content key"))?;
    let mut iv = [0u8; 16];
    aws_lc_rs::rand::fill(&mut iv).map_err(|_| crypto("random IV"))?;
    let key = PaddedBlockEncryptingKey::cbc_pkcs7(aes_key(req.algorithm, &cek)?)
        .map_err(|_| crypto("AES-CBC key"))?;
    let mut ciphertext = Vec::with_capacity(message.len() + 16);
    ciphertext.extend_from_slice(message);
    key.less_safe_encrypt(&mut ciphertext, EncryptionContext::Iv128(iv.into()))
        .map_err(|_| crypto("AES-CBC"))?;
    let mut ciphertext_sha256 = [0u8; 32];
    ciphertext_sha256.copy_from_slice(digest::digest(&digest::SHA256, &ciphertext).as_ref());

    let oaep = OaepPublicEncryptingKey::new(tenant.encrypting().clone())
        .map_err(|_| crypto("RSA-OAEP key"))?;
    let mut wrapped_key = vec![0u8; oaep.ciphertext_size()];
    let n = oaep
        .encrypt(&OAEP_SHA256_MGF1SHA256, &cek, &mut wrapped_key, None)
        .map_err(|_| crypto("RSA-OAEP wrap of the content key"))?
        .len();
    wrapped_key.truncate(n);
    drop(cek);

    let license = License {
        issuer: req.issuer.clone(),
        tenant_key_id: *tenant.id(),
        algorithm: req.algorithm,
        iv,
        wrapped_key,
        ciphertext_sha256,
        rights: req.rights.clone(),
        issued: super::unix_seconds(req.issued),
        expires: req.expires.map(super::unix_seconds),
        template: req.template.clone(),
        message_id: req.message_id.clone(),
        licensing_url: req.licensing_url.clone(),
    };
    if let Some(problem) = license
        .licensing_url
        .as_deref()
        .and_then(super::license::licensing_url_problem)
    {
        return Err(RmsError::Unsupported(format!("licensing URL {problem}")));
    }
    let license_bytes = license.encode();
    let signature = tenant.sign_pss(&license_bytes)?;

    let mut out =
        Vec::with_capacity(HEADER + 14 + license_bytes.len() + signature.len() + ciphertext.len());
    out.extend_from_slice(MAGIC);
    out.push(license.version());
    out.extend_from_slice(tenant.id());
    out.extend_from_slice(&(license_bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(&license_bytes);
    out.extend_from_slice(&(signature.len() as u16).to_be_bytes());
    out.extend_from_slice(&signature);
    out.extend_from_slice(&(ciphertext.len() as u64).to_be_bytes());
    out.extend_from_slice(&ciphertext);
    Ok((out, license))
}

fn signature_ok(key: &TenantKey, framed: &Framed<'_>) -> bool {
    UnparsedPublicKey::new(&RSA_PSS_2048_8192_SHA256, key.public_pkcs1())
        .verify(framed.license, framed.signature)
        .is_ok()
}

/// Opens a container: signature, license, key id and ciphertext digest are all checked before
/// any decryption; then expiry; then the content key is unwrapped and the content decrypted.
pub fn open(
    bytes: &[u8],
    keys: &TenantKeys,
    now: SystemTime,
    ignore_expiry: bool,
) -> Result<(License, Vec<u8>), RmsError> {
    let framed = parse(bytes)?;
    let Some(key) = keys.get(&framed.key_id) else {
        // A key we hold that verifies the license means only the header's copy was altered.
        if keys.iter().any(|k| signature_ok(k, &framed)) {
            return Err(RmsError::Integrity);
        }
        return Err(RmsError::WrongTenantKey {
            protected_with: hex::encode(framed.key_id),
            given: keys.ids(),
        });
    };
    if !signature_ok(key, &framed) {
        return Err(RmsError::Integrity);
    }
    let license = checked_license(&framed)?;
    if let Some(at) = license.expires_at() {
        if now >= at && !ignore_expiry {
            return Err(RmsError::Expired { at });
        }
    }
    let cek = key.unwrap_oaep(&license.wrapped_key)?;
    let plain = decrypt(&license, framed.ciphertext, &cek)?;
    Ok((license, plain))
}

/// Decodes the (signature-checked) license and checks it against the framing: same version,
/// same key id, and the ciphertext digest.
pub(crate) fn checked_license(framed: &Framed<'_>) -> Result<License, RmsError> {
    let license = License::decode(framed.license)?;
    if license.version() != framed.version {
        return Err(RmsError::Unsupported(format!(
            "container version {} holding a version {} license",
            framed.version,
            license.version()
        )));
    }
    if license.tenant_key_id != framed.key_id {
        return Err(RmsError::Integrity);
    }
    let digest = digest::digest(&digest::SHA256, framed.ciphertext);
    if digest.as_ref() != license.ciphertext_sha256 {
        return Err(RmsError::Integrity);
    }
    Ok(license)
}

/// Decrypts checked ciphertext with the content key `cek` (of the license's algorithm).
pub(crate) fn decrypt(
    license: &License,
    ciphertext: &[u8],
    cek: &[u8],
) -> Result<Vec<u8>, RmsError> {
    if cek.len() != license.algorithm.key_len() {
        return Err(RmsError::Corrupted(
            "content key of the wrong length".into(),
        ));
    }
    let key = PaddedBlockDecryptingKey::cbc_pkcs7(aes_key(license.algorithm, cek)?)
        .map_err(|_| crypto("AES-CBC key"))?;
    let mut plain = ciphertext.to_vec();
    let n = key
        .decrypt(&mut plain, DecryptionContext::Iv128(license.iv.into()))
        .map_err(|_| RmsError::Corrupted("the content does not decrypt".into()))?
        .len();
    plain.truncate(n);
    Ok(plain)
}

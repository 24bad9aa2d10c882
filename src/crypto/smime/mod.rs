//! S/MIME encryption of whole messages (RFC 8551 over CMS, RFC 5652/5083/5084) and its reverse.
//!
//! `encrypt_message` keeps the routing header fields outside and puts the original Content-*
//! header fields and body, byte for byte, into a CMS `EnvelopedData` (AES-256-CBC) or
//! `AuthEnvelopedData` (AES-256-GCM), with one `KeyTransRecipientInfo` per certificate
//! (RSAES-OAEP-SHA256 by default, PKCS#1 v1.5 on demand). `decrypt_message` opens such a message
//! (ours or any standard client's, including OpenSSL's indefinite-length BER) with an RSA key.
//! `sign_message` makes a `multipart/signed` message (detached CMS `SignedData`, SHA-256,
//! RSASSA-PKCS1-v1_5) and `verify_message` checks one, ours or any client's.

mod alg;
mod b64;
mod cache;
mod cert;
mod mime;
mod open;
mod seal;
mod signed_mime;
mod signer;
mod verify;

use std::path::PathBuf;
use std::time::SystemTime;

pub use crate::crypto::keys::DecryptKey;
pub use cache::CertificateCache;
pub use cert::{find_certificate, find_certificate_explained, CertificateLookup, RecipientCert};
pub use mime::is_encrypted;
pub use signed_mime::is_signed;
pub use signer::{SignatureScheme, SigningKey, SigningKeys};
pub use verify::{verify_message, Signer, SignerAnchors, SignerTrust, Verified};

/// The content-encryption algorithm.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ContentAlgorithm {
    /// `EnvelopedData` with AES-256-CBC: what every S/MIME client opens.
    #[default]
    Aes256Cbc,
    /// `AuthEnvelopedData` with AES-256-GCM (RFC 5083/5084): authenticated, newer clients only.
    Aes256Gcm,
}

/// How the content key is encrypted for each recipient's RSA key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyTransport {
    /// RSAES-OAEP with SHA-256 and MGF1-SHA-256, parameters written out (RFC 8017, RFC 4055).
    #[default]
    RsaOaep,
    /// RSAES-PKCS1-v1_5, for old clients.
    RsaPkcs1,
}

/// Choices for `encrypt_message`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SmimeOptions {
    pub algorithm: ContentAlgorithm,
    pub key_transport: KeyTransport,
}

/// Why a message could not be encrypted, or a certificate not loaded.
#[derive(Debug, thiserror::Error)]
pub enum SmimeError {
    /// The message is already S/MIME or PGP encrypted; it is left as it is.
    #[error("the message is already encrypted (S/MIME or PGP)")]
    AlreadyEncrypted,
    #[error("no recipient certificates given")]
    NoRecipients,
    /// A certificate file could not be read or parsed.
    #[error("{path}: {problem}")]
    Certificate { path: PathBuf, problem: String },
    /// A certificate that cannot be used to encrypt (weak key, not RSA, …).
    #[error("certificate for {subject} cannot be used: {reason}")]
    Unusable { subject: String, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The crypto library failed (random numbers, encoding); not caused by the input.
    #[error("encryption failed: {0}")]
    Crypto(String),
}

/// Why a message could not be decrypted. Each kind has its own exit code (see `exit_code`).
#[derive(Debug, thiserror::Error)]
pub enum DecryptError {
    /// The input is not an S/MIME encrypted message.
    #[error("not an S/MIME encrypted message (no application/pkcs7-mime enveloped-data part)")]
    NotEncrypted,
    /// The message is encrypted for other recipients than the given certificate (or key size).
    #[error("the message is not encrypted for this key; it is for: {}", recipients.join("; "))]
    NotForYou { recipients: Vec<String> },
    /// The key opens none of the recipient infos: it is another key of the same size, or the
    /// message was damaged. Without a certificate the two cannot be told apart (RFC 3218).
    #[error(
        "this key does not open the message: it is encrypted for another key, or damaged \
             (give the key's certificate with --cert to tell the two apart)"
    )]
    WrongKey,
    /// The recipient info names this key, yet the content does not decrypt and authenticate:
    /// the ciphertext or the encrypted content key was altered after encryption.
    #[error(
        "the encrypted content failed to decrypt or authenticate: the message was altered \
             or damaged after it was encrypted"
    )]
    Tampered,
    /// The input is truncated or is not valid base64 / DER.
    #[error("the message is corrupted or truncated: {0}")]
    Corrupted(String),
    /// A valid message using an algorithm we do not implement.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The private key, certificate or PKCS#12 file could not be used.
    #[error("key: {0}")]
    Key(String),
    /// The input carries no S/MIME signature.
    #[error("not an S/MIME signed message (no multipart/signed or signed-data)")]
    NotSigned,
    /// A signature does not verify: the signed content or the signature was altered.
    #[error("BAD SIGNATURE: {0}")]
    BadSignature(String),
    /// The signature is intact but its signer does not chain to the trust anchors given.
    #[error("the signer is not trusted: {0}")]
    Untrusted(String),
}

impl DecryptError {
    /// The process exit code for this error; 0 is success, 1 is any other failure (I/O),
    /// 2 is a usage error (from the argument parser).
    ///
    /// | code | error |
    /// |---|---|
    /// | 3 | not encrypted |
    /// | 4 | not for this key (encrypted for other recipients) |
    /// | 5 | wrong key |
    /// | 6 | content altered (decryption / authentication failed) |
    /// | 7 | corrupted or truncated input |
    /// | 8 | unsupported algorithm |
    /// | 9 | key, certificate or PKCS#12 file unusable |
    /// | 17 | bad signature (signed content or signature altered) |
    /// | 18 | signer not trusted (with trust anchors given) |
    ///
    /// A message that is neither encrypted nor signed ends with 3.
    pub fn exit_code(&self) -> u8 {
        match self {
            DecryptError::NotEncrypted => 3,
            DecryptError::NotForYou { .. } => 4,
            DecryptError::WrongKey => 5,
            DecryptError::Tampered => 6,
            DecryptError::Corrupted(_) => 7,
            DecryptError::Unsupported(_) => 8,
            DecryptError::Key(_) => 9,
            DecryptError::NotSigned => 3,
            DecryptError::BadSignature(_) => 17,
            DecryptError::Untrusted(_) => 18,
        }
    }
}

/// Encrypts a whole RFC 5322 message for `recipients`.
///
/// Routing header fields (From, To, Cc, Date, Message-ID, Subject, Received, Return-Path and
/// every other field not named Content-*) stay outside; the inner entity is the original
/// Content-* fields and body, byte-exact. The outer message gets MIME-Version (unless it has one)
/// and `Content-Type: application/pkcs7-mime; smime-type=enveloped-data` (`authEnveloped-data`
/// for GCM) with the CMS structure in base64, 76-character lines, in the message's line ending.
pub fn encrypt_message<C: std::borrow::Borrow<RecipientCert>>(
    message: &[u8],
    recipients: &[C],
    opts: &SmimeOptions,
) -> Result<Vec<u8>, SmimeError> {
    if is_encrypted(message) {
        return Err(SmimeError::AlreadyEncrypted);
    }
    encrypt_unencrypted(message, recipients, opts)
}

/// [`encrypt_message`] for a caller that found `message` not encrypted already (with
/// [`is_encrypted`]), which is not checked again.
pub(crate) fn encrypt_unencrypted<C: std::borrow::Borrow<RecipientCert>>(
    message: &[u8],
    recipients: &[C],
    opts: &SmimeOptions,
) -> Result<Vec<u8>, SmimeError> {
    if recipients.is_empty() {
        return Err(SmimeError::NoRecipients);
    }
    let parts = mime::split(message);
    let der = seal::seal(&parts, recipients, opts)?;
    let smime_type = match opts.algorithm {
        ContentAlgorithm::Aes256Cbc => "enveloped-data",
        ContentAlgorithm::Aes256Gcm => "authEnveloped-data",
    };
    Ok(parts.outer_message(smime_type, &der))
}

/// Signs a whole RFC 5322 message with `key`: the routing header fields stay outside (as for
/// encryption) and the Content-* fields and body become the first part of a `multipart/signed`
/// message, made CRLF-canonical and 7-bit (8-bit leaf bodies are base64-encoded) so that no
/// relay changes a signed byte; the second part is the detached signature (`smime.p7s`),
/// RSASSA-PKCS1-v1_5 unless `scheme` asks for PSS.
pub fn sign_message(
    message: &[u8],
    key: &SigningKey,
    scheme: SignatureScheme,
    now: SystemTime,
) -> Result<Vec<u8>, SmimeError> {
    if is_encrypted(message) {
        return Err(SmimeError::AlreadyEncrypted);
    }
    let parts = mime::split(message);
    let entity = signed_mime::canonical_entity(&parts.inner_entity());
    let der = key.sign_detached(&entity, scheme, now)?;
    Ok(signed_mime::multipart_signed(&parts, &entity, &der))
}

/// Opens an S/MIME encrypted message and returns the original message: the outer routing header
/// fields followed by the decrypted inner entity (its Content-* fields and body).
///
/// A bare CMS structure (DER, BER or PEM, as in a `.p7m` file) is accepted too; then the result
/// is the inner entity alone. Nothing is returned unless the whole content decrypted (and, for
/// GCM, authenticated).
pub fn decrypt_message(message: &[u8], key: &DecryptKey) -> Result<Vec<u8>, DecryptError> {
    let (outer, cms) = mime::extract_cms(message)?;
    let inner = open::open(&cms, key)?;
    Ok(match outer {
        Some(parts) => parts.merge(&inner),
        None => inner.to_vec(),
    })
}

#[cfg(test)]
mod tests;

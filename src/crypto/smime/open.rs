//! Opening a CMS `EnvelopedData` / `AuthEnvelopedData` (DER or indefinite-length BER) with an
//! RSA private key, following RFC 3218 against padding oracles.
//!
//! Which recipient info is ours is decided from public facts only: the certificate (issuer and
//! serial number, or subject key identifier) or, without one, key identifiers computed from the
//! key and the size of each encrypted key. When the recipient info names our key, any failure —
//! RSA unwrap or content — is reported as `Tampered`; when we can only try the key, any failure
//! is `WrongKey`. An unwrap failure continues with a random content key, so both paths do the
//! same work and the answer never depends on whether the RSA padding was valid.

use cms::authenveloped_data::AuthEnvelopedData;
use cms::content_info::ContentInfo;
use cms::enveloped_data::{
    EncryptedContentInfo, EnvelopedData, KeyTransRecipientInfo, RecipientIdentifier, RecipientInfo,
    RecipientInfos,
};
use der::{Decode, Encode, EncodingRules};
use zeroize::Zeroizing;

use super::alg::{
    Content, Unwrap, ID_AUTH_ENVELOPED_DATA, ID_DATA, ID_ENVELOPED_DATA, ID_SIGNED_DATA,
};
use super::{DecryptError, DecryptKey};

fn corrupted(what: impl std::fmt::Display) -> DecryptError {
    DecryptError::Corrupted(what.to_string())
}

/// True if `der` is a ContentInfo holding EnvelopedData or AuthEnvelopedData.
pub(crate) fn is_enveloped(der: &[u8]) -> bool {
    ContentInfo::from_ber(der).is_ok_and(|ci| {
        ci.content_type == ID_ENVELOPED_DATA || ci.content_type == ID_AUTH_ENVELOPED_DATA
    })
}

/// The parts of either structure that decryption needs.
struct Envelope {
    recipients: RecipientInfos,
    content_info: EncryptedContentInfo,
    authenticated: bool,
    tag: Vec<u8>,
    aad: Vec<u8>,
}

fn parse(der: &[u8]) -> Result<Envelope, DecryptError> {
    let ci = ContentInfo::from_ber(der).map_err(|e| corrupted(format!("CMS structure: {e}")))?;
    match ci.content_type {
        ID_ENVELOPED_DATA => {
            let data = ci
                .content
                .decode_as_encoding::<EnvelopedData>(EncodingRules::Ber)
                .map_err(|e| corrupted(format!("EnvelopedData: {e}")))?;
            Ok(Envelope {
                recipients: data.recip_infos,
                content_info: data.encrypted_content,
                authenticated: false,
                tag: Vec::new(),
                aad: Vec::new(),
            })
        }
        ID_AUTH_ENVELOPED_DATA => {
            let data = ci
                .content
                .decode_as_encoding::<AuthEnvelopedData>(EncodingRules::Ber)
                .map_err(|e| corrupted(format!("AuthEnvelopedData: {e}")))?;
            // RFC 5083 §2.1: the additional data is the DER of authAttrs with a SET OF tag.
            let aad = match &data.auth_attrs {
                Some(attrs) => attrs
                    .to_der()
                    .map_err(|e| corrupted(format!("authenticated attributes: {e}")))?,
                None => Vec::new(),
            };
            Ok(Envelope {
                recipients: data.recip_infos,
                content_info: data.auth_encrypted_content_info,
                authenticated: true,
                tag: data.mac.as_bytes().to_vec(),
                aad,
            })
        }
        ID_SIGNED_DATA => Err(DecryptError::NotEncrypted),
        other => Err(DecryptError::Unsupported(format!(
            "CMS content type {other} (not enveloped data)"
        ))),
    }
}

/// A readable name for a recipient info, for "encrypted for" lists.
fn describe(ri: &RecipientInfo) -> String {
    match ri {
        RecipientInfo::Ktri(k) => describe_rid(&k.rid),
        RecipientInfo::Kari(_) => "a key-agreement (ECDH) recipient".into(),
        RecipientInfo::Kekri(_) => "a pre-shared key (KEK) recipient".into(),
        RecipientInfo::Pwri(_) => "a password recipient".into(),
        RecipientInfo::Ori(o) => format!("another kind of recipient ({})", o.ori_type),
    }
}

fn describe_rid(rid: &RecipientIdentifier) -> String {
    match rid {
        RecipientIdentifier::IssuerAndSerialNumber(is) => format!(
            "issuer \"{}\" serial {}",
            is.issuer,
            hex_colons(is.serial_number.as_bytes())
        ),
        RecipientIdentifier::SubjectKeyIdentifier(ski) => {
            format!("subject key identifier {}", hex_colons(ski.0.as_bytes()))
        }
    }
}

fn hex_colons(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Does this recipient identifier name `key` (its certificate, or a key id computed from it)?
fn names_key(rid: &RecipientIdentifier, key: &DecryptKey) -> bool {
    match (rid, key.certificate()) {
        (RecipientIdentifier::IssuerAndSerialNumber(is), Some(cert)) => is == cert.issuer_serial(),
        (RecipientIdentifier::SubjectKeyIdentifier(ski), cert) => {
            let ski = ski.0.as_bytes();
            cert.and_then(|c| c.subject_key_id()) == Some(ski)
                || key.key_ids().iter().any(|id| id.as_slice() == ski)
        }
        (RecipientIdentifier::IssuerAndSerialNumber(_), None) => false,
    }
}

/// Decrypts the CMS structure `der` with `key`; returns the inner entity.
pub(crate) fn open(der: &[u8], key: &DecryptKey) -> Result<Vec<u8>, DecryptError> {
    let env = parse(der)?;
    if env.content_info.content_type != ID_DATA {
        return Err(DecryptError::Unsupported(format!(
            "encrypted content of type {} (not data)",
            env.content_info.content_type
        )));
    }
    let content = Content::from_identifier(&env.content_info.content_enc_alg, env.authenticated)?;
    let ciphertext = env
        .content_info
        .encrypted_content
        .as_ref()
        .map(|c| c.as_bytes())
        .ok_or_else(|| {
            DecryptError::Unsupported("detached content (no encrypted content inside)".into())
        })?;
    if let Content::Cbc { .. } = content {
        if ciphertext.is_empty() || ciphertext.len() % 16 != 0 {
            return Err(corrupted(format!(
                "AES-CBC ciphertext of {} bytes is not whole blocks",
                ciphertext.len()
            )));
        }
    }

    let all: Vec<&RecipientInfo> = env.recipients.0.iter().collect();
    let ktris: Vec<&KeyTransRecipientInfo> = all
        .iter()
        .filter_map(|ri| match ri {
            RecipientInfo::Ktri(k) => Some(k),
            _ => None,
        })
        .collect();
    let not_for_you = || DecryptError::NotForYou {
        recipients: all.iter().map(|ri| describe(ri)).collect(),
    };
    if ktris.is_empty() {
        return Err(if all.is_empty() {
            corrupted("no recipient infos")
        } else {
            not_for_you()
        });
    }

    let rsa = key.rsa();
    let mut random = Zeroizing::new(vec![0u8; content.key_len()]);
    aws_lc_rs::rand::fill(&mut random)
        .map_err(|_| DecryptError::Key("random number generator failed".into()))?;
    let decrypt = |cek: &[u8]| content.decrypt(cek, ciphertext, &env.tag, &env.aad);

    if let Some(ktri) = ktris.iter().find(|k| names_key(&k.rid, key)) {
        let unwrap = Unwrap::from_identifier(&ktri.key_enc_alg)?;
        let cek = unwrap
            .unwrap(rsa, ktri.enc_key.as_bytes())
            .filter(|c| c.len() == content.key_len());
        let ok = cek.is_some();
        let plain = decrypt(cek.as_deref().map_or(random.as_slice(), |c| c.as_slice()));
        return match plain {
            Some(p) if ok => Ok(p),
            _ => Err(DecryptError::Tampered),
        };
    }
    if key.certificate().is_some() {
        return Err(not_for_you());
    }

    // No certificate: try the key on every recipient info whose encrypted key has its size.
    let candidates: Vec<&&KeyTransRecipientInfo> = ktris
        .iter()
        .filter(|k| k.enc_key.as_bytes().len() == rsa.key_size_bytes())
        .collect();
    if candidates.is_empty() {
        return Err(not_for_you());
    }
    let mut unsupported = None;
    let mut tried = 0;
    let mut found: Option<Zeroizing<Vec<u8>>> = None;
    for ktri in candidates.iter() {
        match Unwrap::from_identifier(&ktri.key_enc_alg) {
            Ok(unwrap) => {
                tried += 1;
                found = unwrap
                    .unwrap(rsa, ktri.enc_key.as_bytes())
                    .filter(|c| c.len() == content.key_len());
                if found.is_some() {
                    break;
                }
            }
            Err(e) => unsupported = Some(e),
        }
    }
    if let (0, Some(e)) = (tried, unsupported) {
        return Err(e);
    }
    let ok = found.is_some();
    let plain = decrypt(found.as_deref().map_or(random.as_slice(), |c| c.as_slice()));
    match plain {
        Some(p) if ok => Ok(p),
        _ => Err(DecryptError::WrongKey),
    }
}

//! Building the CMS structure: a fresh AES-256 content key, one KeyTransRecipientInfo per
//! recipient (identified by issuer and serial number, version 0), and the encrypted entity in an
//! `EnvelopedData` (CBC) or `AuthEnvelopedData` (GCM), DER-encoded inside a `ContentInfo`.

use std::borrow::Borrow;

use cms::authenveloped_data::AuthEnvelopedData;
use cms::content_info::CmsVersion;
use cms::enveloped_data::{
    EncryptedContentInfo, EnvelopedData, KeyTransRecipientInfo, RecipientIdentifier, RecipientInfo,
    RecipientInfos,
};
use der::asn1::{ObjectIdentifier, OctetString};
use der::{Encode, Sequence};
use zeroize::Zeroizing;

use super::alg::{
    encode, encrypt_cbc, encrypt_gcm, key_transport_identifier, wrap_key, ID_AUTH_ENVELOPED_DATA,
    ID_DATA, ID_ENVELOPED_DATA,
};
use super::{ContentAlgorithm, RecipientCert, SmimeError, SmimeOptions};

/// `ContentInfo` holding `EnvelopedData`, encoded in one pass (no intermediate `Any` copy).
#[derive(Sequence)]
struct EnvelopedContentInfo {
    content_type: ObjectIdentifier,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    content: EnvelopedData,
}

/// `ContentInfo` holding `AuthEnvelopedData`.
#[derive(Sequence)]
struct AuthEnvelopedContentInfo {
    content_type: ObjectIdentifier,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    content: AuthEnvelopedData,
}

fn der_err(e: der::Error) -> SmimeError {
    SmimeError::Crypto(format!("DER encoding: {e}"))
}

/// Encrypts `inner` for every recipient and returns the DER `ContentInfo`.
pub(crate) fn seal<C: Borrow<RecipientCert>>(
    inner: Vec<u8>,
    recipients: &[C],
    opts: &SmimeOptions,
) -> Result<Vec<u8>, SmimeError> {
    let mut cek = Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(cek.as_mut())
        .map_err(|_| SmimeError::Crypto("random content key".into()))?;
    let key_enc_alg = key_transport_identifier(opts.key_transport)?;

    let mut infos: Vec<RecipientInfo> = Vec::with_capacity(recipients.len());
    let mut seen = Vec::with_capacity(recipients.len());
    for cert in recipients {
        let cert = cert.borrow();
        let id = encode(cert.issuer_serial())?;
        if seen.contains(&id) {
            continue;
        }
        seen.push(id);
        let wrapped = wrap_key(cert.public_key()?, opts.key_transport, cek.as_ref())?;
        infos.push(RecipientInfo::Ktri(KeyTransRecipientInfo {
            version: CmsVersion::V0,
            rid: RecipientIdentifier::IssuerAndSerialNumber(cert.issuer_serial().clone()),
            key_enc_alg: key_enc_alg.clone(),
            enc_key: OctetString::new(wrapped).map_err(der_err)?,
        }));
    }
    let recip_infos = RecipientInfos::try_from(infos).map_err(der_err)?;

    match opts.algorithm {
        ContentAlgorithm::Aes256Cbc => {
            let (alg, ciphertext) = encrypt_cbc(cek.as_ref(), inner)?;
            let content = EnvelopedData {
                version: CmsVersion::V0,
                originator_info: None,
                recip_infos,
                encrypted_content: EncryptedContentInfo {
                    content_type: ID_DATA,
                    content_enc_alg: alg,
                    encrypted_content: Some(OctetString::new(ciphertext).map_err(der_err)?),
                },
                unprotected_attrs: None,
            };
            EnvelopedContentInfo {
                content_type: ID_ENVELOPED_DATA,
                content,
            }
            .to_der()
            .map_err(der_err)
        }
        ContentAlgorithm::Aes256Gcm => {
            let (alg, ciphertext, tag) = encrypt_gcm(cek.as_ref(), inner)?;
            let content = AuthEnvelopedData {
                version: CmsVersion::V0,
                originator_info: None,
                recip_infos,
                auth_encrypted_content_info: EncryptedContentInfo {
                    content_type: ID_DATA,
                    content_enc_alg: alg,
                    encrypted_content: Some(OctetString::new(ciphertext).map_err(der_err)?),
                },
                auth_attrs: None,
                mac: OctetString::new(tag).map_err(der_err)?,
                unauth_attrs: None,
            };
            AuthEnvelopedContentInfo {
                content_type: ID_AUTH_ENVELOPED_DATA,
                content,
            }
            .to_der()
            .map_err(der_err)
        }
    }
}

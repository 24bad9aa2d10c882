//! Building the CMS structure: a fresh AES-256 content key, one KeyTransRecipientInfo per
//! recipient (identified by issuer and serial number, version 0), and the encrypted entity in an
//! `EnvelopedData` (CBC) or `AuthEnvelopedData` (GCM), DER-encoded inside a `ContentInfo`.

use std::borrow::Borrow;

use cms::content_info::CmsVersion;
use cms::enveloped_data::{
    KeyTransRecipientInfo, RecipientIdentifier, RecipientInfo, RecipientInfos,
};
use der::asn1::{ObjectIdentifier, OctetString};
use zeroize::Zeroizing;

use super::alg::{
    cbc_identifier, encode, encrypt_cbc_in_place, encrypt_gcm_in_place, gcm_identifier,
    key_transport_identifier, wrap_key, GCM_TAG_LEN, ID_AUTH_ENVELOPED_DATA, ID_DATA,
    ID_ENVELOPED_DATA,
};
use super::mime::Parts;
use super::{ContentAlgorithm, RecipientCert, SmimeError, SmimeOptions};

fn crypto(what: &str) -> SmimeError {
    SmimeError::Crypto(what.to_string())
}

fn der_err(e: der::Error) -> SmimeError {
    SmimeError::Crypto(format!("DER encoding: {e}"))
}

/// Encrypts the inner entity of `parts` for every recipient and returns the DER `ContentInfo`.
///
/// The structure is written into one buffer: the DER header (whose lengths follow from the
/// entity's length), the entity copied in after it, then encrypted in place; nothing of the size
/// of the message is copied again. `tests::hand_written_der_is_what_the_der_crate_writes` checks
/// the bytes against the `der` crate's encoding of the same values.
pub(crate) fn seal<C: Borrow<RecipientCert>>(
    parts: &Parts<'_>,
    recipients: &[C],
    opts: &SmimeOptions,
) -> Result<Vec<u8>, SmimeError> {
    // The content key and the IV or nonce in one call to the random generator.
    let mut random = Zeroizing::new([0u8; 32 + 16]);
    aws_lc_rs::rand::fill(random.as_mut())
        .map_err(|_| SmimeError::Crypto("random content key".into()))?;
    let (cek, iv) = random.split_at(32);
    let infos = recipient_infos(recipients, opts, cek)?;
    match opts.algorithm {
        ContentAlgorithm::Aes256Cbc => {
            let iv: [u8; 16] = iv.try_into().map_err(|_| crypto("IV"))?;
            let alg = encode(&cbc_identifier(&iv)?)?;
            let len = parts.inner_entity_len();
            let mut out =
                Layout::new(ID_ENVELOPED_DATA, &infos, &alg, len + 16 - len % 16, 0).header()?;
            let at = out.len();
            parts.write_inner_entity(&mut out);
            encrypt_cbc_in_place(cek, &iv, &mut out, at)?;
            Ok(out)
        }
        ContentAlgorithm::Aes256Gcm => {
            let nonce: [u8; 12] = iv[..12].try_into().map_err(|_| crypto("nonce"))?;
            let alg = encode(&gcm_identifier(&nonce)?)?;
            let len = parts.inner_entity_len();
            let mac = 2 + GCM_TAG_LEN;
            let mut out = Layout::new(ID_AUTH_ENVELOPED_DATA, &infos, &alg, len, mac).header()?;
            let at = out.len();
            parts.write_inner_entity(&mut out);
            let tag = encrypt_gcm_in_place(cek, nonce, &mut out[at..])?;
            out.extend_from_slice(&[0x04, GCM_TAG_LEN as u8]);
            out.extend_from_slice(&tag);
            Ok(out)
        }
    }
}

/// The DER of the `RecipientInfos` SET: one `KeyTransRecipientInfo` per distinct certificate.
fn recipient_infos<C: Borrow<RecipientCert>>(
    recipients: &[C],
    opts: &SmimeOptions,
    cek: &[u8],
) -> Result<Vec<u8>, SmimeError> {
    let key_enc_alg = key_transport_identifier(opts.key_transport)?;
    let mut infos: Vec<RecipientInfo> = Vec::with_capacity(recipients.len());
    let mut seen = Vec::with_capacity(recipients.len());
    for cert in recipients {
        let cert = cert.borrow();
        let id = cert.issuer_serial();
        if seen.contains(&id) {
            continue;
        }
        seen.push(id);
        let wrapped = wrap_key(cert.public_key()?, opts.key_transport, cek)?;
        infos.push(RecipientInfo::Ktri(KeyTransRecipientInfo {
            version: CmsVersion::V0,
            rid: RecipientIdentifier::IssuerAndSerialNumber(cert.issuer_serial().clone()),
            key_enc_alg: key_enc_alg.clone(),
            enc_key: OctetString::new(wrapped).map_err(der_err)?,
        }));
    }
    encode(&RecipientInfos::try_from(infos).map_err(der_err)?)
}

/// The lengths of a `ContentInfo` holding `EnvelopedData` or `AuthEnvelopedData` (version 0, no
/// originator info, no attributes) whose encrypted content is `content_len` bytes, followed
/// (GCM) by `trailer` bytes: the MAC's OCTET STRING.
struct Layout<'a> {
    content_type: ObjectIdentifier,
    infos: &'a [u8],
    alg: &'a [u8],
    content_len: usize,
    trailer: usize,
}

/// INTEGER 0: the CMS version.
const VERSION_0: [u8; 3] = [0x02, 0x01, 0x00];

impl<'a> Layout<'a> {
    fn new(
        content_type: ObjectIdentifier,
        infos: &'a [u8],
        alg: &'a [u8],
        content_len: usize,
        trailer: usize,
    ) -> Self {
        Layout {
            content_type,
            infos,
            alg,
            content_len,
            trailer,
        }
    }

    /// Every byte before the encrypted content; the buffer has room for the content after it.
    fn header(&self) -> Result<Vec<u8>, SmimeError> {
        let outer_oid = encode(&self.content_type)?;
        let data_oid = encode(&ID_DATA)?;
        let eci = data_oid.len() + self.alg.len() + tlv_len(self.content_len);
        let data = VERSION_0.len() + self.infos.len() + tlv_len(eci) + self.trailer;
        let explicit = tlv_len(data);
        let info = outer_oid.len() + tlv_len(explicit);
        let mut out = Vec::with_capacity(tlv_len(info) + 16);
        push_header(&mut out, 0x30, info);
        out.extend_from_slice(&outer_oid);
        push_header(&mut out, 0xa0, explicit);
        push_header(&mut out, 0x30, data);
        out.extend_from_slice(&VERSION_0);
        out.extend_from_slice(self.infos);
        push_header(&mut out, 0x30, eci);
        out.extend_from_slice(&data_oid);
        out.extend_from_slice(self.alg);
        // encryptedContent [0] IMPLICIT OCTET STRING, primitive.
        push_header(&mut out, 0x80, self.content_len);
        out.reserve_exact(self.content_len + self.trailer);
        Ok(out)
    }
}

/// The DER length of a TLV whose value is `len` bytes.
fn tlv_len(len: usize) -> usize {
    1 + length_octets(len) + len
}

fn length_octets(len: usize) -> usize {
    if len < 0x80 {
        1
    } else {
        1 + (usize::BITS - len.leading_zeros()).div_ceil(8) as usize
    }
}

/// A tag and a definite length in the fewest octets (DER).
fn push_header(out: &mut Vec<u8>, tag: u8, len: usize) {
    out.push(tag);
    let n = length_octets(len);
    if n == 1 {
        out.push(len as u8);
    } else {
        out.push(0x80 | (n - 1) as u8);
        out.extend_from_slice(&len.to_be_bytes()[size_of::<usize>() - (n - 1)..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::smime::mime::split;
    use cms::authenveloped_data::AuthEnvelopedData;
    use cms::enveloped_data::EnvelopedData;
    use der::{Decode, Encode, Sequence};

    /// `ContentInfo` holding `EnvelopedData`, as the `der` crate encodes it.
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

    fn bob() -> RecipientCert {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/pki/smime/bob@fabrikam.test.crt");
        RecipientCert::from_pem_file(&path).unwrap()
    }

    /// Decoding with the `der` crate and encoding again gives the same bytes: every length and
    /// tag written by hand is the DER one.
    #[test]
    fn hand_written_der_is_what_the_der_crate_writes() {
        let certs = [bob()];
        let body = "x".repeat(70_000);
        for len in [
            0, 1, 15, 16, 17, 80, 100, 111, 112, 128, 200, 239, 240, 256, 4000, 65_520, 70_000,
        ] {
            let message = format!(
                "Subject: s\r\nContent-Type: text/plain\r\n\r\n{}",
                &body[..len]
            );
            let parts = split(message.as_bytes());
            for algorithm in [ContentAlgorithm::Aes256Cbc, ContentAlgorithm::Aes256Gcm] {
                let opts = SmimeOptions {
                    algorithm,
                    ..Default::default()
                };
                let der = seal(&parts, &certs, &opts).unwrap();
                let again = match algorithm {
                    ContentAlgorithm::Aes256Cbc => EnvelopedContentInfo::from_der(&der)
                        .unwrap()
                        .to_der()
                        .unwrap(),
                    ContentAlgorithm::Aes256Gcm => AuthEnvelopedContentInfo::from_der(&der)
                        .unwrap()
                        .to_der()
                        .unwrap(),
                };
                assert_eq!(der, again, "body of {len} bytes, {algorithm:?}");
            }
        }
    }

    #[test]
    fn lengths_take_the_fewest_octets() {
        for (len, octets) in [
            (0usize, &[0x00u8][..]),
            (127, &[0x7f]),
            (128, &[0x81, 0x80]),
            (255, &[0x81, 0xff]),
            (256, &[0x82, 0x01, 0x00]),
            (65_535, &[0x82, 0xff, 0xff]),
            (65_536, &[0x83, 0x01, 0x00, 0x00]),
        ] {
            let mut out = Vec::new();
            push_header(&mut out, 0x04, len);
            assert_eq!(&out[1..], octets, "{len}");
            assert_eq!(tlv_len(len), out.len() + len);
        }
    }
}

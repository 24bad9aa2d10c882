//! Algorithm identifiers and the primitive operations behind them, all done with aws-lc-rs:
//! RSA key transport (OAEP, PKCS#1 v1.5) and AES-CBC / AES-GCM content encryption.

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::cipher::{
    DecryptionContext, EncryptingKey, EncryptionContext, PaddedBlockDecryptingKey,
    UnboundCipherKey, AES_128, AES_192, AES_256,
};
use aws_lc_rs::rsa::{
    OaepAlgorithm, OaepPrivateDecryptingKey, OaepPublicEncryptingKey, Pkcs1PrivateDecryptingKey,
    Pkcs1PublicEncryptingKey, PrivateDecryptingKey, PublicEncryptingKey, OAEP_SHA1_MGF1SHA1,
    OAEP_SHA256_MGF1SHA256, OAEP_SHA384_MGF1SHA384, OAEP_SHA512_MGF1SHA512,
};
use der::asn1::{AnyRef, ObjectIdentifier, OctetString};
use der::{Any, Encode, Sequence, Tag};
use pkcs1::{RsaOaepParamsOwned, RsaOaepParamsRef};
use spki::{AlgorithmIdentifierOwned, AlgorithmIdentifierRef};
use zeroize::Zeroizing;

use super::{DecryptError, KeyTransport, SmimeError};

const fn oid(s: &str) -> ObjectIdentifier {
    ObjectIdentifier::new_unwrap(s)
}

pub(crate) const ID_DATA: ObjectIdentifier = oid("1.2.840.113549.1.7.1");
pub(crate) const ID_SIGNED_DATA: ObjectIdentifier = oid("1.2.840.113549.1.7.2");
pub(crate) const ID_ENVELOPED_DATA: ObjectIdentifier = oid("1.2.840.113549.1.7.3");
pub(crate) const ID_AUTH_ENVELOPED_DATA: ObjectIdentifier = oid("1.2.840.113549.1.9.16.1.23");
pub(crate) const RSA_ENCRYPTION: ObjectIdentifier = oid("1.2.840.113549.1.1.1");
const RSAES_OAEP: ObjectIdentifier = oid("1.2.840.113549.1.1.7");
const MGF1: ObjectIdentifier = oid("1.2.840.113549.1.1.8");
const P_SPECIFIED: ObjectIdentifier = oid("1.2.840.113549.1.1.9");
const SHA1: ObjectIdentifier = oid("1.3.14.3.2.26");
const SHA256: ObjectIdentifier = oid("2.16.840.1.101.3.4.2.1");
const SHA384: ObjectIdentifier = oid("2.16.840.1.101.3.4.2.2");
const SHA512: ObjectIdentifier = oid("2.16.840.1.101.3.4.2.3");
const AES128_CBC: ObjectIdentifier = oid("2.16.840.1.101.3.4.1.2");
const AES192_CBC: ObjectIdentifier = oid("2.16.840.1.101.3.4.1.22");
pub(crate) const AES256_CBC: ObjectIdentifier = oid("2.16.840.1.101.3.4.1.42");
const AES128_GCM: ObjectIdentifier = oid("2.16.840.1.101.3.4.1.6");
const AES192_GCM: ObjectIdentifier = oid("2.16.840.1.101.3.4.1.26");
pub(crate) const AES256_GCM: ObjectIdentifier = oid("2.16.840.1.101.3.4.1.46");
const DES_EDE3_CBC: ObjectIdentifier = oid("1.2.840.113549.3.7");
const RC2_CBC: ObjectIdentifier = oid("1.2.840.113549.3.2");

/// The tag length we write and the only one aws-lc-rs checks.
pub(crate) const GCM_TAG_LEN: usize = 16;

/// RFC 5084 `GCMParameters`.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub(crate) struct GcmParameters {
    pub nonce: OctetString,
    #[asn1(default = "default_icv_len")]
    pub icv_len: u8,
}

fn default_icv_len() -> u8 {
    12
}

fn crypto(what: &str) -> SmimeError {
    SmimeError::Crypto(what.to_string())
}

fn corrupted(what: impl std::fmt::Display) -> DecryptError {
    DecryptError::Corrupted(what.to_string())
}

// ---- key transport -------------------------------------------------------------------------

/// The `keyEncryptionAlgorithm` we write for `kt`.
pub(crate) fn key_transport_identifier(
    kt: KeyTransport,
) -> Result<AlgorithmIdentifierOwned, SmimeError> {
    match kt {
        KeyTransport::RsaPkcs1 => Ok(AlgorithmIdentifierOwned {
            oid: RSA_ENCRYPTION,
            parameters: Some(Any::null()),
        }),
        KeyTransport::RsaOaep => {
            let sha256 = AlgorithmIdentifierRef {
                oid: SHA256,
                parameters: Some(AnyRef::NULL),
            };
            let empty = AnyRef::new(Tag::OctetString, &[]).map_err(|_| crypto("OAEP label"))?;
            let params = RsaOaepParamsRef {
                hash: sha256,
                mask_gen: spki::AlgorithmIdentifier {
                    oid: MGF1,
                    parameters: Some(sha256),
                },
                p_source: AlgorithmIdentifierRef {
                    oid: P_SPECIFIED,
                    parameters: Some(empty),
                },
            };
            Ok(AlgorithmIdentifierOwned {
                oid: RSAES_OAEP,
                parameters: Some(Any::encode_from(&params).map_err(|_| crypto("OAEP params"))?),
            })
        }
    }
}

/// Encrypts the content key for one recipient's public key.
pub(crate) fn wrap_key(
    public: &PublicEncryptingKey,
    kt: KeyTransport,
    cek: &[u8],
) -> Result<Vec<u8>, SmimeError> {
    let mut out = vec![0u8; public.key_size_bytes()];
    let len = match kt {
        KeyTransport::RsaOaep => OaepPublicEncryptingKey::new(public.clone()).and_then(|k| {
            k.encrypt(&OAEP_SHA256_MGF1SHA256, cek, &mut out, None)
                .map(|c| c.len())
        }),
        KeyTransport::RsaPkcs1 => Pkcs1PublicEncryptingKey::new(public.clone())
            .and_then(|k| k.encrypt(cek, &mut out).map(|c| c.len())),
    }
    .map_err(|_| crypto("RSA encryption of the content key"))?;
    out.truncate(len);
    Ok(out)
}

/// A recipient info's key-transport algorithm, as far as we can do it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Unwrap {
    Pkcs1,
    Oaep(&'static OaepAlgorithm),
}

impl Unwrap {
    pub fn from_identifier(ai: &AlgorithmIdentifierOwned) -> Result<Unwrap, DecryptError> {
        if ai.oid == RSA_ENCRYPTION {
            return Ok(Unwrap::Pkcs1);
        }
        if ai.oid != RSAES_OAEP {
            return Err(DecryptError::Unsupported(format!(
                "key transport algorithm {} (only RSA PKCS#1 v1.5 and RSA-OAEP)",
                ai.oid
            )));
        }
        let params = match &ai.parameters {
            None => RsaOaepParamsOwned::default(),
            Some(any) => any
                .decode_as::<RsaOaepParamsOwned>()
                .map_err(|e| corrupted(format!("RSA-OAEP parameters: {e}")))?,
        };
        let label_empty = params
            .p_source
            .parameters
            .as_ref()
            .is_none_or(|p| p.value().is_empty());
        let mgf_hash = params.mask_gen.parameters.as_ref().map(|h| h.oid);
        if params.mask_gen.oid != MGF1
            || params.p_source.oid != P_SPECIFIED
            || !label_empty
            || mgf_hash != Some(params.hash.oid)
        {
            return Err(DecryptError::Unsupported(
                "RSA-OAEP with a label or a mask generation other than MGF1 with the same hash"
                    .into(),
            ));
        }
        let alg = match params.hash.oid {
            SHA1 => &OAEP_SHA1_MGF1SHA1,
            SHA256 => &OAEP_SHA256_MGF1SHA256,
            SHA384 => &OAEP_SHA384_MGF1SHA384,
            SHA512 => &OAEP_SHA512_MGF1SHA512,
            other => {
                return Err(DecryptError::Unsupported(format!(
                    "RSA-OAEP with hash {other}"
                )))
            }
        };
        Ok(Unwrap::Oaep(alg))
    }

    /// Decrypts an encrypted content key with the private key (aws-lc-rs, constant time).
    /// `None` on any failure, without saying why (RFC 3218).
    pub fn unwrap(
        self,
        key: &PrivateDecryptingKey,
        encrypted: &[u8],
    ) -> Option<Zeroizing<Vec<u8>>> {
        if encrypted.len() != key.key_size_bytes() {
            return None;
        }
        let mut out = Zeroizing::new(vec![0u8; key.key_size_bytes()]);
        let len = match self {
            Unwrap::Pkcs1 => Pkcs1PrivateDecryptingKey::new(key.clone())
                .and_then(|k| k.decrypt(encrypted, &mut out).map(|p| p.len())),
            Unwrap::Oaep(alg) => OaepPrivateDecryptingKey::new(key.clone())
                .and_then(|k| k.decrypt(alg, encrypted, &mut out, None).map(|p| p.len())),
        }
        .ok()?;
        out.truncate(len);
        Some(out)
    }
}

// ---- content encryption --------------------------------------------------------------------

/// A content-encryption algorithm with its parameters, as read from `EncryptedContentInfo`.
#[derive(Clone, Debug)]
pub(crate) enum Content {
    Cbc { key_len: usize, iv: [u8; 16] },
    Gcm { key_len: usize, nonce: [u8; 12] },
}

impl Content {
    /// Reads the algorithm; GCM is accepted only inside `AuthEnvelopedData`, CBC only outside.
    pub fn from_identifier(
        ai: &AlgorithmIdentifierOwned,
        authenticated: bool,
    ) -> Result<Content, DecryptError> {
        let key_len = match ai.oid {
            AES128_CBC | AES128_GCM => 16,
            AES192_CBC | AES192_GCM => 24,
            AES256_CBC | AES256_GCM => 32,
            DES_EDE3_CBC => {
                return Err(DecryptError::Unsupported(
                    "content encrypted with 3DES (des-ede3-cbc); only AES is implemented".into(),
                ))
            }
            RC2_CBC => {
                return Err(DecryptError::Unsupported(
                    "content encrypted with RC2; only AES is implemented".into(),
                ))
            }
            other => {
                return Err(DecryptError::Unsupported(format!(
                    "content encryption algorithm {other}"
                )))
            }
        };
        let params = ai
            .parameters
            .as_ref()
            .ok_or_else(|| corrupted("content encryption parameters missing"))?;
        let is_gcm = matches!(ai.oid, AES128_GCM | AES192_GCM | AES256_GCM);
        if is_gcm != authenticated {
            return Err(DecryptError::Unsupported(format!(
                "{} inside {}",
                ai.oid,
                if authenticated {
                    "AuthEnvelopedData"
                } else {
                    "EnvelopedData"
                }
            )));
        }
        if is_gcm {
            let p = params
                .decode_as::<GcmParameters>()
                .map_err(|e| corrupted(format!("GCM parameters: {e}")))?;
            let nonce: [u8; 12] = p.nonce.as_bytes().try_into().map_err(|_| {
                DecryptError::Unsupported(format!(
                    "GCM nonce of {} bytes (only 12)",
                    p.nonce.as_bytes().len()
                ))
            })?;
            if usize::from(p.icv_len) != GCM_TAG_LEN {
                return Err(DecryptError::Unsupported(format!(
                    "GCM tag of {} bytes (only 16)",
                    p.icv_len
                )));
            }
            Ok(Content::Gcm { key_len, nonce })
        } else {
            let iv = params
                .decode_as::<OctetString>()
                .map_err(|e| corrupted(format!("CBC IV: {e}")))?;
            let iv: [u8; 16] = iv
                .as_bytes()
                .try_into()
                .map_err(|_| corrupted("CBC IV is not 16 bytes"))?;
            Ok(Content::Cbc { key_len, iv })
        }
    }

    pub fn key_len(&self) -> usize {
        match self {
            Content::Cbc { key_len, .. } | Content::Gcm { key_len, .. } => *key_len,
        }
    }

    /// Decrypts (and for GCM authenticates) `ciphertext`; `tag` is the GCM MAC, `aad` the DER of
    /// the authenticated attributes (RFC 5083). `None` on any failure: bad padding, bad tag.
    pub fn decrypt(
        &self,
        cek: &[u8],
        ciphertext: &[u8],
        tag: &[u8],
        aad: &[u8],
    ) -> Option<Vec<u8>> {
        match self {
            Content::Cbc { key_len, iv } => {
                let alg = match key_len {
                    16 => &AES_128,
                    24 => &AES_192,
                    _ => &AES_256,
                };
                let key = UnboundCipherKey::new(alg, cek).ok()?;
                let key = PaddedBlockDecryptingKey::cbc_pkcs7(key).ok()?;
                let mut buf = ciphertext.to_vec();
                let len = key
                    .decrypt(&mut buf, DecryptionContext::Iv128((*iv).into()))
                    .ok()?
                    .len();
                buf.truncate(len);
                Some(buf)
            }
            Content::Gcm { key_len, nonce } => {
                let alg = match key_len {
                    16 => &aead::AES_128_GCM,
                    24 => &aead::AES_192_GCM,
                    _ => &aead::AES_256_GCM,
                };
                let key = LessSafeKey::new(UnboundKey::new(alg, cek).ok()?);
                let mut buf = Vec::with_capacity(ciphertext.len() + tag.len());
                buf.extend_from_slice(ciphertext);
                buf.extend_from_slice(tag);
                let nonce = Nonce::assume_unique_for_key(*nonce);
                let len = key
                    .open_in_place(nonce, Aad::from(aad), &mut buf)
                    .ok()?
                    .len();
                buf.truncate(len);
                Some(buf)
            }
        }
    }
}

/// The AES-256-CBC algorithm identifier with its IV.
pub(crate) fn cbc_identifier(iv: &[u8; 16]) -> Result<AlgorithmIdentifierOwned, SmimeError> {
    let iv = OctetString::new(iv.to_vec()).map_err(|_| crypto("IV"))?;
    Ok(AlgorithmIdentifierOwned {
        oid: AES256_CBC,
        parameters: Some(Any::encode_from(&iv).map_err(|_| crypto("IV"))?),
    })
}

/// AES-256-CBC of `buf[at..]` in place, with PKCS#7 padding appended to `buf` first. `iv` must be
/// random and used once.
pub(crate) fn encrypt_cbc_in_place(
    cek: &[u8],
    iv: &[u8; 16],
    buf: &mut Vec<u8>,
    at: usize,
) -> Result<(), SmimeError> {
    let key = UnboundCipherKey::new(&AES_256, cek)
        .and_then(EncryptingKey::cbc)
        .map_err(|_| crypto("AES key"))?;
    let pad = 16 - (buf.len() - at) % 16;
    buf.resize(buf.len() + pad, pad as u8);
    key.less_safe_encrypt(&mut buf[at..], EncryptionContext::Iv128((*iv).into()))
        .map_err(|_| crypto("AES-CBC"))?;
    Ok(())
}

/// The AES-256-GCM algorithm identifier with its nonce and a 16-byte tag.
pub(crate) fn gcm_identifier(nonce: &[u8; 12]) -> Result<AlgorithmIdentifierOwned, SmimeError> {
    let params = GcmParameters {
        nonce: OctetString::new(nonce.to_vec()).map_err(|_| crypto("nonce"))?,
        icv_len: GCM_TAG_LEN as u8,
    };
    Ok(AlgorithmIdentifierOwned {
        oid: AES256_GCM,
        parameters: Some(Any::encode_from(&params).map_err(|_| crypto("GCM params"))?),
    })
}

/// AES-256-GCM of `buf` in place, no additional data; returns the 16-byte tag. `nonce` must be
/// random and used once.
pub(crate) fn encrypt_gcm_in_place(
    cek: &[u8],
    nonce: [u8; 12],
    buf: &mut [u8],
) -> Result<[u8; GCM_TAG_LEN], SmimeError> {
    let key = UnboundKey::new(&aead::AES_256_GCM, cek).map_err(|_| crypto("AES key"))?;
    let tag = LessSafeKey::new(key)
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), buf)
        .map_err(|_| crypto("AES-GCM"))?;
    tag.as_ref().try_into().map_err(|_| crypto("AES-GCM tag"))
}

/// Encodes a value to DER.
pub(crate) fn encode<T: Encode>(value: &T) -> Result<Vec<u8>, SmimeError> {
    value
        .to_der()
        .map_err(|e| SmimeError::Crypto(format!("DER encoding: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oaep_identifier_round_trips_as_sha256() {
        let ai = key_transport_identifier(KeyTransport::RsaOaep).unwrap();
        assert_eq!(ai.oid, RSAES_OAEP);
        match Unwrap::from_identifier(&ai).unwrap() {
            Unwrap::Oaep(alg) => assert_eq!(alg.id(), OAEP_SHA256_MGF1SHA256.id()),
            Unwrap::Pkcs1 => panic!("expected OAEP"),
        }
        // Absent parameters mean the RFC 8017 defaults: SHA-1.
        let bare = AlgorithmIdentifierOwned {
            oid: RSAES_OAEP,
            parameters: None,
        };
        assert!(matches!(
            Unwrap::from_identifier(&bare).unwrap(),
            Unwrap::Oaep(a) if a.id() == OAEP_SHA1_MGF1SHA1.id()
        ));
        let pkcs1 = key_transport_identifier(KeyTransport::RsaPkcs1).unwrap();
        assert!(matches!(
            Unwrap::from_identifier(&pkcs1).unwrap(),
            Unwrap::Pkcs1
        ));
    }

    #[test]
    fn content_round_trips_and_detects_changes() {
        let cek = [7u8; 32];
        let iv = [3u8; 16];
        for len in [0, 11, 15, 16, 17, 32] {
            let plain = vec![b'p'; len];
            let mut buf = b"header".to_vec();
            buf.extend_from_slice(&plain);
            encrypt_cbc_in_place(&cek, &iv, &mut buf, 6).unwrap();
            assert_eq!(&buf[..6], b"header");
            assert_eq!(buf.len() - 6, (len / 16 + 1) * 16, "always padded");
            let ai = cbc_identifier(&iv).unwrap();
            let c = Content::from_identifier(&ai, false).unwrap();
            assert_eq!(c.decrypt(&cek, &buf[6..], &[], &[]).unwrap(), plain);
            assert!(Content::from_identifier(&ai, true).is_err());
        }

        let nonce = [9u8; 12];
        let mut ct = b"hello world".to_vec();
        let tag = encrypt_gcm_in_place(&cek, nonce, &mut ct).unwrap();
        let ai = gcm_identifier(&nonce).unwrap();
        let c = Content::from_identifier(&ai, true).unwrap();
        assert_eq!(c.key_len(), 32);
        assert_eq!(c.decrypt(&cek, &ct, &tag, &[]).unwrap(), b"hello world");
        ct[0] ^= 1;
        assert!(c.decrypt(&cek, &ct, &tag, &[]).is_none());
        assert!(c.decrypt(&[8u8; 32], &ct, &tag, &[]).is_none());
    }

    #[test]
    fn legacy_ciphers_are_named() {
        let ai = AlgorithmIdentifierOwned {
            oid: DES_EDE3_CBC,
            parameters: None,
        };
        match Content::from_identifier(&ai, false) {
            Err(DecryptError::Unsupported(m)) => assert!(m.contains("3DES")),
            other => panic!("{other:?}"),
        }
    }
}

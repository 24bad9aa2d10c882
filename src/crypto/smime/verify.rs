//! Verifying S/MIME signatures (CMS `SignedData`, RFC 5652 §5.6): the message-digest attribute
//! against the canonical content, the signature with the signer certificate's key (RSA PKCS#1
//! v1.5 or PSS, ECDSA P-256/P-384), then the signer's chain to the given trust anchors at the
//! current time, for email protection.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest;
use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use cms::cert::CertificateChoices;
use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, SignerIdentifier, SignerInfo};
use der::asn1::{ObjectIdentifier, OctetString};
use der::{Decode, Encode, EncodingRules, Reader};
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use x509_cert::ext::pkix::{KeyUsage, SubjectKeyIdentifier};
use x509_cert::time::Time;
use x509_cert::Certificate;

use super::alg::{ID_SIGNED_DATA, RSA_ENCRYPTION};
use super::signed_mime::{extract_signed, SignedParts};
use super::signer::{
    ATTR_CONTENT_TYPE, ATTR_MESSAGE_DIGEST, ATTR_SIGNING_TIME, RSASSA_PSS, SHA256, SHA256_WITH_RSA,
    SHA384, SHA384_WITH_RSA, SHA512, SHA512_WITH_RSA,
};
use super::{DecryptError, RecipientCert};

const SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
/// id-kp-emailProtection (1.3.6.1.5.5.7.3.4), DER content octets.
const EMAIL_PROTECTION: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x04];

/// The CA certificates a signer must chain to, and a label for messages ("ca.crt").
#[derive(Clone, Copy, Debug)]
pub struct SignerAnchors<'a> {
    pub roots: &'a [TrustAnchor<'a>],
    pub label: &'a str,
}

/// Whether the signer's certificate chains to a trust anchor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignerTrust {
    /// It chains to an anchor, is valid now and allows email protection.
    Trusted { anchors: String },
    /// No trust anchors were given: the signature is intact, but nobody vouches for the signer.
    NoAnchors,
    /// It does not chain to the anchors, or is expired, or not for email.
    Untrusted { reason: String },
}

/// One verified signature: who signed, when they say they did, and whether they are trusted.
#[derive(Clone, Debug)]
pub struct Signer {
    pub subject: String,
    pub emails: Vec<String>,
    pub signing_time: Option<SystemTime>,
    pub trust: SignerTrust,
}

/// A message whose signatures all verified: the signers and the message to show (a detached
/// signature's message as it is; an opaque one's with its content unwrapped).
#[derive(Debug)]
pub struct Verified {
    pub signers: Vec<Signer>,
    pub message: Vec<u8>,
}

impl Verified {
    /// True if every signer is trusted.
    pub fn trusted(&self) -> bool {
        self.signers
            .iter()
            .all(|s| matches!(s.trust, SignerTrust::Trusted { .. }))
    }
}

fn corrupted(what: impl std::fmt::Display) -> DecryptError {
    DecryptError::Corrupted(what.to_string())
}

fn bad(what: impl Into<String>) -> DecryptError {
    DecryptError::BadSignature(what.into())
}

/// Verifies every signature of a signed message (multipart/signed, signed-data, or a bare CMS
/// structure). Any signature that does not verify fails the whole message with `BadSignature`;
/// the trust in each signer is reported, not enforced (see [`Verified::trusted`]).
pub fn verify_message(
    message: &[u8],
    anchors: Option<SignerAnchors<'_>>,
    now: SystemTime,
) -> Result<Verified, DecryptError> {
    match extract_signed(message)? {
        SignedParts::Detached { content, cms } => {
            let (signers, _) = verify_cms(&cms, Some(&content), anchors, now)?;
            Ok(Verified {
                signers,
                message: message.to_vec(),
            })
        }
        SignedParts::Opaque { parts, cms } => {
            let (signers, content) = verify_cms(&cms, None, anchors, now)?;
            let message = match parts {
                Some(parts) => parts.merge(&content),
                None => content,
            };
            Ok(Verified { signers, message })
        }
    }
}

/// Verifies a `ContentInfo` with `SignedData` over `detached` (or its own content); returns the
/// signers and the content.
fn verify_cms(
    der: &[u8],
    detached: Option<&[u8]>,
    anchors: Option<SignerAnchors<'_>>,
    now: SystemTime,
) -> Result<(Vec<Signer>, Vec<u8>), DecryptError> {
    let ci = ContentInfo::from_ber(der).map_err(|e| corrupted(format!("CMS structure: {e}")))?;
    if ci.content_type != ID_SIGNED_DATA {
        return Err(DecryptError::NotSigned);
    }
    let sd = ci
        .content
        .decode_as_encoding::<SignedData>(EncodingRules::Ber)
        .map_err(|e| corrupted(format!("SignedData: {e}")))?;
    let contents = match (detached, &sd.encap_content_info.econtent) {
        (Some(c), _) => vec![c.to_vec()],
        (None, Some(any)) => octets(any),
        (None, None) => {
            return Err(corrupted(
                "the signature is detached but no signed content came with it",
            ))
        }
    };
    let certs: Vec<&Certificate> = sd
        .certificates
        .iter()
        .flat_map(|set| set.0.iter())
        .filter_map(|c| match c {
            CertificateChoices::Certificate(c) => Some(c),
            _ => None,
        })
        .collect();
    if sd.signer_infos.0.is_empty() {
        return Err(bad(
            "the message carries a signature structure without any signer",
        ));
    }
    let mut signers = Vec::new();
    let mut content = None;
    for si in sd.signer_infos.0.iter() {
        let cert = find_signer(si, &certs).ok_or_else(|| {
            bad("the signer's certificate is not in the message (it cannot be checked)")
        })?;
        let (signing_time, which) =
            check_signature(si, cert, &contents, sd.encap_content_info.econtent_type)?;
        if content.is_some_and(|c| c != which) {
            return Err(bad("the signers signed different contents"));
        }
        content = Some(which);
        let info = RecipientCert::from_certificate(cert).map_err(corrupted)?;
        let trust = match anchors {
            None => SignerTrust::NoAnchors,
            Some(a) => chain_trust(cert, &certs, a, now),
        };
        signers.push(Signer {
            subject: info.subject().to_string(),
            emails: info.emails().to_vec(),
            signing_time,
            trust,
        });
    }
    let content = contents
        .into_iter()
        .nth(content.unwrap_or(0))
        .unwrap_or_default();
    Ok((signers, content))
}

/// The possible bytes of an encapsulated content. The decoder hands over a streaming signer's
/// constructed OCTET STRING (BER, RFC 5652 §5.2) as its concatenated segments without saying so,
/// so both readings are offered: the value itself and, when it parses as segments, their
/// contents. Only the reading whose digest the signer signed is ever used.
fn octets(any: &der::Any) -> Vec<Vec<u8>> {
    let mut candidates = vec![any.value().to_vec()];
    let mut joined = Vec::new();
    let mut rest = any.value();
    while !rest.is_empty() {
        let Ok(mut reader) = der::SliceReader::new_with_encoding_rules(rest, EncodingRules::Ber)
        else {
            return candidates;
        };
        let Ok(piece) = OctetString::decode(&mut reader) else {
            return candidates;
        };
        joined.extend_from_slice(piece.as_bytes());
        let Ok(used) = usize::try_from(reader.position()) else {
            return candidates;
        };
        rest = &rest[used..];
    }
    if !joined.is_empty() {
        candidates.push(joined);
    }
    candidates
}

fn find_signer<'c>(si: &SignerInfo, certs: &[&'c Certificate]) -> Option<&'c Certificate> {
    certs.iter().copied().find(|c| {
        let tbs = c.tbs_certificate();
        match &si.sid {
            SignerIdentifier::IssuerAndSerialNumber(isn) => {
                tbs.issuer() == &isn.issuer && tbs.serial_number() == &isn.serial_number
            }
            SignerIdentifier::SubjectKeyIdentifier(ski) => tbs
                .get_extension::<SubjectKeyIdentifier>()
                .ok()
                .flatten()
                .is_some_and(|(_, own)| own.0 == ski.0),
        }
    })
}

/// Checks the message digest and the signature of one signer over one of the `contents`
/// readings; returns its signing time and which reading it signed.
fn check_signature(
    si: &SignerInfo,
    cert: &Certificate,
    contents: &[Vec<u8>],
    content_type: ObjectIdentifier,
) -> Result<(Option<SystemTime>, usize), DecryptError> {
    let (digest_alg, name) = match si.digest_alg.oid {
        SHA256 => (&digest::SHA256, "sha-256"),
        SHA384 => (&digest::SHA384, "sha-384"),
        SHA512 => (&digest::SHA512, "sha-512"),
        SHA1 => {
            return Err(DecryptError::Unsupported(
                "SHA-1 signatures are refused (RFC 8551 §2.1)".into(),
            ))
        }
        other => {
            return Err(DecryptError::Unsupported(format!(
                "signature digest algorithm {other}"
            )))
        }
    };
    let digests: Vec<digest::Digest> = contents
        .iter()
        .map(|c| digest::digest(digest_alg, c))
        .collect();
    let mut signing_time = None;
    let mut which = 0;
    let signed_bytes = match &si.signed_attrs {
        None => Vec::new(),
        Some(attrs) => {
            let mut digest_ok = None;
            for attr in attrs.iter() {
                let Some(value) = attr.values.iter().next() else {
                    continue;
                };
                match attr.oid {
                    ATTR_MESSAGE_DIGEST => {
                        let d = value
                            .decode_as::<OctetString>()
                            .map_err(|e| corrupted(format!("message-digest attribute: {e}")))?;
                        let found = digests.iter().position(|g| d.as_bytes() == g.as_ref());
                        which = found.unwrap_or(0);
                        digest_ok = Some(found.is_some());
                    }
                    ATTR_CONTENT_TYPE => {
                        let t = value
                            .decode_as::<ObjectIdentifier>()
                            .map_err(|e| corrupted(format!("content-type attribute: {e}")))?;
                        if t != content_type {
                            return Err(bad(
                                "the signed content-type attribute does not match the content",
                            ));
                        }
                    }
                    ATTR_SIGNING_TIME => {
                        signing_time = value.decode_as::<Time>().ok().map(|t| t.to_system_time());
                    }
                    _ => {}
                }
            }
            match digest_ok {
                None => return Err(bad("the signed attributes have no message-digest")),
                Some(false) => {
                    return Err(bad(format!(
                        "the {name} digest of the signed content does not match the signature: \
                         the message was altered after it was signed"
                    )))
                }
                Some(true) => {}
            }
            // RFC 5652 §5.4: the signature covers the attributes' DER with a SET OF tag.
            attrs
                .to_der()
                .map_err(|e| corrupted(format!("signed attributes: {e}")))?
        }
    };
    let spki = &cert.tbs_certificate().subject_public_key_info();
    let key = spki.subject_public_key.raw_bytes();
    let sig_oid = si.signature_algorithm.oid;
    let alg: &'static dyn VerificationAlgorithm = match (spki.algorithm.oid, sig_oid, name) {
        (RSA_ENCRYPTION, RSA_ENCRYPTION | SHA256_WITH_RSA, "sha-256") => {
            &signature::RSA_PKCS1_2048_8192_SHA256
        }
        (RSA_ENCRYPTION, RSA_ENCRYPTION | SHA384_WITH_RSA, "sha-384") => {
            &signature::RSA_PKCS1_2048_8192_SHA384
        }
        (RSA_ENCRYPTION, RSA_ENCRYPTION | SHA512_WITH_RSA, "sha-512") => {
            &signature::RSA_PKCS1_2048_8192_SHA512
        }
        (RSA_ENCRYPTION, RSASSA_PSS, "sha-256") => &signature::RSA_PSS_2048_8192_SHA256,
        (RSA_ENCRYPTION, RSASSA_PSS, "sha-384") => &signature::RSA_PSS_2048_8192_SHA384,
        (RSA_ENCRYPTION, RSASSA_PSS, "sha-512") => &signature::RSA_PSS_2048_8192_SHA512,
        (EC_PUBLIC_KEY, ECDSA_SHA256 | ECDSA_SHA384, _) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
            match (curve, name) {
                (Some(P256), "sha-256") => &signature::ECDSA_P256_SHA256_ASN1,
                (Some(P256), "sha-384") => &signature::ECDSA_P256_SHA384_ASN1,
                (Some(P384), "sha-384") => &signature::ECDSA_P384_SHA384_ASN1,
                (Some(P384), "sha-256") => &signature::ECDSA_P384_SHA256_ASN1,
                _ => {
                    return Err(DecryptError::Unsupported(
                        "ECDSA signature on a curve other than P-256 or P-384".into(),
                    ))
                }
            }
        }
        (key_alg, sig, _) => {
            return Err(DecryptError::Unsupported(format!(
                "signature algorithm {sig} with a {key_alg} key and {name}"
            )))
        }
    };
    if spki.algorithm.oid == RSA_ENCRYPTION {
        let bits = pkcs1::RsaPublicKeyRef::from_der(key)
            .map(|k| {
                let n = k.modulus.as_bytes();
                let first = n.iter().position(|&b| b != 0).unwrap_or(n.len());
                (n.len() - first) * 8
            })
            .unwrap_or(0);
        if bits < crate::crypto::keys::MIN_RSA_BITS - 7 {
            return Err(DecryptError::Unsupported(format!(
                "the signer's RSA key has {bits} bits; at least 2048 are required"
            )));
        }
    }
    let public = UnparsedPublicKey::new(alg, key);
    let verifies = |data: &[u8]| public.verify(data, si.signature.as_bytes()).is_ok();
    let verified = match &si.signed_attrs {
        Some(_) => verifies(&signed_bytes),
        None => match contents.iter().position(|c| verifies(c)) {
            Some(i) => {
                which = i;
                true
            }
            None => false,
        },
    };
    if !verified {
        return Err(bad(
            "the signature does not verify with the signer's certificate: \
             the message or its signature was altered",
        ));
    }
    Ok((signing_time, which))
}

/// Whether `cert` chains to `anchors` now (other certificates in the message may be
/// intermediates), allows email protection if it restricts its use, and may sign.
fn chain_trust(
    cert: &Certificate,
    certs: &[&Certificate],
    anchors: SignerAnchors<'_>,
    now: SystemTime,
) -> SignerTrust {
    let untrusted = |reason: String| SignerTrust::Untrusted { reason };
    let Ok(ee_der) = cert.to_der() else {
        return untrusted("the certificate cannot be encoded".into());
    };
    let ee_der = CertificateDer::from(ee_der);
    let intermediates: Vec<CertificateDer<'static>> = certs
        .iter()
        .filter(|c| *c != &cert)
        .filter_map(|c| c.to_der().ok().map(CertificateDer::from))
        .collect();
    let ee = match webpki::EndEntityCert::try_from(&ee_der) {
        Ok(ee) => ee,
        Err(e) => return untrusted(format!("the certificate cannot be checked: {e:?}")),
    };
    let time = UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).unwrap_or_default());
    let result = ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        anchors.roots,
        &intermediates,
        time,
        webpki::KeyUsage::required_if_present(EMAIL_PROTECTION),
        None,
        None,
    );
    if let Err(e) = result {
        let reason = match e {
            webpki::Error::UnknownIssuer => format!("it does not chain to {}", anchors.label),
            webpki::Error::CertExpired { .. } => "the certificate has expired".into(),
            webpki::Error::CertNotValidYet { .. } => "the certificate is not valid yet".into(),
            #[allow(deprecated)]
            webpki::Error::RequiredEkuNotFound | webpki::Error::RequiredEkuNotFoundContext(_) => {
                "the certificate is not for email protection (extendedKeyUsage)".into()
            }
            other => format!("{other:?} (checked against {})", anchors.label),
        };
        return untrusted(reason);
    }
    let usage = cert.tbs_certificate().get_extension::<KeyUsage>();
    if let Ok(Some((_, ku))) = usage {
        if !ku.digital_signature() && !ku.non_repudiation() {
            return untrusted("keyUsage allows neither digitalSignature nor nonRepudiation".into());
        }
    }
    SignerTrust::Trusted {
        anchors: anchors.label.to_string(),
    }
}

//! Signing keys for S/MIME signatures and the CMS `SignedData` they make: per-sender or
//! per-domain RSA keys with their certificates, loaded and checked once from a directory, and a
//! detached signature (SHA-256, RSASSA-PKCS1-v1_5) with the signed attributes content-type,
//! signing-time and message-digest (RFC 5652 §5, RFC 8551 §2.5).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::KeyPair;
use aws_lc_rs::signature::KeyPair as _;
use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use der::asn1::{ObjectIdentifier, OctetString, SetOfVec, UtcTime};
use der::{Any, Decode, DecodePem, Encode};
use spki::AlgorithmIdentifierOwned;
use x509_cert::attr::Attribute;
use x509_cert::ext::pkix::KeyUsage;
use x509_cert::time::Time;
use x509_cert::Certificate;

use super::alg::{ID_DATA, ID_SIGNED_DATA, RSA_ENCRYPTION};
use super::{RecipientCert, SmimeError};
use crate::crypto::keys::{parse_key_file, rsa_pkcs8_bits, rsa_refusal, MIN_RSA_BITS};

pub(crate) const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
pub(crate) const SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
pub(crate) const SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");
pub(crate) const SHA256_WITH_RSA: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
pub(crate) const SHA384_WITH_RSA: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
pub(crate) const SHA512_WITH_RSA: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");
const MGF1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.8");
pub(crate) const RSASSA_PSS: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
pub(crate) const ATTR_CONTENT_TYPE: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
pub(crate) const ATTR_MESSAGE_DIGEST: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
pub(crate) const ATTR_SIGNING_TIME: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.5");

/// The RSA signature scheme of a signature.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SignatureScheme {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (`rsaEncryption`): what every S/MIME client verifies.
    #[default]
    RsaPkcs1,
    /// RSASSA-PSS with SHA-256, MGF1-SHA-256 and a 32-byte salt (RFC 4056), parameters written
    /// out.
    RsaPss,
}

/// One signing identity: an RSA key (2048 bits or more) and the certificate naming it, with any
/// chain certificates that followed it in the certificate file.
pub struct SigningKey {
    key: KeyPair,
    cert: Certificate,
    chain: Vec<Certificate>,
    info: RecipientCert,
    cert_path: PathBuf,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("certificate", &self.cert_path)
            .field("subject", &self.info.subject())
            .finish()
    }
}

impl SigningKey {
    /// Loads `key_path` (PEM or DER, PKCS#8 or PKCS#1, readable by its owner only) and
    /// `cert_path` (PEM: the signer's certificate first, then any chain certificates). The
    /// problem names the file it is about.
    pub fn load(cert_path: &Path, key_path: &Path, now: SystemTime) -> Result<Self, SmimeError> {
        let cert_err = |problem: String| SmimeError::Certificate {
            path: cert_path.to_path_buf(),
            problem,
        };
        let key_err = |problem: String| SmimeError::Certificate {
            path: key_path.to_path_buf(),
            problem,
        };
        let meta = std::fs::metadata(key_path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => key_err(format!(
                "key file not found (the certificate {} needs it)",
                cert_path.display()
            )),
            _ => key_err(format!("cannot read: {e}")),
        })?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(key_err(format!(
                "signing key is accessible by group or others (mode {mode:o}): chmod 600 {}",
                key_path.display()
            )));
        }
        let bytes = zeroize::Zeroizing::new(
            std::fs::read(key_path).map_err(|e| key_err(format!("cannot read: {e}")))?,
        );
        let (pkcs8, _) = parse_key_file(&bytes).map_err(key_err)?;
        let bits = rsa_pkcs8_bits(&pkcs8);
        if let Some(b) = bits.filter(|b| *b < MIN_RSA_BITS) {
            return Err(key_err(format!(
                "{b}-bit RSA key; at least {MIN_RSA_BITS} bits are required for signing"
            )));
        }
        let key = KeyPair::from_pkcs8(&pkcs8).map_err(|e| key_err(rsa_refusal(bits, &e)))?;

        let pem = std::fs::read(cert_path).map_err(|e| cert_err(format!("cannot read: {e}")))?;
        let mut certs = read_certificates(&pem).map_err(cert_err)?.into_iter();
        let cert = certs
            .next()
            .ok_or_else(|| cert_err("no certificate found".into()))?;
        let chain: Vec<Certificate> = certs.collect();
        let info = RecipientCert::from_certificate(&cert).map_err(cert_err)?;
        let public = key
            .public_key()
            .as_der()
            .map_err(|_| key_err("cannot encode the public key".into()))?;
        if info.spki_der() != public.as_ref() {
            return Err(cert_err(format!(
                "the certificate ({}) does not belong to the key {}",
                info.subject(),
                key_path.display()
            )));
        }
        let usage = cert
            .tbs_certificate()
            .get_extension::<KeyUsage>()
            .map_err(|e| cert_err(format!("bad keyUsage: {e}")))?;
        if let Some((_, ku)) = usage {
            if !ku.digital_signature() && !ku.non_repudiation() {
                return Err(cert_err(
                    "keyUsage allows neither digitalSignature nor nonRepudiation".into(),
                ));
            }
        }
        if let Some(problem) = info.signing_problem(now) {
            return Err(cert_err(problem));
        }
        Ok(SigningKey {
            key,
            cert,
            chain,
            info,
            cert_path: cert_path.to_path_buf(),
        })
    }

    /// The signer certificate's subject (RFC 4514).
    pub fn subject(&self) -> &str {
        self.info.subject()
    }

    /// The signer certificate's email addresses.
    pub fn emails(&self) -> &[String] {
        self.info.emails()
    }

    /// Why the key cannot sign at `now` (its certificate expired or is not valid yet), or None.
    pub fn problem_at(&self, now: SystemTime) -> Option<String> {
        self.info.signing_problem(now)
    }

    /// A DER `ContentInfo` with a detached `SignedData` over `content` (already canonical).
    pub fn sign_detached(
        &self,
        content: &[u8],
        scheme: SignatureScheme,
        now: SystemTime,
    ) -> Result<Vec<u8>, SmimeError> {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, content);
        let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let time = UtcTime::from_unix_duration(std::time::Duration::from_secs(secs.as_secs()))
            .map_err(der_err)?;
        let attrs = vec![
            attribute(ATTR_CONTENT_TYPE, &ID_DATA)?,
            attribute(ATTR_SIGNING_TIME, &Time::UtcTime(time))?,
            attribute(
                ATTR_MESSAGE_DIGEST,
                &OctetString::new(digest.as_ref()).map_err(der_err)?,
            )?,
        ];
        let signed_attrs = SetOfVec::try_from(attrs).map_err(der_err)?;
        // RFC 5652 §5.4: the signature covers the DER of the attributes with a SET OF tag.
        let to_sign = signed_attrs.to_der().map_err(der_err)?;
        let mut signature = vec![0u8; self.key.public_modulus_len()];
        let (padding, signature_algorithm): (&'static dyn aws_lc_rs::signature::RsaEncoding, _) =
            match scheme {
                SignatureScheme::RsaPkcs1 => (
                    &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                    AlgorithmIdentifierOwned {
                        oid: RSA_ENCRYPTION,
                        parameters: Some(Any::null()),
                    },
                ),
                SignatureScheme::RsaPss => {
                    (&aws_lc_rs::signature::RSA_PSS_SHA256, pss_identifier()?)
                }
            };
        self.key
            .sign(
                padding,
                &aws_lc_rs::rand::SystemRandom::new(),
                &to_sign,
                &mut signature,
            )
            .map_err(|_| SmimeError::Crypto("RSA signature".into()))?;
        let tbs = self.cert.tbs_certificate();
        let signer = SignerInfo {
            version: CmsVersion::V1,
            sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
                issuer: tbs.issuer().clone(),
                serial_number: tbs.serial_number().clone(),
            }),
            digest_alg: sha256_identifier(),
            signed_attrs: Some(signed_attrs),
            signature_algorithm,
            signature: OctetString::new(signature).map_err(der_err)?,
            unsigned_attrs: None,
        };
        let certs: Vec<CertificateChoices> = std::iter::once(&self.cert)
            .chain(&self.chain)
            .map(|c| CertificateChoices::Certificate(c.clone()))
            .collect();
        let signed = SignedData {
            version: CmsVersion::V1,
            digest_algorithms: SetOfVec::try_from(vec![sha256_identifier()]).map_err(der_err)?,
            encap_content_info: EncapsulatedContentInfo {
                econtent_type: ID_DATA,
                econtent: None,
            },
            certificates: Some(CertificateSet::try_from(certs).map_err(der_err)?),
            crls: None,
            signer_infos: SignerInfos::try_from(vec![signer]).map_err(der_err)?,
        };
        ContentInfo {
            content_type: ID_SIGNED_DATA,
            content: Any::encode_from(&signed).map_err(der_err)?,
        }
        .to_der()
        .map_err(der_err)
    }
}

fn der_err(e: der::Error) -> SmimeError {
    SmimeError::Crypto(format!("DER encoding: {e}"))
}

/// `id-RSASSA-PSS` with SHA-256, MGF1-SHA-256, salt length 32 (RFC 4055 §3.1).
fn pss_identifier() -> Result<AlgorithmIdentifierOwned, SmimeError> {
    let sha256 = spki::AlgorithmIdentifierRef {
        oid: SHA256,
        parameters: Some(der::asn1::AnyRef::NULL),
    };
    let params = pkcs1::RsaPssParamsRef {
        hash: sha256,
        mask_gen: spki::AlgorithmIdentifier {
            oid: MGF1,
            parameters: Some(sha256),
        },
        salt_len: 32,
        trailer_field: Default::default(),
    };
    Ok(AlgorithmIdentifierOwned {
        oid: RSASSA_PSS,
        parameters: Some(Any::encode_from(&params).map_err(der_err)?),
    })
}

fn sha256_identifier() -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid: SHA256,
        parameters: None,
    }
}

fn attribute(oid: ObjectIdentifier, value: &impl Encode) -> Result<Attribute, SmimeError> {
    let value = Any::from_der(&value.to_der().map_err(der_err)?).map_err(der_err)?;
    Ok(Attribute {
        oid,
        values: SetOfVec::try_from(vec![value]).map_err(der_err)?,
    })
}

/// Every certificate in a PEM file (or the one certificate of a DER file), in order.
fn read_certificates(bytes: &[u8]) -> Result<Vec<Certificate>, String> {
    if bytes.first() == Some(&0x30) {
        return Certificate::from_der(bytes)
            .map(|c| vec![c])
            .map_err(|e| format!("bad DER certificate: {e}"));
    }
    let text = String::from_utf8_lossy(bytes);
    let mut certs = Vec::new();
    const END: &str = "-----END CERTIFICATE-----";
    let mut rest = text.as_ref();
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let block = &rest[start..];
        let end = block.find(END).ok_or("PEM certificate has no END line")? + END.len();
        let cert = Certificate::from_pem(&block[..end])
            .map_err(|e| format!("bad PEM certificate #{}: {e}", certs.len() + 1))?;
        certs.push(cert);
        rest = &block[end..];
    }
    Ok(certs)
}

/// The signing keys of `[smime] signing_dir`: `<address>.key` with `<address>.crt` (or `.pem`)
/// for one sender, `<domain>.key` with `<domain>.crt` for every sender of a domain.
#[derive(Debug, Default, Clone)]
pub struct SigningKeys {
    by_name: BTreeMap<String, Arc<SigningKey>>,
}

impl SigningKeys {
    /// Loads every key of `dir`; the first problem (a certificate without a key, a key without a
    /// certificate, a key readable by others, RSA under 2048 bits, a certificate that does not
    /// belong to its key or does not name its address) is returned, naming the file.
    pub fn load_dir(dir: &Path, now: SystemTime) -> Result<SigningKeys, SmimeError> {
        let entries = std::fs::read_dir(dir).map_err(|source| SmimeError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut stems: BTreeMap<String, (Option<PathBuf>, Option<PathBuf>)> = BTreeMap::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let (Some(stem), Some(ext)) = (
                path.file_stem().and_then(|s| s.to_str()),
                path.extension().and_then(|s| s.to_str()),
            ) else {
                continue;
            };
            let slot = stems.entry(stem.to_ascii_lowercase()).or_default();
            match ext {
                "crt" | "pem" => slot.0 = Some(path.clone()),
                "key" => slot.1 = Some(path.clone()),
                _ => {}
            }
        }
        let mut by_name = BTreeMap::new();
        for (name, files) in stems {
            let (cert, key) = match files {
                (Some(cert), Some(key)) => (cert, key),
                (Some(cert), None) => (cert, dir.join(format!("{name}.key"))),
                (None, Some(key)) => {
                    return Err(SmimeError::Certificate {
                        path: key,
                        problem: format!(
                            "no certificate beside the key ({name}.crt or {name}.pem)"
                        ),
                    })
                }
                (None, None) => continue,
            };
            let signing = SigningKey::load(&cert, &key, now)?;
            if name.contains('@') && !signing.info.has_email(&name) {
                return Err(SmimeError::Certificate {
                    path: cert,
                    problem: format!(
                        "the certificate is for {}, not {name}",
                        match signing.emails() {
                            [] => "no email address".to_string(),
                            e => e.join(", "),
                        }
                    ),
                });
            }
            by_name.insert(name, Arc::new(signing));
        }
        Ok(SigningKeys { by_name })
    }

    /// The key for `address`: its own, else its domain's.
    pub fn find(&self, address: &str) -> Option<&Arc<SigningKey>> {
        let address = address.to_ascii_lowercase();
        self.by_name.get(&address).or_else(|| {
            let (_, domain) = address.rsplit_once('@')?;
            self.by_name.get(domain)
        })
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

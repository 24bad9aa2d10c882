//! Recipient certificates: parsing X.509 (emails, RSA key, validity, key usage) and choosing a
//! usable one for an address from a certificate directory.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rsa::PublicEncryptingKey;
use cms::cert::IssuerAndSerialNumber;
use const_oid::ObjectIdentifier;
use der::asn1::Ia5StringRef;
use der::{Decode, DecodePem, Encode};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{ExtendedKeyUsage, KeyUsage, SubjectAltName, SubjectKeyIdentifier};
use x509_cert::Certificate;

use super::alg::RSA_ENCRYPTION;
use super::SmimeError;
use crate::crypto::keys::MIN_RSA_BITS;

const EMAIL_ADDRESS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.1");
const EMAIL_PROTECTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.4");
const ANY_EKU: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37.0");

/// A parsed recipient certificate: who it is for and the RSA key to encrypt to.
#[derive(Clone, Debug)]
pub struct RecipientCert {
    subject: String,
    issuer_serial: IssuerAndSerialNumber,
    ski: Option<Vec<u8>>,
    spki_der: Vec<u8>,
    emails: Vec<String>,
    key: CertKey,
    not_before: SystemTime,
    not_after: SystemTime,
    /// `Some(has keyEncipherment)` when the certificate has a keyUsage extension.
    key_encipherment: Option<bool>,
    /// `Some(allows email protection)` when the certificate has an extendedKeyUsage extension.
    email_protection: Option<bool>,
}

#[derive(Clone, Debug)]
enum CertKey {
    /// `public` is `None` when aws-lc-rs refuses the key (under 2048 or over 8192 bits).
    Rsa {
        bits: usize,
        public: Option<PublicEncryptingKey>,
    },
    Other(ObjectIdentifier),
}

impl RecipientCert {
    /// Reads the first certificate of a PEM file (a DER file works too).
    pub fn from_pem_file(path: &Path) -> Result<Self, SmimeError> {
        let bytes = std::fs::read(path).map_err(|source| SmimeError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes).map_err(|problem| SmimeError::Certificate {
            path: path.to_path_buf(),
            problem,
        })
    }

    /// Parses a PEM or DER certificate; the error says what is wrong.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let cert = if bytes.first() == Some(&0x30) {
            Certificate::from_der(bytes).map_err(|e| format!("bad DER certificate: {e}"))?
        } else {
            let start = find(bytes, b"-----BEGIN CERTIFICATE-----")
                .ok_or("no PEM certificate (-----BEGIN CERTIFICATE-----) found")?;
            let rest = &bytes[start..];
            let end = find(rest, b"-----END CERTIFICATE-----")
                .map(|i| i + "-----END CERTIFICATE-----".len())
                .ok_or("PEM certificate has no END line")?;
            Certificate::from_pem(&rest[..end]).map_err(|e| format!("bad PEM certificate: {e}"))?
        };
        Self::from_certificate(&cert)
    }

    pub(crate) fn from_certificate(cert: &Certificate) -> Result<Self, String> {
        let tbs = cert.tbs_certificate();
        let spki = tbs.subject_public_key_info();
        let spki_der = spki
            .to_der()
            .map_err(|e| format!("public key encoding: {e}"))?;
        let key = if spki.algorithm.oid == RSA_ENCRYPTION {
            let bits = pkcs1::RsaPublicKeyRef::from_der(spki.subject_public_key.raw_bytes())
                .map_err(|e| format!("bad RSA public key: {e}"))
                .map(|k| bit_len(k.modulus.as_bytes()))?;
            CertKey::Rsa {
                bits,
                public: PublicEncryptingKey::from_der(&spki_der).ok(),
            }
        } else {
            CertKey::Other(spki.algorithm.oid)
        };

        let mut emails = Vec::new();
        let ext_err = |e: der::Error| format!("bad extension: {e}");
        if let Some((_, san)) = tbs.get_extension::<SubjectAltName>().map_err(ext_err)? {
            for name in san.0.iter() {
                if let GeneralName::Rfc822Name(email) = name {
                    emails.push(email.to_string());
                }
            }
        }
        for atv in tbs.subject().iter() {
            if atv.oid == EMAIL_ADDRESS {
                if let Ok(email) = atv.value.decode_as::<Ia5StringRef<'_>>() {
                    let email = email.to_string();
                    if !emails.iter().any(|e| e.eq_ignore_ascii_case(&email)) {
                        emails.push(email);
                    }
                }
            }
        }
        let ski = tbs
            .get_extension::<SubjectKeyIdentifier>()
            .map_err(ext_err)?
            .map(|(_, ski)| ski.0.as_bytes().to_vec());
        let key_encipherment = tbs
            .get_extension::<KeyUsage>()
            .map_err(ext_err)?
            .map(|(_, ku)| ku.key_encipherment());
        let email_protection = tbs
            .get_extension::<ExtendedKeyUsage>()
            .map_err(ext_err)?
            .map(|(_, eku)| {
                eku.0
                    .iter()
                    .any(|o| *o == EMAIL_PROTECTION || *o == ANY_EKU)
            });
        let validity = tbs.validity();
        Ok(RecipientCert {
            subject: tbs.subject().to_string(),
            issuer_serial: IssuerAndSerialNumber {
                issuer: tbs.issuer().clone(),
                serial_number: tbs.serial_number().clone(),
            },
            ski,
            spki_der,
            emails,
            key,
            not_before: UNIX_EPOCH + validity.not_before.to_unix_duration(),
            not_after: UNIX_EPOCH + validity.not_after.to_unix_duration(),
            key_encipherment,
            email_protection,
        })
    }

    /// Email addresses: SAN rfc822Name entries, then the subject's emailAddress.
    pub fn emails(&self) -> &[String] {
        &self.emails
    }

    /// The subject name (RFC 4514 form).
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// True if one of the certificate's email addresses is `address` (ignoring case).
    pub fn has_email(&self, address: &str) -> bool {
        self.emails.iter().any(|e| e.eq_ignore_ascii_case(address))
    }

    /// Why this certificate's key cannot be used (not RSA, too small), or `None`.
    fn key_problem(&self) -> Option<String> {
        match &self.key {
            CertKey::Other(oid) => Some(format!("not an RSA key (algorithm {oid})")),
            CertKey::Rsa { bits, .. } if *bits < MIN_RSA_BITS => Some(format!(
                "RSA key of {bits} bits is below the {MIN_RSA_BITS}-bit minimum"
            )),
            CertKey::Rsa { public: None, bits } => {
                Some(format!("RSA key of {bits} bits is not supported"))
            }
            CertKey::Rsa { .. } => None,
        }
    }

    /// A key sealpost cannot use, or `now` outside the validity period.
    fn key_or_validity_problem(&self, now: SystemTime) -> Option<String> {
        if let Some(problem) = self.key_problem() {
            return Some(problem);
        }
        if now < self.not_before {
            return Some(format!("not valid before {}", date(self.not_before)));
        }
        if now > self.not_after {
            return Some(format!("expired on {}", date(self.not_after)));
        }
        None
    }

    /// Why this certificate cannot be used to encrypt at `now`, or `None` if it can.
    pub fn unusable_reason(&self, now: SystemTime) -> Option<String> {
        if let Some(problem) = self.key_or_validity_problem(now) {
            return Some(problem);
        }
        if self.key_encipherment == Some(false) {
            return Some("keyUsage does not allow keyEncipherment".into());
        }
        if self.email_protection == Some(false) {
            return Some("extendedKeyUsage does not allow emailProtection".into());
        }
        None
    }

    /// Why this certificate cannot sign mail at `now` (key, validity, extendedKeyUsage), or
    /// `None` if it can.
    pub fn signing_problem(&self, now: SystemTime) -> Option<String> {
        if let Some(problem) = self.key_or_validity_problem(now) {
            return Some(problem);
        }
        if self.email_protection == Some(false) {
            return Some("extendedKeyUsage does not allow emailProtection".into());
        }
        None
    }

    pub(crate) fn issuer_serial(&self) -> &IssuerAndSerialNumber {
        &self.issuer_serial
    }

    pub(crate) fn subject_key_id(&self) -> Option<&[u8]> {
        self.ski.as_deref()
    }

    pub(crate) fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// The RSA public key to encrypt to, if the key is one we can use at all.
    pub(crate) fn public_key(&self) -> Result<&PublicEncryptingKey, SmimeError> {
        match &self.key {
            CertKey::Rsa {
                public: Some(k),
                bits,
            } if *bits >= MIN_RSA_BITS => Ok(k),
            _ => Err(SmimeError::Unusable {
                subject: self.subject.clone(),
                reason: self
                    .key_problem()
                    .unwrap_or_else(|| "unsupported key".into()),
            }),
        }
    }

    pub(crate) fn not_after(&self) -> SystemTime {
        self.not_after
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn bit_len(big_endian: &[u8]) -> usize {
    let trimmed: Vec<u8> = big_endian.iter().copied().skip_while(|&b| b == 0).collect();
    match trimmed.first() {
        Some(&first) => trimmed.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    }
}

fn date(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| secs.to_string())
}

/// The outcome of a certificate search, with the reason each candidate was passed over.
#[derive(Debug, Default)]
pub struct CertificateLookup {
    pub found: Option<RecipientCert>,
    /// The file `found` came from.
    pub found_in: Option<PathBuf>,
    /// Files that matched the address (or could not be read) but were not used, and why.
    pub skipped: Vec<(PathBuf, String)>,
}

/// Finds a usable certificate for `address` in `dir`: `<address>.crt` first, else any `*.crt`
/// whose email matches (the one valid longest wins). Unusable ones are skipped with a reason
/// (logged): expired or not yet valid, RSA under 2048 bits, keyUsage without keyEncipherment,
/// extendedKeyUsage without emailProtection, not RSA. A missing directory finds nothing.
pub fn find_certificate(
    dir: &Path,
    address: &str,
    now: SystemTime,
) -> Result<Option<RecipientCert>, SmimeError> {
    let lookup = find_certificate_explained(dir, address, now)?;
    for (path, reason) in &lookup.skipped {
        tracing::warn!(address, path = %path.display(), reason = %reason, "S/MIME certificate skipped");
    }
    Ok(lookup.found)
}

/// `find_certificate`, returning the skipped candidates and reasons instead of logging them.
pub fn find_certificate_explained(
    dir: &Path,
    address: &str,
    now: SystemTime,
) -> Result<CertificateLookup, SmimeError> {
    let mut lookup = CertificateLookup::default();
    let io = |source| SmimeError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(lookup),
        Err(e) => return Err(io(e)),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "crt"))
        .collect();
    files.sort();
    let named = |p: &PathBuf| {
        p.file_stem()
            .and_then(|s| s.to_str())
            .is_some_and(|s| s.eq_ignore_ascii_case(address))
    };
    // The file named after the address is tried first.
    files.sort_by_key(|p| !named(p));

    let mut best: Option<(RecipientCert, PathBuf)> = None;
    for path in files {
        let is_named = named(&path);
        let cert = match RecipientCert::from_pem_file(&path) {
            Ok(c) => c,
            Err(e) => {
                if is_named {
                    lookup.skipped.push((path, e.to_string()));
                }
                continue;
            }
        };
        // A certificate without any email counts only under the address's own file name.
        let usable_name = cert.has_email(address) || (is_named && cert.emails().is_empty());
        if !usable_name {
            if is_named {
                let reason = format!("certificate is for {}", cert.emails().join(", "));
                lookup.skipped.push((path, reason));
            }
            continue;
        }
        if let Some(reason) = cert.unusable_reason(now) {
            lookup.skipped.push((path, reason));
            continue;
        }
        if is_named {
            lookup.found = Some(cert);
            lookup.found_in = Some(path);
            return Ok(lookup);
        }
        if best
            .as_ref()
            .is_none_or(|(b, _)| cert.not_after() > b.not_after())
        {
            best = Some((cert, path));
        }
    }
    (lookup.found, lookup.found_in) = best.unzip();
    Ok(lookup)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_length_of_moduli() {
        assert_eq!(bit_len(&[0x00, 0x80, 0x00]), 16);
        assert_eq!(bit_len(&[0x01, 0x00]), 9);
        assert_eq!(bit_len(&[]), 0);
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(RecipientCert::from_bytes(b"hello").is_err());
        assert!(RecipientCert::from_bytes(&[0x30, 0x03, 0x02, 0x01]).is_err());
        assert!(RecipientCert::from_bytes(
            b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
        )
        .is_err());
    }

    #[test]
    fn missing_directory_finds_nothing() {
        let found = find_certificate(
            Path::new("/nonexistent/sealpost"),
            "a@b.test",
            SystemTime::now(),
        );
        assert!(matches!(found, Ok(None)));
    }
}

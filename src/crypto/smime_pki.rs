//! Test S/MIME certificates: RSA-2048 keys and email certificates issued by the fixture CA.

use std::path::Path;

use der::asn1::{Ia5StringRef, PrintableStringRef, Utf8StringRef};
use der::{DecodePem, Tag, Tagged};
use rcgen::{
    date_time_ymd, CertificateParams, DistinguishedName, DnType, DnValue, ExtendedKeyUsagePurpose,
    Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RsaKeySize, SanType, SerialNumber,
};
use x509_cert::ext::pkix::SubjectKeyIdentifier;
use x509_cert::Certificate;

#[derive(Debug, thiserror::Error)]
pub enum SmimePkiError {
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{path}: {problem}")]
    Ca { path: String, problem: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

fn io_err(path: &Path, source: std::io::Error) -> SmimePkiError {
    SmimePkiError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn ca_err(path: &Path, problem: impl std::fmt::Display) -> SmimePkiError {
    SmimePkiError::Ca {
        path: path.display().to_string(),
        problem: problem.to_string(),
    }
}

/// Writes `<address>.crt` and `<address>.key` into `dir` for each address: RSA-2048 keys in
/// PKCS#8 PEM (mode 0600), certificates issued by the CA in `ca_cert`/`ca_key` with the address
/// as SAN rfc822Name and subject emailAddress, keyUsage keyEncipherment + digitalSignature,
/// extendedKeyUsage emailProtection, valid 2026–2036.
pub fn generate_smime(
    dir: &Path,
    ca_cert: &Path,
    ca_key: &Path,
    addresses: &[&str],
) -> Result<(), SmimePkiError> {
    let issuer = load_ca(ca_cert, ca_key)?;
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    for address in addresses {
        let key = KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_2048)?;
        let cert = smime_params(address)?.signed_by(&key, &issuer)?;
        write(
            &dir.join(format!("{address}.crt")),
            cert.pem().as_bytes(),
            0o644,
        )?;
        write(
            &dir.join(format!("{address}.key")),
            key.serialize_pem().as_bytes(),
            0o600,
        )?;
    }
    Ok(())
}

/// The parameters of a fixture S/MIME certificate for `address` (callers may change them).
pub fn smime_params(address: &str) -> Result<CertificateParams, SmimePkiError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.subject_alt_names = vec![SanType::Rfc822Name(address.try_into()?)];
    params.distinguished_name.push(DnType::CommonName, address);
    params.distinguished_name.push(
        DnType::CustomDnType(vec![1, 2, 840, 113549, 1, 9, 1]),
        DnValue::Ia5String(address.try_into()?),
    );
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::EmailProtection];
    params.not_before = date_time_ymd(2026, 1, 1);
    params.not_after = date_time_ymd(2036, 1, 1);
    params.use_authority_key_identifier_extension = true;
    let mut serial = [0u8; 16];
    aws_lc_rs::rand::fill(&mut serial).map_err(|_| rcgen::Error::RingUnspecified)?;
    serial[0] &= 0x7f;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    Ok(params)
}

/// Loads an existing CA (PEM certificate and PKCS#8 key) as an rcgen issuer: its subject name is
/// copied attribute by attribute and its subject key identifier reused, so issued certificates
/// chain to it.
pub fn load_ca(ca_cert: &Path, ca_key: &Path) -> Result<Issuer<'static, KeyPair>, SmimePkiError> {
    let pem = std::fs::read(ca_cert).map_err(|e| io_err(ca_cert, e))?;
    let cert = Certificate::from_pem(&pem).map_err(|e| ca_err(ca_cert, e))?;
    let key_pem = std::fs::read_to_string(ca_key).map_err(|e| io_err(ca_key, e))?;
    let key = KeyPair::from_pem(&key_pem).map_err(|e| ca_err(ca_key, e))?;
    let tbs = cert.tbs_certificate();
    if tbs.subject_public_key_info().subject_public_key.raw_bytes() != key.public_key_raw() {
        return Err(ca_err(ca_key, "is not the key of the CA certificate"));
    }

    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    for atv in tbs.subject().iter() {
        let ty = match atv.oid.to_string().as_str() {
            "2.5.4.3" => DnType::CommonName,
            "2.5.4.6" => DnType::CountryName,
            "2.5.4.7" => DnType::LocalityName,
            "2.5.4.8" => DnType::StateOrProvinceName,
            "2.5.4.10" => DnType::OrganizationName,
            "2.5.4.11" => DnType::OrganizationalUnitName,
            other => DnType::CustomDnType(
                other
                    .split('.')
                    .filter_map(|arc| arc.parse().ok())
                    .collect(),
            ),
        };
        let bad = |e: der::Error| ca_err(ca_cert, format!("subject name: {e}"));
        let value = match atv.value.tag() {
            Tag::Utf8String => DnValue::Utf8String(
                atv.value
                    .decode_as::<Utf8StringRef<'_>>()
                    .map_err(bad)?
                    .to_string(),
            ),
            Tag::PrintableString => DnValue::PrintableString(
                atv.value
                    .decode_as::<PrintableStringRef<'_>>()
                    .map_err(bad)?
                    .as_str()
                    .try_into()?,
            ),
            Tag::Ia5String => DnValue::Ia5String(
                atv.value
                    .decode_as::<Ia5StringRef<'_>>()
                    .map_err(bad)?
                    .as_str()
                    .try_into()?,
            ),
            other => {
                return Err(ca_err(
                    ca_cert,
                    format!("subject attribute of type {other} is not supported"),
                ))
            }
        };
        params.distinguished_name.push(ty, value);
    }
    if let Ok(Some((_, ski))) = tbs.get_extension::<SubjectKeyIdentifier>() {
        params.key_identifier_method = KeyIdMethod::PreSpecified(ski.0.as_bytes().to_vec());
    }
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(Issuer::new(params, key))
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), SmimePkiError> {
    crate::crypto::pki::write_file(path, bytes, mode).map_err(|e| io_err(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::smime::RecipientCert;
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn issued_certificates_are_usable_smime_certificates() {
        let dir = tempfile::tempdir().unwrap();
        crate::crypto::pki::generate(dir.path(), &[]).unwrap();
        let out = dir.path().join("smime");
        generate_smime(
            &out,
            &dir.path().join("ca.crt"),
            &dir.path().join("ca.key"),
            &["x@one.test"],
        )
        .unwrap();
        let cert = RecipientCert::from_pem_file(&out.join("x@one.test.crt")).unwrap();
        assert_eq!(cert.emails(), ["x@one.test".to_string()]);
        // 2030-01-01 is inside the validity period.
        let when = UNIX_EPOCH + Duration::from_secs(1_893_456_000);
        assert_eq!(cert.unusable_reason(when), None);
        let ca = RecipientCert::from_pem_file(&dir.path().join("ca.crt")).unwrap();
        assert_eq!(
            cert.issuer_serial().issuer.to_string(),
            ca.subject().to_string()
        );
        let mode = std::fs::metadata(out.join("x@one.test.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_key_that_is_not_the_cas_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        crate::crypto::pki::generate(dir.path(), &["h.test"]).unwrap();
        let e = load_ca(&dir.path().join("ca.crt"), &dir.path().join("h.test.key"));
        assert!(matches!(e, Err(SmimePkiError::Ca { .. })));
    }
}

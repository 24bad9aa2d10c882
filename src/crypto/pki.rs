//! A test PKI for the fixture domains: one CA and one RSA-2048 server certificate per host.

use std::io::Write;
use std::path::Path;

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, RsaKeySize,
};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Writes `ca.crt`/`ca.key` and `<host>.crt`/`<host>.key` for each host into `dir`.
/// Keys are RSA-2048 in PKCS#8 PEM, written with mode 0600. Certificates are valid 2026–2036 and
/// carry serverAuth and clientAuth, so a host can also present its certificate as a client.
pub fn generate(dir: &Path, hosts: &[&str]) -> Result<(), PkiError> {
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let ca_key = KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_2048)?;
    let ca_key_pem = ca_key.serialize_pem();
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "sealpost test CA");
    ca_params
        .distinguished_name
        .push(DnType::OrganizationName, "sealpost fixtures");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = date_time_ymd(2026, 1, 1);
    ca_params.not_after = date_time_ymd(2036, 1, 1);
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key)?;
    write(&dir.join("ca.crt"), ca.pem().as_bytes(), 0o644)?;
    write(&dir.join("ca.key"), ca_key_pem.as_bytes(), 0o600)?;

    for host in hosts {
        let key = KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_2048)?;
        let mut params = CertificateParams::new(vec![host.to_string()])?;
        params.distinguished_name.push(DnType::CommonName, *host);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = date_time_ymd(2026, 1, 1);
        params.not_after = date_time_ymd(2036, 1, 1);
        let cert = params.signed_by(&key, &ca)?;
        write(
            &dir.join(format!("{host}.crt")),
            cert.pem().as_bytes(),
            0o644,
        )?;
        write(
            &dir.join(format!("{host}.key")),
            key.serialize_pem().as_bytes(),
            0o600,
        )?;
    }
    Ok(())
}

fn io_err(path: &Path, source: std::io::Error) -> PkiError {
    PkiError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Writes a file with the given mode from the start (a key is never readable by others, not even briefly).
fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PkiError> {
    write_file(path, bytes, mode).map_err(|e| io_err(path, e))
}

/// Writes a file with the given mode from the start (a key is never readable by others, not
/// even briefly), replacing any file there, and fsyncs it.
pub(crate) fn write_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    f.write_all(bytes).and_then(|_| f.sync_all())
}

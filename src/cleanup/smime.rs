//! The `smime_encrypt` action's encryptor: recipient certificates from `[smime] certificate_dir`.

use std::path::PathBuf;
use std::time::SystemTime;

use super::apply::{Smime, SmimeFailure};
use crate::crypto::smime::{
    encrypt_unencrypted, is_encrypted, CertificateCache, ContentAlgorithm, KeyTransport,
    SmimeError, SmimeOptions,
};
use crate::rules::{self, SmimeEncrypt};

/// Encrypts with the certificates found in one directory (`<address>.crt`, or any certificate
/// whose email matches); expired, weak or signing-only certificates are passed over. Parsed
/// certificates are kept while their files do not change, looked at once a second (see
/// `CertificateCache`).
pub struct DirectorySmime {
    certificates: CertificateCache,
}

impl DirectorySmime {
    pub fn new(dir: PathBuf) -> Self {
        DirectorySmime {
            certificates: CertificateCache::new(dir),
        }
    }
}

impl Smime for DirectorySmime {
    fn encrypt(
        &self,
        message: &[u8],
        recipients: &[String],
        action: &SmimeEncrypt,
    ) -> Result<Vec<u8>, SmimeFailure> {
        if is_encrypted(message) {
            return Err(SmimeFailure::AlreadyEncrypted);
        }
        let mut certs = Vec::with_capacity(recipients.len());
        let mut missing = Vec::new();
        for r in recipients {
            match self.certificates.find(r, SystemTime::now()) {
                Ok(Some(cert)) => certs.push(cert),
                Ok(None) => missing.push(r.clone()),
                Err(e) => return Err(SmimeFailure::Other(e.to_string())),
            }
        }
        if !missing.is_empty() {
            return Err(SmimeFailure::MissingCertificates(missing));
        }
        let opts = SmimeOptions {
            algorithm: match action.algorithm {
                rules::SmimeAlgorithm::Aes256Cbc => ContentAlgorithm::Aes256Cbc,
                rules::SmimeAlgorithm::Aes256Gcm => ContentAlgorithm::Aes256Gcm,
            },
            key_transport: match action.key_transport {
                rules::KeyTransport::RsaOaep => KeyTransport::RsaOaep,
                rules::KeyTransport::RsaPkcs1 => KeyTransport::RsaPkcs1,
            },
        };
        // Checked above, before the certificates were looked up.
        encrypt_unencrypted(message, &certs, &opts).map_err(|e| match e {
            SmimeError::AlreadyEncrypted => SmimeFailure::AlreadyEncrypted,
            other => SmimeFailure::Other(other.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smime() -> DirectorySmime {
        DirectorySmime::new(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pki/smime"),
        )
    }

    #[test]
    fn encrypts_for_fixture_recipients_and_names_the_missing() {
        let msg = b"From: a@contoso.test\r\nSubject: s\r\nContent-Type: text/plain\r\n\r\nsecret body\r\n";
        let out = smime()
            .encrypt(
                msg,
                &["bob@fabrikam.test".into(), "dave@fabrikam.test".into()],
                &SmimeEncrypt::default(),
            )
            .unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("application/pkcs7-mime"), "{text}");
        assert!(!text.contains("secret body"));
        assert!(text.contains("Subject: s\r\n"));
        let e = smime().encrypt(
            msg,
            &["bob@fabrikam.test".into(), "nobody@fabrikam.test".into()],
            &SmimeEncrypt::default(),
        );
        assert_eq!(
            e,
            Err(SmimeFailure::MissingCertificates(vec![
                "nobody@fabrikam.test".into()
            ]))
        );
        assert_eq!(
            smime().encrypt(
                &out,
                &["bob@fabrikam.test".into()],
                &SmimeEncrypt::default()
            ),
            Err(SmimeFailure::AlreadyEncrypted)
        );
    }
}

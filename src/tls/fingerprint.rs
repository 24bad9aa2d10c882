//! Certificate pins (Postfix's `fingerprint` level): the SHA-256 digest of a peer's whole
//! certificate or of its public key (SubjectPublicKeyInfo), written `sha256:<hex>`.

use std::fmt;

use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};

/// One pinned SHA-256 digest; it matches a certificate whose DER or whose public key hashes to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub(super) [u8; 32]);

impl Fingerprint {
    /// Parses `sha256:` followed by 64 hex digits, with or without `:` between the bytes (as
    /// `openssl x509 -fingerprint -sha256` prints them); case does not matter.
    pub fn parse(text: &str) -> Result<Fingerprint, String> {
        let t = text.trim();
        let hex_part = t
            .strip_prefix("sha256:")
            .or_else(|| t.strip_prefix("SHA256:"))
            .ok_or_else(|| {
                format!("{text:?} does not start with sha256: (only SHA-256 pins are accepted)")
            })?;
        let digits: String = hex_part.chars().filter(|&c| c != ':').collect();
        let bytes = hex::decode(&digits)
            .ok()
            .filter(|b| b.len() == 32)
            .ok_or_else(|| format!("{text:?} is not sha256: and 64 hex digits"))?;
        let mut d = [0u8; 32];
        d.copy_from_slice(&bytes);
        Ok(Fingerprint(d))
    }

    /// The digest of a whole certificate (DER).
    pub fn of_certificate(cert: &CertificateDer<'_>) -> Fingerprint {
        Fingerprint(Sha256::digest(cert.as_ref()).into())
    }

    /// The digest of a certificate's SubjectPublicKeyInfo: stays the same across renewals that
    /// keep the key.
    pub fn of_public_key(cert: &CertificateDer<'_>) -> Result<Fingerprint, String> {
        let ee = webpki::EndEntityCert::try_from(cert)
            .map_err(|e| format!("unreadable certificate: {e:?}"))?;
        let spki = ee.subject_public_key_info();
        Ok(Fingerprint(Sha256::digest(spki.as_ref()).into()))
    }

    /// Whether the certificate or its public key hashes to this pin.
    pub fn matches(&self, cert: &CertificateDer<'_>) -> bool {
        *self == Fingerprint::of_certificate(cert)
            || Fingerprint::of_public_key(cert).is_ok_and(|p| p == *self)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::Decode;

    fn fabrikam() -> CertificateDer<'static> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pki");
        crate::tls::load_certified_key(
            &dir.join("mx.fabrikam.test.crt"),
            &dir.join("mx.fabrikam.test.key"),
        )
        .unwrap()
        .chain[0]
            .clone()
    }

    #[test]
    fn pins_parse_with_or_without_colons_and_print_as_hex() {
        let hex = "ab".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        let a = Fingerprint::parse(&format!("sha256:{hex}")).unwrap();
        assert_eq!(a, Fingerprint::parse(&format!("SHA256:{colons}")).unwrap());
        assert_eq!(a.to_string(), format!("sha256:{hex}"));
        assert!(Fingerprint::parse(&hex).unwrap_err().contains("sha256:"));
        assert!(Fingerprint::parse("sha256:abcd").is_err());
        assert!(Fingerprint::parse(&format!("sha256:{}", "zz".repeat(32))).is_err());
    }

    #[test]
    fn a_pin_matches_the_certificate_or_its_public_key_only() {
        let cert = fabrikam();
        let by_cert = Fingerprint::of_certificate(&cert);
        let by_key = Fingerprint::of_public_key(&cert).unwrap();
        assert_ne!(by_cert, by_key);
        assert!(by_cert.matches(&cert) && by_key.matches(&cert));
        assert!(!Fingerprint([7; 32]).matches(&cert));
    }

    #[test]
    fn the_public_key_pin_is_the_one_openssl_computes() {
        // openssl x509 -in fixtures/pki/mx.fabrikam.test.crt -pubkey -noout
        //   | openssl pkey -pubin -outform der | sha256sum
        let cert = fabrikam();
        let spki = x509_cert::Certificate::from_der(cert.as_ref())
            .map(|c| der::Encode::to_der(c.tbs_certificate().subject_public_key_info()).unwrap())
            .unwrap();
        let expected = Fingerprint(Sha256::digest(&spki).into());
        assert_eq!(Fingerprint::of_public_key(&cert).unwrap(), expected);
    }
}

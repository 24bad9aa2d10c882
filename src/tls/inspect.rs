//! A readable summary of a certificate (subject, names, issuer, key, signature, validity), for
//! `tls-check`.

use der::Decode;
use rustls_pki_types::CertificateDer;
use serde::Serialize;
use sha2::{Digest, Sha256};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::Certificate;

use super::fingerprint::Fingerprint;

/// What `tls-check` shows of each certificate in a chain.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CertSummary {
    pub subject: String,
    pub dns_names: Vec<String>,
    pub issuer: String,
    /// e.g. "RSA 2048 bits", "EC P-256".
    pub key: String,
    /// RSA modulus size, when the key is RSA.
    pub rsa_bits: Option<usize>,
    /// e.g. "sha256WithRSAEncryption".
    pub signature: String,
    /// A signature algorithm no longer safe (MD5, SHA-1).
    pub weak_signature: bool,
    pub not_before: String,
    pub not_after: String,
    /// Unix seconds.
    pub not_after_unix: u64,
    pub not_before_unix: u64,
    /// The pins a `tls = "fingerprint"` connector accepts: of the whole certificate, and of its
    /// public key (stable across renewals with the same key).
    pub fingerprint_certificate: String,
    pub fingerprint_public_key: String,
}

/// Summarises one DER certificate.
pub fn summarize(cert: &CertificateDer<'_>) -> Result<CertSummary, String> {
    let c =
        Certificate::from_der(cert.as_ref()).map_err(|e| format!("unreadable certificate: {e}"))?;
    let tbs = c.tbs_certificate();
    let dns_names = match tbs.get_extension::<SubjectAltName>() {
        Ok(Some((_, san))) => san
            .0
            .iter()
            .filter_map(|n| match n {
                GeneralName::DnsName(d) => Some(d.to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let spki = tbs.subject_public_key_info();
    let alg = spki.algorithm.oid.to_string();
    let spki_der = der::Encode::to_der(spki).map_err(|e| format!("unreadable key: {e}"))?;
    let rsa_bits = (alg == "1.2.840.113549.1.1.1")
        .then(|| super::peer::modulus_bits(&spki_der))
        .flatten();
    let key = match alg.as_str() {
        "1.2.840.113549.1.1.1" => format!("RSA {} bits", rsa_bits.unwrap_or(0)),
        "1.2.840.10045.2.1" => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<der::asn1::ObjectIdentifier>().ok())
                .map(|o| o.to_string());
            match curve.as_deref() {
                Some("1.2.840.10045.3.1.7") => "EC P-256".to_string(),
                Some("1.3.132.0.34") => "EC P-384".to_string(),
                Some("1.3.132.0.35") => "EC P-521".to_string(),
                other => format!("EC {}", other.unwrap_or("unknown curve")),
            }
        }
        "1.3.101.112" => "Ed25519".to_string(),
        other => format!("unknown key type {other}"),
    };
    let sig_oid = c.signature_algorithm().oid.to_string();
    let (signature, weak_signature) = match sig_oid.as_str() {
        "1.2.840.113549.1.1.11" => ("sha256WithRSAEncryption", false),
        "1.2.840.113549.1.1.12" => ("sha384WithRSAEncryption", false),
        "1.2.840.113549.1.1.13" => ("sha512WithRSAEncryption", false),
        "1.2.840.113549.1.1.10" => ("RSASSA-PSS", false),
        "1.2.840.10045.4.3.2" => ("ecdsa-with-SHA256", false),
        "1.2.840.10045.4.3.3" => ("ecdsa-with-SHA384", false),
        "1.2.840.10045.4.3.4" => ("ecdsa-with-SHA512", false),
        "1.3.101.112" => ("Ed25519", false),
        "1.2.840.113549.1.1.5" => ("sha1WithRSAEncryption", true),
        "1.2.840.113549.1.1.4" => ("md5WithRSAEncryption", true),
        "1.2.840.10045.4.1" => ("ecdsa-with-SHA1", true),
        _ => ("", false),
    };
    let signature = if signature.is_empty() {
        sig_oid.clone()
    } else {
        signature.to_string()
    };
    let validity = tbs.validity();
    Ok(CertSummary {
        subject: tbs.subject().to_string(),
        dns_names,
        issuer: tbs.issuer().to_string(),
        key,
        rsa_bits,
        signature,
        weak_signature,
        not_before: validity.not_before.to_string(),
        not_after: validity.not_after.to_string(),
        not_before_unix: validity.not_before.to_unix_duration().as_secs(),
        not_after_unix: validity.not_after.to_unix_duration().as_secs(),
        fingerprint_certificate: Fingerprint::of_certificate(cert).to_string(),
        fingerprint_public_key: Fingerprint(Sha256::digest(&spki_der).into()).to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarizes_the_fixture_certificate() {
        let pki = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pki");
        let key = crate::tls::load_certified_key(
            &pki.join("mx.fabrikam.test.crt"),
            &pki.join("mx.fabrikam.test.key"),
        )
        .unwrap();
        let s = summarize(&key.chain[0]).unwrap();
        assert_eq!(s.dns_names, vec!["mx.fabrikam.test".to_string()]);
        assert_eq!(s.key, "RSA 2048 bits");
        assert_eq!(s.rsa_bits, Some(2048));
        assert_eq!(s.signature, "sha256WithRSAEncryption");
        assert!(!s.weak_signature);
        assert!(s.subject.contains("CN=mx.fabrikam.test"), "{}", s.subject);
        assert!(s.issuer.contains("CN=sealpost test CA"), "{}", s.issuer);
        assert!(s.not_after.starts_with("2036-01-01"), "{}", s.not_after);
    }
}

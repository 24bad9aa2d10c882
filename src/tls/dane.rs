//! DANE for SMTP (RFC 7672): TLSA records and the check of a peer's certificate chain against
//! them, as a pure function of (records, reference names, chain, time).
//!
//! Only DANE-TA(2) and DANE-EE(3) are usable for SMTP (§3.1.3: PKIX-TA(0) and PKIX-EE(1) are
//! not); selectors Cert(0) and SPKI(1); matching types Full(0), SHA2-256(1) and SHA2-512(2). A
//! record of any other kind, or whose data has the wrong length for its matching type, is
//! unusable and ignored.
//! - **DANE-EE**: the server certificate (or its public key) matches; its names and validity
//!   dates are not checked (§3.1.1).
//! - **DANE-TA**: a certificate the server presents above its own certificate matches and is
//!   taken as the trust anchor; the chain from the server certificate up to it must verify at
//!   the current time, and the server certificate must be valid for one of the reference names
//!   (§3.2.2: the TLSA base domain and the MX host name). A trust anchor that the server does
//!   not include in its chain is not found.
//!
//! A secure TLSA record set with no usable record means TLS is still mandatory but the
//! certificate is not authenticated (§2.2); [`verify`] says so when given only unusable ones.
//! The key-strength floor of the rest of sealpost (RSA under 2048 bits refused) applies to
//! DANE-matched certificates too.

use aws_lc_rs::digest;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use x509_cert::der::{Decode, Encode};

use super::failure::CertificateFailure;

pub use crate::dns::tlsa_record::{Tlsa, DANE_EE, DANE_TA};

/// Matching a record against certificates (the record itself lives with the DNS lookups).
impl Tlsa {
    /// Whether `cert` (DER) matches this record's selector, matching type and data.
    fn matches(&self, cert: &[u8]) -> Result<bool, String> {
        let selected = match self.selector {
            0 => cert.to_vec(),
            1 => spki_of(cert)?,
            other => return Err(format!("unknown selector {other}")),
        };
        Ok(match self.matching {
            0 => selected == self.data,
            1 => digest::digest(&digest::SHA256, &selected).as_ref() == self.data.as_slice(),
            2 => digest::digest(&digest::SHA512, &selected).as_ref() == self.data.as_slice(),
            _ => false,
        })
    }

    /// The record that `cert` would need for this usage, selector and matching type.
    pub fn for_certificate(
        usage: u8,
        selector: u8,
        matching: u8,
        cert: &[u8],
    ) -> Result<Tlsa, String> {
        let mut record = Tlsa {
            usage,
            selector,
            matching,
            data: Vec::new(),
        };
        let selected = match selector {
            0 => cert.to_vec(),
            _ => spki_of(cert)?,
        };
        record.data = match matching {
            0 => selected,
            1 => digest::digest(&digest::SHA256, &selected).as_ref().to_vec(),
            _ => digest::digest(&digest::SHA512, &selected).as_ref().to_vec(),
        };
        Ok(record)
    }
}

/// The DER SubjectPublicKeyInfo of a DER certificate.
fn spki_of(cert: &[u8]) -> Result<Vec<u8>, String> {
    let cert = x509_cert::Certificate::from_der(cert).map_err(|e| format!("certificate: {e}"))?;
    cert.tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .map_err(|e| format!("public key: {e}"))
}

/// Checks `chain` (server certificate first) against a secure TLSA record set. `names` are the
/// reference identifiers for DANE-TA (the TLSA base domain and the MX host name). Returns what
/// matched, as a sentence for logs and the Received header.
pub fn verify(
    records: &[Tlsa],
    names: &[String],
    chain: &[CertificateDer<'_>],
    now: UnixTime,
) -> Result<String, CertificateFailure> {
    let usable: Vec<&Tlsa> = records.iter().filter(|r| r.usable()).collect();
    let Some((end_entity, above)) = chain.split_first() else {
        return Err(CertificateFailure::Missing);
    };
    if let Some(bits) = super::peer::rsa_bits(end_entity)?.filter(|&b| b < super::MIN_RSA_BITS) {
        return Err(CertificateFailure::WeakKey { bits });
    }
    if usable.is_empty() {
        return Ok("TLSA records present but none usable: encrypted, not authenticated".into());
    }
    let malformed = CertificateFailure::Malformed;
    for record in usable.iter().filter(|r| r.usage == DANE_EE) {
        if record.matches(end_entity.as_ref()).map_err(malformed)? {
            return Ok(format!(
                "DANE-EE matched TLSA {} {} {}",
                record.usage, record.selector, record.matching
            ));
        }
    }
    let mut failure = None;
    for record in usable.iter().filter(|r| r.usage == DANE_TA) {
        for (i, candidate) in above.iter().enumerate() {
            if !record.matches(candidate.as_ref()).map_err(malformed)? {
                continue;
            }
            match chain_to_anchor(end_entity, &above[..i], candidate, names, now) {
                Ok(name) => {
                    return Ok(format!(
                        "DANE-TA matched TLSA {} {} {}, verified {name}",
                        record.usage, record.selector, record.matching
                    ))
                }
                Err(e) => failure = Some(e),
            }
        }
    }
    Err(failure.unwrap_or_else(|| {
        CertificateFailure::DaneMismatch(format!(
            "no certificate presented matches the {} usable TLSA record(s)",
            usable.len()
        ))
    }))
}

/// Verifies `end_entity` through `intermediates` to `anchor` at `now` for server use, and that
/// it is valid for one of `names`; returns the name.
fn chain_to_anchor(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    anchor: &CertificateDer<'_>,
    names: &[String],
    now: UnixTime,
) -> Result<String, CertificateFailure> {
    let anchor = webpki::anchor_from_trusted_cert(anchor)
        .map_err(|e| CertificateFailure::Malformed(format!("TLSA trust anchor: {e:?}")))?;
    let ee = webpki::EndEntityCert::try_from(end_entity)
        .map_err(|e| CertificateFailure::Malformed(format!("server certificate: {e:?}")))?;
    let algorithms = super::provider().signature_verification_algorithms.all;
    let intermediates: Vec<CertificateDer<'_>> = intermediates.to_vec();
    ee.verify_for_usage(
        algorithms,
        &[anchor],
        &intermediates,
        now,
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map_err(|e| match e {
        webpki::Error::CertExpired { .. } => CertificateFailure::Expired,
        webpki::Error::CertNotValidYet { .. } => CertificateFailure::NotValidYet,
        other => CertificateFailure::DaneMismatch(format!(
            "the chain does not verify to the DANE-TA trust anchor: {other:?}"
        )),
    })?;
    for name in names {
        if let Ok(server_name) = ServerName::try_from(name.clone()) {
            if ee.verify_is_valid_for_subject_name(&server_name).is_ok() {
                return Ok(name.clone());
            }
        }
    }
    Err(CertificateFailure::NameMismatch {
        wanted: names.join(" or "),
    })
}

#[cfg(test)]
mod tests;

//! Who is asking the licensing service: a reader's principal, proven by a TLS client certificate
//! and never self-declared.
//!
//! The principal is the certificate's one email address (an rfc822Name in its subject
//! alternative name). A certificate counts only if its chain leads to a CA that the tenant
//! trusts *for that address's domain* (`[[rms.licensing.trust]] domains = [...]`, `ca_file`):
//! a CA trusted for contoso.test cannot vouch for anyone at fabrikam.test. S/MIME certificates
//! (extended key usage emailProtection) and TLS client certificates (clientAuth) are both
//! accepted, since readers hold the former.

use std::fmt;

use rustls_pki_types::{CertificateDer, UnixTime};
use x509_cert::der::Decode;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::Certificate;

use crate::mail::DomainSet;
use crate::tls::policy::TrustAnchors;

/// id-kp-emailProtection (1.3.6.1.5.5.7.3.4), DER content octets.
const EMAIL_PROTECTION: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x04];

/// One CA the tenant trusts to name readers, and the domains it may name them in.
#[derive(Clone, Debug)]
pub struct DomainTrust {
    pub domains: DomainSet,
    pub anchors: TrustAnchors,
}

/// Every CA the licensing service trusts, each for its domains.
#[derive(Clone, Debug, Default)]
pub struct ReaderTrust {
    entries: Vec<DomainTrust>,
    /// The signature algorithms chains are checked with, taken once from the TLS provider.
    algorithms: &'static [&'static dyn rustls_pki_types::SignatureVerificationAlgorithm],
}

/// Why a client certificate does not prove a principal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentityError {
    /// The client sent no certificate.
    NoCertificate,
    /// The certificate cannot be read.
    Malformed(String),
    /// The certificate names no email address, or more than one, or one that cannot be a
    /// principal (a wildcard, no domain).
    NoPrincipal(String),
    /// No trusted CA may name readers in this domain.
    DomainNotTrusted { principal: String },
    /// The chain does not lead to a CA trusted for the principal's domain, or is not valid now.
    Untrusted { principal: String, reason: String },
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityError::NoCertificate => write!(f, "no client certificate presented"),
            IdentityError::Malformed(e) => write!(f, "unreadable client certificate: {e}"),
            IdentityError::NoPrincipal(why) => {
                write!(f, "client certificate names no reader: {why}")
            }
            IdentityError::DomainNotTrusted { principal } => write!(
                f,
                "no certificate authority is trusted to name readers in the domain of {principal}"
            ),
            IdentityError::Untrusted { principal, reason } => write!(
                f,
                "client certificate for {principal} is not trusted: {reason}"
            ),
        }
    }
}

impl std::error::Error for IdentityError {}

impl ReaderTrust {
    pub fn new(entries: Vec<DomainTrust>) -> ReaderTrust {
        ReaderTrust {
            entries,
            algorithms: crate::tls::provider().signature_verification_algorithms.all,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The principal a client certificate chain proves at `now`: the email address it names,
    /// lowercased, once the chain verifies to a CA trusted for that address's domain.
    pub fn principal(
        &self,
        chain: &[CertificateDer<'static>],
        now: UnixTime,
    ) -> Result<String, IdentityError> {
        let Some((end_entity, intermediates)) = chain.split_first() else {
            return Err(IdentityError::NoCertificate);
        };
        let principal = certificate_email(end_entity.as_ref())?;
        let domains: Vec<&DomainTrust> = self
            .entries
            .iter()
            .filter(|t| t.domains.contains_address(&principal))
            .collect();
        if domains.is_empty() {
            return Err(IdentityError::DomainNotTrusted { principal });
        }
        let ee = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| IdentityError::Malformed(format!("{e:?}")))?;
        let algorithms = self.algorithms;
        let mut reason = String::new();
        for trust in domains {
            let roots = &trust.anchors.roots.roots;
            let verify = |usage| {
                ee.verify_for_usage(algorithms, roots, intermediates, now, usage, None, None)
                    .map(drop)
            };
            let result = match verify(webpki::KeyUsage::required_if_present(EMAIL_PROTECTION)) {
                Err(e) if wrong_purpose(&e) => verify(webpki::KeyUsage::client_auth()),
                other => other,
            };
            match result {
                Ok(()) => return Ok(principal),
                Err(e) => reason = describe(e, &trust.anchors.label),
            }
        }
        Err(IdentityError::Untrusted { principal, reason })
    }
}

/// The one email address a certificate's subject alternative name gives, as a principal
/// (lowercased). The certificate is DER, or PEM.
pub fn certificate_email(cert: &[u8]) -> Result<String, IdentityError> {
    let pem;
    let der = if cert.starts_with(b"-----BEGIN") {
        pem = x509_cert::der::pem::decode_vec(cert.trim_ascii())
            .map_err(|e| IdentityError::Malformed(format!("PEM: {e}")))?
            .1;
        &pem[..]
    } else {
        cert
    };
    let cert = Certificate::from_der(der).map_err(|e| IdentityError::Malformed(e.to_string()))?;
    let san = cert
        .tbs_certificate()
        .get_extension::<SubjectAltName>()
        .map_err(|e| IdentityError::Malformed(format!("subject alternative name: {e}")))?;
    let mut emails: Vec<String> = Vec::new();
    for name in san.iter().flat_map(|(_, san)| san.0.iter()) {
        if let GeneralName::Rfc822Name(email) = name {
            let email = email.to_string().to_ascii_lowercase();
            if !emails.contains(&email) {
                emails.push(email);
            }
        }
    }
    match &emails[..] {
        [] => Err(IdentityError::NoPrincipal(
            "no email address in its subject alternative name".into(),
        )),
        [one] => {
            let (local, domain) = one.rsplit_once('@').unwrap_or(("", ""));
            let valid = !local.is_empty()
                && !domain.is_empty()
                && !one.contains('*')
                && !one.chars().any(|c| c.is_whitespace() || c.is_control());
            if valid {
                Ok(one.clone())
            } else {
                Err(IdentityError::NoPrincipal(format!(
                    "{one:?} is not a reader's address"
                )))
            }
        }
        many => Err(IdentityError::NoPrincipal(format!(
            "it names {} addresses ({}); a reader's certificate names one",
            many.len(),
            many.join(", ")
        ))),
    }
}

/// A chain failure in words, naming the CA it was checked against.
fn describe(e: webpki::Error, label: &str) -> String {
    match e {
        webpki::Error::UnknownIssuer | webpki::Error::InvalidSignatureForPublicKey => {
            format!("it does not chain to {label}")
        }
        webpki::Error::CertExpired { .. } => "it has expired".into(),
        webpki::Error::CertNotValidYet { .. } => "it is not valid yet".into(),
        e if wrong_purpose(&e) => {
            "it is for neither email protection nor client authentication".into()
        }
        other => format!("{other:?} (checked against {label})"),
    }
}

/// The certificate's extended key usage does not allow the use asked for.
#[allow(deprecated)] // webpki reports either variant
fn wrong_purpose(e: &webpki::Error) -> bool {
    matches!(
        e,
        webpki::Error::RequiredEkuNotFound | webpki::Error::RequiredEkuNotFoundContext(_)
    )
}

#[cfg(test)]
mod tests;

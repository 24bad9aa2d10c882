//! The one check of a peer's certificate chain (key strength, chain, names), used inside the
//! handshake by `ConnectorVerifier` and after it by `TlsPolicy::authorize`, and the check of an
//! inbound client's certificate.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::failure::CertificateFailure;
use super::fingerprint::Fingerprint;
use super::policy::{TlsLevel, TrustAnchors};
use super::MIN_RSA_BITS;

/// What a destination demands of its peer's certificate.
#[derive(Clone)]
pub struct PeerCheck {
    pub level: TlsLevel,
    /// Names the certificate may carry under VerifyName; empty: the host connected to.
    pub names: Vec<String>,
    /// Trust anchors under VerifyCa and VerifyName; None: the public roots.
    pub anchors: Option<TrustAnchors>,
    /// Under Fingerprint: the pins, one of which the certificate must match.
    pub fingerprints: Vec<Fingerprint>,
}

impl fmt::Debug for PeerCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerCheck")
            .field("level", &self.level)
            .field("names", &self.names)
            .field("anchors", &self.anchors.as_ref().map(|a| a.label.as_str()))
            .field("fingerprints", &self.fingerprints)
            .finish()
    }
}

impl PeerCheck {
    /// A check at `level` with no names, anchors or pins.
    pub fn level(level: TlsLevel) -> PeerCheck {
        PeerCheck {
            level,
            names: Vec::new(),
            anchors: None,
            fingerprints: Vec::new(),
        }
    }

    /// The one check of a peer's certificate chain: key strength for Required and above, a pin
    /// for Fingerprint, chain to the anchors for VerifyCa, and one of the names for
    /// VerifyName. Returns what was verified.
    pub fn verify(
        &self,
        chain: &[CertificateDer<'static>],
        host: &str,
    ) -> Result<String, CertificateFailure> {
        check_chain(self, chain, host)
    }
}

/// [`PeerCheck::verify`] for the levels that need no pins.
pub fn check_peer(
    level: TlsLevel,
    names: &[String],
    anchors: Option<&TrustAnchors>,
    chain: &[CertificateDer<'static>],
    host: &str,
) -> Result<String, CertificateFailure> {
    let check = PeerCheck {
        level,
        names: names.to_vec(),
        anchors: anchors.cloned(),
        fingerprints: Vec::new(),
    };
    check.verify(chain, host)
}

fn check_chain(
    check: &PeerCheck,
    chain: &[CertificateDer<'static>],
    host: &str,
) -> Result<String, CertificateFailure> {
    let (level, names) = (check.level, &check.names);
    let Some((end_entity, intermediates)) = chain.split_first() else {
        return Err(CertificateFailure::Missing);
    };
    let bits = rsa_bits(end_entity)?;
    if let Some(bits) = bits.filter(|&b| b < MIN_RSA_BITS) {
        return Err(CertificateFailure::WeakKey { bits });
    }
    if level == TlsLevel::Fingerprint {
        return match check.fingerprints.iter().find(|p| p.matches(end_entity)) {
            Some(pin) => Ok(format!("certificate matches pinned {pin}")),
            None => Err(CertificateFailure::PinMismatch {
                certificate: Fingerprint::of_certificate(end_entity).to_string(),
                public_key: Fingerprint::of_public_key(end_entity)
                    .map_err(CertificateFailure::Malformed)?
                    .to_string(),
            }),
        };
    }
    if level < TlsLevel::VerifyCa {
        return Ok("encrypted, certificate not verified".into());
    }
    let anchors = check.anchors.clone().unwrap_or_else(TrustAnchors::system);
    let verifier =
        WebPkiServerVerifier::builder_with_provider(anchors.roots.clone(), super::provider())
            .build()
            .map_err(|e| CertificateFailure::NoUsableAnchors(e.to_string()))?;
    let wanted: Vec<String> = if names.is_empty() {
        vec![host.to_string()]
    } else {
        names.to_vec()
    };
    let mut last = CertificateFailure::Missing;
    for name in &wanted {
        let Ok(server_name) = ServerName::try_from(name.clone()) else {
            last = CertificateFailure::InvalidName(name.clone());
            continue;
        };
        match verifier.verify_server_cert(
            end_entity,
            intermediates,
            &server_name,
            &[],
            UnixTime::now(),
        ) {
            Ok(_) => return Ok(format!("verified {name} via {}", anchors.label)),
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) if level == TlsLevel::VerifyCa => {
                return Ok(format!(
                    "verified chain via {} (name not checked)",
                    anchors.label
                ));
            }
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => {
                last = CertificateFailure::NameMismatch {
                    wanted: wanted.join(" or "),
                }
            }
            // An issuer of the same name but another key shows as a bad signature.
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer | rustls::CertificateError::BadSignature,
            )) => {
                return Err(CertificateFailure::Untrusted {
                    anchors: anchors.label.clone(),
                });
            }
            Err(rustls::Error::InvalidCertificate(e)) => {
                return Err(CertificateFailure::from_rustls(&e))
            }
            Err(e) => return Err(CertificateFailure::Rejected(e.to_string())),
        }
    }
    Err(last)
}

/// Checks a TLS client's certificate chain against an inbound connector's CA and names.
pub fn check_client(
    chain: &[CertificateDer<'static>],
    anchors: &TrustAnchors,
    names: &[String],
) -> Result<String, String> {
    let Some((end_entity, intermediates)) = chain.split_first() else {
        return Err("no client certificate presented".into());
    };
    let bits = rsa_bits(end_entity).map_err(|e| e.to_string())?;
    if let Some(bits) = bits.filter(|&b| b < MIN_RSA_BITS) {
        return Err(format!(
            "client certificate has a {bits}-bit RSA key (minimum {MIN_RSA_BITS})"
        ));
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        anchors.roots.clone(),
        super::provider(),
    )
    .build()
    .map_err(|e| format!("no usable trust anchors: {e}"))?;
    verifier
        .verify_client_cert(end_entity, intermediates, UnixTime::now())
        .map_err(|e| match e {
            rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer | rustls::CertificateError::BadSignature,
            ) => {
                format!("client certificate does not chain to {}", anchors.label)
            }
            other => format!("client certificate rejected: {other}"),
        })?;
    let ee = webpki::EndEntityCert::try_from(end_entity)
        .map_err(|e| format!("unreadable client certificate: {e:?}"))?;
    for name in names {
        if let Ok(server_name) = ServerName::try_from(name.clone()) {
            if ee.verify_is_valid_for_subject_name(&server_name).is_ok() {
                return Ok(format!(
                    "client certificate verified {name} via {}",
                    anchors.label
                ));
            }
        }
    }
    Err(format!(
        "client certificate does not name {}",
        names.join(" or ")
    ))
}

/// The RSA modulus size of a certificate's key, None for other key types.
pub(super) fn rsa_bits(cert: &CertificateDer<'_>) -> Result<Option<usize>, CertificateFailure> {
    let ee = webpki::EndEntityCert::try_from(cert).map_err(|e| {
        CertificateFailure::Malformed(format!("unreadable peer certificate: {e:?}"))
    })?;
    let spki = ee.subject_public_key_info();
    const RSA_OID: &[u8] = &[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
    ];
    if !spki.as_ref().windows(RSA_OID.len()).any(|w| w == RSA_OID) {
        return Ok(None);
    }
    // SubjectPublicKeyInfo ::= SEQUENCE { algorithm, BIT STRING { RSAPublicKey ::= SEQUENCE { n, e } } }
    modulus_bits(spki.as_ref()).map(Some).ok_or_else(|| {
        CertificateFailure::Malformed("malformed RSA public key in peer certificate".into())
    })
}

/// Reads one DER header at `pos`: (tag, content start, content length).
fn der_header(der: &[u8], pos: usize) -> Option<(u8, usize, usize)> {
    let tag = *der.get(pos)?;
    let first = *der.get(pos + 1)? as usize;
    if first < 0x80 {
        return Some((tag, pos + 2, first));
    }
    let n = first & 0x7f;
    if n == 0 || n > 4 {
        return None;
    }
    let len = der
        .get(pos + 2..pos + 2 + n)?
        .iter()
        .fold(0usize, |a, &b| (a << 8) | b as usize);
    Some((tag, pos + 2 + n, len))
}

pub(crate) fn modulus_bits(spki: &[u8]) -> Option<usize> {
    let (_, body, _) = der_header(spki, 0)?; // SubjectPublicKeyInfo
    let (_, alg_start, alg_len) = der_header(spki, body)?; // AlgorithmIdentifier
    let (tag, bits_start, _) = der_header(spki, alg_start + alg_len)?; // BIT STRING
    if tag != 0x03 {
        return None;
    }
    let (_, rsa_start, _) = der_header(spki, bits_start + 1)?; // RSAPublicKey (after unused-bits byte)
    let (tag, n_start, n_len) = der_header(spki, rsa_start)?; // modulus INTEGER
    if tag != 0x02 {
        return None;
    }
    let n = spki.get(n_start..n_start + n_len)?;
    let significant = n.iter().position(|&b| b != 0).map(|i| &n[i..])?;
    Some(significant.len() * 8 - significant[0].leading_zeros() as usize)
}

/// The handshake verifier of a connector: in enforce mode it fails the handshake when
/// `check_peer` fails (nothing is sent after a failed check); otherwise it accepts and the check
/// runs again after the handshake, for the audit log.
#[derive(Debug)]
pub struct ConnectorVerifier {
    check: PeerCheck,
    enforce: bool,
    provider: Arc<CryptoProvider>,
}

impl ConnectorVerifier {
    pub fn new(check: PeerCheck, enforce: bool) -> Self {
        ConnectorVerifier {
            check,
            enforce,
            provider: super::provider(),
        }
    }
}

impl ServerCertVerifier for ConnectorVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if !self.enforce || self.check.level == TlsLevel::Opportunistic {
            return Ok(ServerCertVerified::assertion());
        }
        let chain: Vec<CertificateDer<'static>> = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.clone().into_owned())
            .collect();
        let host = server_name.to_str();
        self.check
            .verify(&chain, &host)
            .map(|_| ServerCertVerified::assertion())
            .map_err(CertificateFailure::into_rustls)
    }

    handshake_signature_checks!();
}

/// The handshake verifier of a DANE policy: when enforcing, the handshake fails unless the
/// chain matches the TLSA records (`DaneCheck::verify`); otherwise it accepts and
/// `TlsPolicy::authorize` checks again after the handshake, for the audit log.
#[derive(Debug)]
pub struct DaneVerifier {
    check: Arc<super::policy::DaneCheck>,
    enforce: bool,
    provider: Arc<CryptoProvider>,
}

impl DaneVerifier {
    pub fn new(check: Arc<super::policy::DaneCheck>, enforce: bool) -> Self {
        DaneVerifier {
            check,
            enforce,
            provider: super::provider(),
        }
    }
}

impl ServerCertVerifier for DaneVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if !self.enforce {
            return Ok(ServerCertVerified::assertion());
        }
        let chain: Vec<CertificateDer<'_>> = std::iter::once(end_entity)
            .chain(intermediates)
            .cloned()
            .collect();
        self.check
            .verify(&chain)
            .map(|_| ServerCertVerified::assertion())
            .map_err(CertificateFailure::into_rustls)
    }

    handshake_signature_checks!();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/pki")
            .join(name)
    }

    fn chain(host: &str) -> Vec<CertificateDer<'static>> {
        crate::tls::load_certified_key(
            &fixture(&format!("{host}.crt")),
            &fixture(&format!("{host}.key")),
        )
        .unwrap()
        .chain
    }

    fn anchors() -> TrustAnchors {
        crate::tls::load_trust_anchors(&fixture("ca.crt")).unwrap()
    }

    #[test]
    fn check_peer_verifies_chain_and_names() {
        let fab = chain("mx.fabrikam.test");
        let a = Some(anchors());
        let ok = check_peer(
            TlsLevel::VerifyName,
            &[],
            a.as_ref(),
            &fab,
            "mx.fabrikam.test",
        )
        .unwrap();
        assert_eq!(ok, "verified mx.fabrikam.test via ca.crt");
        let names = vec!["other.test".to_string(), "mx.fabrikam.test".to_string()];
        assert!(check_peer(TlsLevel::VerifyName, &names, a.as_ref(), &fab, "127.0.0.1").is_ok());
        let e = check_peer(
            TlsLevel::VerifyName,
            &[],
            a.as_ref(),
            &fab,
            "mx.contoso.test",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "peer certificate does not name mx.contoso.test"
        );
        // verify-ca ignores the name.
        assert!(check_peer(TlsLevel::VerifyCa, &[], a.as_ref(), &fab, "mx.contoso.test").is_ok());
        // Unknown CA: the public roots do not know the test CA.
        let e = check_peer(TlsLevel::VerifyCa, &[], None, &fab, "mx.fabrikam.test").unwrap_err();
        assert_eq!(
            e.to_string(),
            "peer certificate does not chain to system roots"
        );
        assert!(check_peer(TlsLevel::Required, &[], None, &fab, "x").is_ok());
        assert!(check_peer(TlsLevel::Required, &[], None, &[], "x").is_err());
    }

    #[test]
    fn client_certificates_are_checked_against_ca_and_names() {
        let contoso = chain("mx.contoso.test");
        let a = anchors();
        let names = vec!["mx.contoso.test".to_string()];
        assert_eq!(
            check_client(&contoso, &a, &names).unwrap(),
            "client certificate verified mx.contoso.test via ca.crt"
        );
        let e = check_client(&chain("mx.fabrikam.test"), &a, &names).unwrap_err();
        assert_eq!(e, "client certificate does not name mx.contoso.test");
        assert_eq!(
            check_client(&[], &a, &names).unwrap_err(),
            "no client certificate presented"
        );
        let e = check_client(&contoso, &TrustAnchors::system(), &names).unwrap_err();
        assert_eq!(e, "client certificate does not chain to system roots");
    }

    #[test]
    fn modulus_size_is_read_from_the_certificate() {
        assert_eq!(rsa_bits(&chain("mx.fabrikam.test")[0]).unwrap(), Some(2048));
    }
}

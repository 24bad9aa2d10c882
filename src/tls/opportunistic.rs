//! The certificate verifier for opportunistic TLS: any certificate, but a correctly signed handshake.

use std::sync::Arc;

use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// Accepts any server certificate (encryption without authentication, like Postfix `may` and
/// `encrypt`); the handshake signature is still verified against the presented certificate.
#[derive(Debug)]
pub struct AcceptAnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl AcceptAnyCertificate {
    pub fn new(provider: Arc<CryptoProvider>) -> Self {
        AcceptAnyCertificate { provider }
    }
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    handshake_signature_checks!();
}

/// Asks TLS clients for a certificate without requiring one, and accepts whatever they present
/// (after checking the handshake signature). Inbound connectors then verify the chain against
/// their own CA and names, so one listener serves partners with different CAs.
#[derive(Debug)]
pub struct RequestAnyClientCertificate {
    provider: Arc<CryptoProvider>,
}

impl RequestAnyClientCertificate {
    pub fn new(provider: Arc<CryptoProvider>) -> Self {
        RequestAnyClientCertificate { provider }
    }
}

impl rustls::server::danger::ClientCertVerifier for RequestAnyClientCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    handshake_signature_checks!();
}

//! TLS: rustls configurations, certificate and key loading, and the facts recorded about a session.

/// The handshake-signature methods every certificate verifier here shares: whatever a
/// verifier decides about the certificate, the handshake must be signed by its key, checked with
/// the provider's algorithms (`self.provider`).
macro_rules! handshake_signature_checks {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &rustls_pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            let algorithms = &self.provider.signature_verification_algorithms;
            rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls_pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            let algorithms = &self.provider.signature_verification_algorithms;
            rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}

pub mod dane;
pub mod failure;
pub mod fingerprint;
pub mod inspect;
pub mod mta_sts;
mod opportunistic;
mod peer;
pub mod policy;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, CommonState, ProtocolVersion, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

pub use crate::crypto::keys::MIN_RSA_BITS;

/// The lowest TLS version a listener or connector accepts (`min_tls_version`): 1.2 or 1.3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsMinVersion {
    Tls12,
    Tls13,
}

/// What a TLS session negotiated, as written in Received headers and logs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsFacts {
    /// "TLSv1.3" or "TLSv1.2".
    pub version: String,
    /// The IANA suite name, e.g. "TLS_AES_256_GCM_SHA384".
    pub cipher: String,
    /// The certificate chain the peer presented (the server's, or a client's if it sent one),
    /// not yet verified: policies check it against their own trust anchors.
    #[serde(skip)]
    pub peer_certificates: Vec<CertificateDer<'static>>,
    /// Whether the handshake resumed an earlier session (no certificate signature made or
    /// checked; the certificates are those of the session resumed).
    #[serde(skip)]
    pub resumed: bool,
}

impl TlsFacts {
    /// Facts without a peer certificate.
    pub fn new(version: impl Into<String>, cipher: impl Into<String>) -> TlsFacts {
        TlsFacts {
            version: version.into(),
            cipher: cipher.into(),
            peer_certificates: Vec::new(),
            resumed: false,
        }
    }

    /// Reads version and cipher off an established connection.
    pub fn from_connection(conn: &CommonState) -> TlsFacts {
        let version = match conn.protocol_version() {
            Some(ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
            Some(ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
            Some(other) => format!("{other:?}"),
            None => "unknown".to_string(),
        };
        let cipher = conn
            .negotiated_cipher_suite()
            .map(|s| {
                let name = s
                    .suite()
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{:?}", s.suite()));
                iana_suite_name(name)
            })
            .unwrap_or_else(|| "unknown".to_string());
        let peer_certificates = conn
            .peer_certificates()
            .map(<[_]>::to_vec)
            .unwrap_or_default();
        TlsFacts {
            version,
            cipher,
            peer_certificates,
            resumed: conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
        }
    }
}

/// rustls names TLS 1.3 suites "TLS13_…"; the IANA (and Postfix) name is "TLS_…".
fn iana_suite_name(rustls_name: String) -> String {
    match rustls_name.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{rest}"),
        None => rustls_name,
    }
}

impl std::fmt::Display for TlsFacts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} with cipher {}", self.version, self.cipher)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {problem}")]
    File { path: PathBuf, problem: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn file_err(path: &Path, problem: impl Into<String>) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// The crypto provider used everywhere: aws-lc-rs, whose default suites are all forward-secret AEAD.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A certificate chain and its private key, loaded from PEM files and checked.
pub struct CertifiedKey {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for CertifiedKey {
    /// The chain's length only: key bytes never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertifiedKey")
            .field("chain", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// Loads a PEM certificate chain and private key; RSA keys under 2048 bits are refused.
pub fn load_certified_key(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| file_err(cert_path, format!("cannot read certificate: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(cert_path, format!("bad PEM certificate: {e}")))?;
    if chain.is_empty() {
        return Err(file_err(cert_path, "no certificate found"));
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| file_err(key_path, format!("cannot load private key: {e}")))?;
    check_key_strength(&key).map_err(|p| file_err(key_path, p))?;
    let signing = provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| file_err(key_path, format!("unusable private key: {e}")))?;
    // The certificate must belong to the key.
    let certified = rustls::sign::CertifiedKey::new(chain.clone(), signing);
    certified.keys_match().map_err(|e| {
        file_err(
            cert_path,
            format!("certificate does not match {}: {e}", key_path.display()),
        )
    })?;
    // Peers judge us by the chain we send: no MD5 or SHA-1 signatures in it.
    for cert in &chain {
        let summary = inspect::summarize(cert).map_err(|e| file_err(cert_path, e))?;
        if summary.weak_signature {
            let problem = format!(
                "{} is signed with {} (weak)",
                summary.subject, summary.signature
            );
            return Err(file_err(cert_path, problem));
        }
    }
    Ok(CertifiedKey { chain, key })
}

/// Refuses RSA keys under `MIN_RSA_BITS`. Other key types (ECDSA P-256/P-384, Ed25519) pass.
fn check_key_strength(key: &PrivateKeyDer<'_>) -> Result<(), String> {
    use crate::crypto::keys::{rsa_pkcs1_bits, rsa_pkcs8_bits, rsa_refusal};
    use aws_lc_rs::rsa::KeyPair;
    let (parsed, bits) = match key {
        PrivateKeyDer::Pkcs1(k) => {
            let der = k.secret_pkcs1_der();
            (KeyPair::from_der(der), rsa_pkcs1_bits(der))
        }
        // Only RSA PKCS#8 keys are measured here; others are not RSA.
        PrivateKeyDer::Pkcs8(k) if is_rsa_pkcs8(k.secret_pkcs8_der()) => {
            let der = k.secret_pkcs8_der();
            (KeyPair::from_pkcs8(der), rsa_pkcs8_bits(der))
        }
        _ => return Ok(()),
    };
    let kp = parsed.map_err(|e| rsa_refusal(bits, &e))?;
    let modulus_bits = kp.public_modulus_len() * 8;
    if modulus_bits < MIN_RSA_BITS {
        return Err(rsa_refusal(Some(modulus_bits), &"too small"));
    }
    Ok(())
}

/// rsaEncryption OID 1.2.840.113549.1.1.1 appears in the AlgorithmIdentifier of an RSA PKCS#8 key.
fn is_rsa_pkcs8(der: &[u8]) -> bool {
    const RSA_OID: &[u8] = &[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
    ];
    der.windows(RSA_OID.len()).take(32).any(|w| w == RSA_OID)
}

fn versions(min: TlsMinVersion) -> &'static [&'static rustls::SupportedProtocolVersion] {
    static BOTH: [&rustls::SupportedProtocolVersion; 2] =
        [&rustls::version::TLS13, &rustls::version::TLS12];
    static ONLY13: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    match min {
        TlsMinVersion::Tls12 => &BOTH,
        TlsMinVersion::Tls13 => &ONLY13,
    }
}

/// The inbound STARTTLS configuration: TLS 1.2+ (or 1.3 only). With `ask_client_certificate`
/// clients are asked for a certificate (not required); inbound connectors check it.
///
/// Clients resume sessions either way: by session id or stateful TLS 1.3 ticket from a bounded
/// in-memory cache, and with `session_tickets` by stateless tickets, sealed under keys that
/// live in this process's memory only and rotate every 6 hours (tickets are valid 12 hours).
/// A resumed session skips the certificate signature, the dearest part of a handshake.
pub fn server_config(
    key: &CertifiedKey,
    min: TlsMinVersion,
    ask_client_certificate: bool,
    session_tickets: bool,
) -> Result<Arc<ServerConfig>, TlsError> {
    let builder =
        ServerConfig::builder_with_provider(provider()).with_protocol_versions(versions(min))?;
    let builder = if ask_client_certificate {
        let verifier = opportunistic::RequestAnyClientCertificate::new(provider());
        builder.with_client_cert_verifier(Arc::new(verifier))
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder.with_single_cert(key.chain.clone(), key.key.clone_key())?;
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE_SIZE);
    if session_tickets {
        config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    }
    Ok(Arc::new(config))
}

/// Sessions the server remembers for resumption by id (TLS 1.2) or stateful ticket (TLS 1.3
/// without `session_tickets`): a few hundred bytes each.
const SESSION_CACHE_SIZE: usize = 4096;

/// A client configuration that accepts any certificate and speaks only `version`: the probes of
/// `tls-check`.
pub fn probe_client_config(
    version: &'static rustls::SupportedProtocolVersion,
) -> Arc<ClientConfig> {
    let provider = provider();
    let verifier = Arc::new(opportunistic::AcceptAnyCertificate::new(provider.clone()));
    match ClientConfig::builder_with_provider(provider).with_protocol_versions(&[version]) {
        Ok(b) => Arc::new(
            b.dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth(),
        ),
        Err(_) => opportunistic_client_config(),
    }
}

/// The outbound configuration for opportunistic TLS (Postfix `may`): encrypt whatever the peer's
/// certificate, while still checking that the handshake is signed by that certificate's key.
pub fn opportunistic_client_config() -> Arc<ClientConfig> {
    let provider = provider();
    let verifier = Arc::new(opportunistic::AcceptAnyCertificate::new(provider.clone()));
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions(TlsMinVersion::Tls12))
        .map(|b| {
            b.dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth()
        });
    match config {
        Ok(c) => Arc::new(c),
        // The aws-lc-rs provider supports both versions; this cannot fail with it.
        Err(e) => unreachable!("aws-lc-rs provider rejected TLS 1.2/1.3: {e}"),
    }
}

/// Loads PEM CA certificates as trust anchors, labelled with the file name for logs.
pub fn load_trust_anchors(path: &Path) -> Result<policy::TrustAnchors, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path, format!("cannot read CA certificates: {e}")))?;
    for cert in certs {
        let cert = cert.map_err(|e| file_err(path, format!("bad PEM certificate: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| file_err(path, format!("unusable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(file_err(path, "no CA certificate found"));
    }
    let label = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(policy::TrustAnchors {
        roots: Arc::new(roots),
        label,
    })
}

/// The handshake configuration of an outbound connector: its verifier (enforcing unless the
/// connector only audits) and, for mutual TLS, the certificate it presents.
pub fn connector_client_config(
    verifier: Arc<policy::ConnectorVerifier>,
    min: TlsMinVersion,
    client_key: Option<&CertifiedKey>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(min))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match client_key {
        Some(k) => builder.with_client_auth_cert(k.chain.clone(), k.key.clone_key())?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generated_pki_loads_and_keys_are_private() {
        let dir = tempfile::tempdir().unwrap();
        crate::crypto::pki::generate(dir.path(), &["mx.one.test"]).unwrap();
        let key = load_certified_key(
            &dir.path().join("mx.one.test.crt"),
            &dir.path().join("mx.one.test.key"),
        )
        .unwrap();
        assert_eq!(key.chain.len(), 1);
        let mode = std::fs::metadata(dir.path().join("mx.one.test.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mode = std::fs::metadata(dir.path().join("ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // A certificate paired with another host's key is refused.
        let e = load_certified_key(
            &dir.path().join("ca.crt"),
            &dir.path().join("mx.one.test.key"),
        );
        assert!(e.is_err());
    }

    #[test]
    fn tls13_suite_names_are_iana_names() {
        assert_eq!(
            iana_suite_name("TLS13_AES_256_GCM_SHA384".into()),
            "TLS_AES_256_GCM_SHA384"
        );
        let tls12 = "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384";
        assert_eq!(iana_suite_name(tls12.into()), tls12);
    }

    #[test]
    fn default_suites_are_forward_secret_aead() {
        for suite in provider().cipher_suites.iter() {
            let name = suite.suite().as_str().unwrap_or("");
            assert!(
                name.starts_with("TLS13_") || name.starts_with("TLS_ECDHE_"),
                "{name} is not forward secret"
            );
            assert!(
                name.contains("GCM") || name.contains("CHACHA20_POLY1305"),
                "{name} is not AEAD"
            );
        }
    }
}

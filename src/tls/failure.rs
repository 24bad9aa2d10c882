//! Why TLS did not happen or was not good enough, as typed values. Everything that reads a TLS
//! failure reads a kind, never the text of a message: the metric label, the enhanced status code
//! of the deferral, and the RFC 8460 result type (TLS-RPT) are each mapped once, here.

use std::fmt;
use std::sync::Arc;

use super::MIN_RSA_BITS;

/// What went wrong with TLS toward (or from) a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsFailure {
    /// The peer's EHLO did not offer STARTTLS.
    NoStartTls,
    /// The peer answered STARTTLS with an error reply (the reply, as sent).
    StartTlsRefused(String),
    /// The peer sent plaintext after its 220 to STARTTLS (response injection); discarded.
    PlaintextAfterStartTls,
    /// A connection without TLS where a policy demands TLS.
    NotEncrypted,
    /// The name to check is not a valid TLS server name.
    InvalidServerName(String),
    /// The handshake did not finish in time.
    Timeout,
    /// No protocol version or cipher suite in common (rustls `PeerIncompatible`).
    Incompatible(String),
    /// The peer sent a fatal alert.
    Alert(String),
    /// The connection closed or was reset during the handshake.
    ConnectionClosed(String),
    /// Another handshake failure, in the TLS library's words.
    Handshake(String),
    /// The peer's certificate does not pass the checks.
    Certificate(CertificateFailure),
}

/// Why a peer certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateFailure {
    /// The peer presented no certificate.
    Missing,
    /// The chain does not lead to the trust anchors (named by their label).
    Untrusted {
        anchors: String,
    },
    /// The certificate is valid for none of the names wanted (joined with " or ").
    NameMismatch {
        wanted: String,
    },
    /// None of the names wanted could be checked: each is an invalid server name (the last).
    InvalidName(String),
    Expired,
    NotValidYet,
    Revoked,
    /// Signed with an algorithm that is not accepted (e.g. SHA-1).
    WeakSignature,
    /// A CA certificate (CA:TRUE) presented as the server certificate.
    CaAsEndEntity,
    NotV3,
    /// An RSA key under [`MIN_RSA_BITS`].
    WeakKey {
        bits: usize,
    },
    /// Fingerprint pinning: the certificate matches no pin (its two fingerprints, as text).
    PinMismatch {
        certificate: String,
        public_key: String,
    },
    /// DANE: the certificate chain matches none of the usable TLSA records (the detail).
    DaneMismatch(String),
    /// The trust anchors configured cannot be used.
    NoUsableAnchors(String),
    /// The certificate cannot be parsed (the detail, as a sentence).
    Malformed(String),
    /// Rejected for another reason (the library's reason).
    Rejected(String),
}

impl TlsFailure {
    /// The `reason` label of `sealpost_tls_failures_total`.
    pub fn metric_class(&self) -> &'static str {
        match self {
            TlsFailure::NoStartTls
            | TlsFailure::StartTlsRefused(_)
            | TlsFailure::PlaintextAfterStartTls => "no_starttls",
            TlsFailure::Timeout => "timeout",
            TlsFailure::Certificate(_) | TlsFailure::InvalidServerName(_) => "certificate",
            TlsFailure::Incompatible(_) => "incompatible",
            TlsFailure::Alert(_) => "alert",
            TlsFailure::ConnectionClosed(_) => "connection_closed",
            TlsFailure::NotEncrypted | TlsFailure::Handshake(_) => "other",
        }
    }

    /// The enhanced status code of the deferral when a policy demanded TLS: 4.7.4 when there
    /// was no TLS at all, 4.7.5 when TLS failed or its certificate did not pass.
    pub fn enhanced(&self) -> [u16; 3] {
        match self {
            TlsFailure::NoStartTls | TlsFailure::NotEncrypted => [4, 7, 4],
            _ => [4, 7, 5],
        }
    }

    /// The RFC 8460 §4.3 result type a TLS-RPT report gives this failure.
    pub fn tlsrpt_result_type(&self) -> &'static str {
        use CertificateFailure as C;
        match self {
            TlsFailure::NoStartTls
            | TlsFailure::StartTlsRefused(_)
            | TlsFailure::PlaintextAfterStartTls
            | TlsFailure::NotEncrypted => "starttls-not-supported",
            TlsFailure::Certificate(C::NameMismatch { .. } | C::InvalidName(_))
            | TlsFailure::InvalidServerName(_) => "certificate-host-mismatch",
            TlsFailure::Certificate(C::Expired | C::NotValidYet) => "certificate-expired",
            TlsFailure::Certificate(C::DaneMismatch(_)) => "tlsa-invalid",
            TlsFailure::Certificate(_) => "certificate-not-trusted",
            TlsFailure::Timeout
            | TlsFailure::Incompatible(_)
            | TlsFailure::Alert(_)
            | TlsFailure::ConnectionClosed(_)
            | TlsFailure::Handshake(_) => "validation-failure",
        }
    }

    /// Classifies a failed handshake (the I/O error tokio-rustls returns). A certificate check
    /// of ours that failed inside the handshake comes back as the `CertificateFailure` it was.
    pub fn from_handshake(e: &std::io::Error) -> TlsFailure {
        use std::io::ErrorKind as K;
        match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(rustls::Error::InvalidCertificate(c)) => {
                TlsFailure::Certificate(CertificateFailure::from_rustls(c))
            }
            Some(rustls::Error::General(reason)) => TlsFailure::Handshake(reason.clone()),
            Some(rustls::Error::PeerIncompatible(_)) => {
                TlsFailure::Incompatible(e.get_ref().map(|i| i.to_string()).unwrap_or_default())
            }
            Some(rustls::Error::AlertReceived(_)) => {
                TlsFailure::Alert(e.get_ref().map(|i| i.to_string()).unwrap_or_default())
            }
            Some(other) => TlsFailure::Handshake(other.to_string()),
            None => match e.kind() {
                K::UnexpectedEof | K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => {
                    TlsFailure::ConnectionClosed(e.to_string())
                }
                K::TimedOut => TlsFailure::Timeout,
                _ => TlsFailure::Handshake(e.to_string()),
            },
        }
    }
}

impl CertificateFailure {
    /// Reads a rustls certificate error, including a `CertificateFailure` of ours carried
    /// through the handshake (see [`CertificateFailure::into_rustls`]).
    pub fn from_rustls(e: &rustls::CertificateError) -> CertificateFailure {
        use rustls::CertificateError as E;
        let other = match e {
            E::Other(other) => Some(&other.0),
            _ => None,
        };
        if let Some(ours) = other.and_then(|o| o.downcast_ref::<CertificateFailure>()) {
            return ours.clone();
        }
        match (e, other.and_then(|o| o.downcast_ref::<webpki::Error>())) {
            (_, Some(webpki::Error::CaUsedAsEndEntity)) => CertificateFailure::CaAsEndEntity,
            (E::Expired | E::ExpiredContext { .. }, _) => CertificateFailure::Expired,
            (E::NotValidYet | E::NotValidYetContext { .. }, _) => CertificateFailure::NotValidYet,
            (E::Revoked, _) => CertificateFailure::Revoked,
            (E::UnsupportedSignatureAlgorithmContext { .. }, _) => {
                CertificateFailure::WeakSignature
            }
            (_, Some(webpki::Error::UnsupportedCertVersion)) => CertificateFailure::NotV3,
            (_, Some(other)) => CertificateFailure::Rejected(format!("{other:?}")),
            (other, None) => CertificateFailure::Rejected(format!("{other:?}")),
        }
    }

    /// The failure as a rustls error, for a verifier that fails the handshake: it keeps its
    /// kind through rustls and comes back out of [`TlsFailure::from_handshake`].
    pub fn into_rustls(self) -> rustls::Error {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
            Arc::new(self),
        )))
    }
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsFailure::NoStartTls => write!(f, "peer did not offer STARTTLS"),
            TlsFailure::StartTlsRefused(reply) => write!(f, "STARTTLS refused: {reply}"),
            TlsFailure::PlaintextAfterStartTls => {
                write!(
                    f,
                    "server sent plaintext after its STARTTLS reply (discarded)"
                )
            }
            TlsFailure::NotEncrypted => write!(f, "connection is not encrypted"),
            TlsFailure::InvalidServerName(name) => write!(f, "invalid server name {name:?}"),
            TlsFailure::Timeout => write!(f, "handshake timed out"),
            TlsFailure::Incompatible(text)
            | TlsFailure::Alert(text)
            | TlsFailure::ConnectionClosed(text)
            | TlsFailure::Handshake(text) => write!(f, "{text}"),
            TlsFailure::Certificate(c) => write!(f, "{c}"),
        }
    }
}

impl fmt::Display for CertificateFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertificateFailure::Missing => write!(f, "peer presented no certificate"),
            CertificateFailure::Untrusted { anchors } => {
                write!(f, "peer certificate does not chain to {anchors}")
            }
            CertificateFailure::NameMismatch { wanted } => {
                write!(f, "peer certificate does not name {wanted}")
            }
            CertificateFailure::InvalidName(name) => write!(f, "invalid name {name:?}"),
            CertificateFailure::Expired => write!(f, "peer certificate has expired"),
            CertificateFailure::NotValidYet => {
                write!(f, "peer certificate is not valid yet (check both clocks)")
            }
            CertificateFailure::Revoked => write!(f, "peer certificate has been revoked"),
            CertificateFailure::WeakSignature => write!(
                f,
                "peer certificate is signed with an algorithm that is not accepted (e.g. SHA-1)"
            ),
            CertificateFailure::CaAsEndEntity => write!(
                f,
                "the partner presents a CA certificate as its server certificate (CA:TRUE, as a \
                 plain `openssl req -x509` makes): pin its fingerprint with tls = \
                 \"fingerprint\", or ask for a certificate with CA:FALSE"
            ),
            CertificateFailure::NotV3 => {
                write!(f, "peer certificate is not an X.509 v3 certificate")
            }
            CertificateFailure::WeakKey { bits } => write!(
                f,
                "peer certificate has a {bits}-bit RSA key (minimum {MIN_RSA_BITS})"
            ),
            CertificateFailure::PinMismatch {
                certificate,
                public_key,
            } => write!(
                f,
                "peer certificate matches none of the pinned fingerprints (it is {certificate}, \
                 its public key {public_key})"
            ),
            CertificateFailure::DaneMismatch(detail) => write!(f, "DANE: {detail}"),
            CertificateFailure::NoUsableAnchors(e) => write!(f, "no usable trust anchors: {e}"),
            CertificateFailure::Malformed(detail) => write!(f, "{detail}"),
            CertificateFailure::Rejected(reason) => {
                write!(f, "peer certificate rejected: {reason}")
            }
        }
    }
}

impl std::error::Error for TlsFailure {}
impl std::error::Error for CertificateFailure {}

impl From<CertificateFailure> for TlsFailure {
    fn from(c: CertificateFailure) -> TlsFailure {
        TlsFailure::Certificate(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn wrapped(e: rustls::Error) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }

    #[test]
    fn handshake_failures_get_their_metric_class() {
        let class = |e: io::Error| TlsFailure::from_handshake(&e).metric_class();
        assert_eq!(TlsFailure::Timeout.metric_class(), "timeout");
        assert_eq!(
            class(wrapped(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer
            ))),
            "certificate"
        );
        assert_eq!(
            class(wrapped(rustls::Error::PeerIncompatible(
                rustls::PeerIncompatible::Tls12NotOffered
            ))),
            "incompatible"
        );
        assert_eq!(
            class(wrapped(rustls::Error::AlertReceived(
                rustls::AlertDescription::HandshakeFailure
            ))),
            "alert"
        );
        assert_eq!(
            class(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "tls handshake eof"
            )),
            "connection_closed"
        );
        assert_eq!(class(io::Error::other("something else")), "other");
        assert_eq!(TlsFailure::NoStartTls.metric_class(), "no_starttls");
    }

    #[test]
    fn our_certificate_failure_survives_the_handshake() {
        let ours = CertificateFailure::NameMismatch {
            wanted: "mx.b.test".into(),
        };
        let back = TlsFailure::from_handshake(&wrapped(ours.clone().into_rustls()));
        assert_eq!(back, TlsFailure::Certificate(ours));
        assert_eq!(back.to_string(), "peer certificate does not name mx.b.test");
        assert_eq!(back.tlsrpt_result_type(), "certificate-host-mismatch");
        assert_eq!(back.enhanced(), [4, 7, 5]);
    }

    #[test]
    fn each_kind_maps_to_one_tlsrpt_result_type_and_status() {
        assert_eq!(
            TlsFailure::NoStartTls.tlsrpt_result_type(),
            "starttls-not-supported"
        );
        assert_eq!(TlsFailure::NoStartTls.enhanced(), [4, 7, 4]);
        assert_eq!(TlsFailure::NotEncrypted.enhanced(), [4, 7, 4]);
        let expired = TlsFailure::Certificate(CertificateFailure::Expired);
        assert_eq!(expired.tlsrpt_result_type(), "certificate-expired");
        let untrusted = TlsFailure::Certificate(CertificateFailure::Untrusted {
            anchors: "ca.crt".into(),
        });
        assert_eq!(untrusted.tlsrpt_result_type(), "certificate-not-trusted");
        assert_eq!(
            untrusted.to_string(),
            "peer certificate does not chain to ca.crt"
        );
        assert_eq!(
            TlsFailure::Timeout.tlsrpt_result_type(),
            "validation-failure"
        );
    }
}

//! Outbound TLS policy: the ordered level of a destination and the `DeliveryPermit` without which
//! no message is sent; a permit names the one policy it was earned under.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};

pub use super::failure::{CertificateFailure, TlsFailure};
pub use super::fingerprint::Fingerprint;
pub use super::peer::{check_client, check_peer, ConnectorVerifier, PeerCheck};
use super::TlsFacts;

/// How much TLS a destination demands, weakest first (Postfix may < encrypt < verify < secure).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TlsLevel {
    /// STARTTLS when offered, any certificate; plaintext when TLS fails.
    Opportunistic,
    /// TLS or nothing; any certificate of at least 2048 bits (Exchange "EncryptionOnly").
    Required,
    /// TLS with a certificate chaining to the trust anchors.
    VerifyCa,
    /// As VerifyCa, and the certificate names one of the expected hosts.
    VerifyName,
    /// The certificate, or its public key, matches a pinned SHA-256 digest (Postfix
    /// `fingerprint`): for partners whose certificate no CA vouches for, e.g. self-signed.
    Fingerprint,
    /// DANE (RFC 7672): the certificate matches one of the destination's DNSSEC-secure TLSA
    /// records (see `TlsPolicy::dane`); never configured, only looked up.
    Dane,
}

impl TlsLevel {
    pub fn parse(text: &str) -> Option<TlsLevel> {
        match text {
            "opportunistic" => Some(TlsLevel::Opportunistic),
            "required" => Some(TlsLevel::Required),
            "verify-ca" => Some(TlsLevel::VerifyCa),
            "verify-name" => Some(TlsLevel::VerifyName),
            "fingerprint" => Some(TlsLevel::Fingerprint),
            _ => None,
        }
    }

    /// Whether a connection that meets this level has had its certificate verified (a chain to
    /// trust anchors, the expected name, or a pinned key): what REQUIRETLS (RFC 8689) asks of
    /// every hop.
    pub fn verifies(self) -> bool {
        self >= TlsLevel::VerifyCa
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TlsLevel::Opportunistic => "opportunistic",
            TlsLevel::Required => "required",
            TlsLevel::VerifyCa => "verify-ca",
            TlsLevel::VerifyName => "verify-name",
            TlsLevel::Fingerprint => "fingerprint",
            TlsLevel::Dane => "dane",
        }
    }
}

/// Enforce the level, or only log what would have failed and deliver as opportunistic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyMode {
    Enforce,
    Audit,
}

/// Certificates trusted for verification, with a label for logs ("ca.crt", "system roots").
#[derive(Clone)]
pub struct TrustAnchors {
    pub roots: Arc<RootCertStore>,
    pub label: String,
}

impl fmt::Debug for TrustAnchors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustAnchors")
            .field("label", &self.label)
            .field("roots", &self.roots.len())
            .finish()
    }
}

impl TrustAnchors {
    /// The public web roots (webpki-roots), for partners with publicly trusted certificates.
    pub fn system() -> TrustAnchors {
        let roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        TrustAnchors {
            roots: Arc::new(roots),
            label: "system roots".into(),
        }
    }
}

/// Why a destination's TLS demand was not met, and whose demand it was. Always temporary
/// (4.7.x): the message waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFailure {
    /// The connector that demanded TLS; None for the default route (or a rule's demand).
    pub connector: Option<String>,
    /// The policy source that demanded TLS when not a connector, e.g.
    /// "mta-sts (example.test, enforce)".
    pub source: Option<String>,
    pub failure: TlsFailure,
}

impl PolicyFailure {
    /// The enhanced status code of the deferral.
    pub fn enhanced(&self) -> [u16; 3] {
        self.failure.enhanced()
    }
}

impl fmt::Display for PolicyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.connector, &self.source) {
            (Some(name), _) => write!(f, "TLS required by connector {name}: {}", self.failure),
            (None, Some(source)) => write!(f, "TLS required by {source}: {}", self.failure),
            (None, None) => write!(f, "TLS required: {}", self.failure),
        }
    }
}

impl std::error::Error for PolicyFailure {}

/// Identifies one `TlsPolicy` value for its whole life: each construction draws a new one, and
/// a clone keeps it. Two policies with different identities are never assumed to be equivalent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PolicyId(u64);

impl PolicyId {
    fn next() -> PolicyId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        PolicyId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// Proof that a connection meets one policy. Only `TlsPolicy::authorize` and
/// `TlsPolicy::admit` make one; it names the policy that issued it and the host it was checked
/// for, and satisfies that policy alone (see `satisfies`), so a connection opened under a
/// weaker policy can never carry mail for a stronger one.
#[derive(Debug, Clone)]
pub struct DeliveryPermit {
    achieved: TlsLevel,
    detail: String,
    policy: PolicyId,
    host: String,
    overlooked: Option<PolicyFailure>,
    _seal: Seal,
}

#[derive(Debug, Clone)]
struct Seal;

impl DeliveryPermit {
    /// The level the connection actually met.
    pub fn achieved(&self) -> TlsLevel {
        self.achieved
    }

    /// For logs and traces, e.g. "verified mx.fabrikam.test via ca.crt".
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// Whether this permit allows sending to `host` under `policy`: only the policy that issued
    /// it, for the host it was checked against. The single test every transaction passes.
    pub fn satisfies(&self, policy: &TlsPolicy, host: &str) -> bool {
        self.policy == policy.id && self.host == host
    }

    /// In audit mode: the failure the policy let pass (to be logged); None when the policy was met.
    pub fn overlooked(&self) -> Option<&PolicyFailure> {
        self.overlooked.as_ref()
    }

    /// Whether the connection was verified, as REQUIRETLS (RFC 8689 §4.2.1) demands of a hop:
    /// TLS whose certificate the policy checked (verify-ca, verify-name, fingerprint, dane),
    /// with no failure overlooked in audit mode. Opportunistic and `required` connections are
    /// not.
    pub fn verified(&self) -> bool {
        self.achieved.verifies() && self.overlooked.is_none()
    }
}

/// The TLS policy of one destination (a connector, the opportunistic default, or the `required`
/// default a transport rule asks for). Immutable once built: its identity stands for its content.
#[derive(Clone)]
pub struct TlsPolicy {
    id: PolicyId,
    /// The connector's name; None for the default route.
    connector: Option<String>,
    /// Where the policy came from when not a connector (e.g. "mta-sts (example.test,
    /// enforce)"); named in permits and failures.
    source: Option<String>,
    check: PeerCheck,
    mode: PolicyMode,
    /// The handshake configuration (carries the enforcing verifier and any client certificate).
    client_config: Arc<ClientConfig>,
    /// Under DANE: the secure TLSA records and reference names the certificate is checked
    /// against instead of `check`.
    dane: Option<Arc<DaneCheck>>,
}

/// The DANE check of one MX host: its secure TLSA record set and the reference names for
/// DANE-TA (the MX host name and the TLSA base domain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaneCheck {
    pub records: Vec<super::dane::Tlsa>,
    pub names: Vec<String>,
}

impl DaneCheck {
    /// The level a connection meeting this check achieves: DANE when some record is usable;
    /// otherwise TLS is still mandatory but the certificate is not authenticated (RFC 7672
    /// §2.2), which is `Required`.
    pub fn level(&self) -> TlsLevel {
        if self.records.iter().any(|r| r.usable()) {
            TlsLevel::Dane
        } else {
            TlsLevel::Required
        }
    }

    /// [`super::dane::verify`] at the current time.
    pub fn verify(
        &self,
        chain: &[rustls_pki_types::CertificateDer<'_>],
    ) -> Result<String, CertificateFailure> {
        super::dane::verify(
            &self.records,
            &self.names,
            chain,
            rustls_pki_types::UnixTime::now(),
        )
    }
}

impl TlsPolicy {
    /// A policy with a fresh identity.
    pub fn new(
        connector: Option<String>,
        check: PeerCheck,
        mode: PolicyMode,
        client_config: Arc<ClientConfig>,
    ) -> TlsPolicy {
        TlsPolicy {
            id: PolicyId::next(),
            connector,
            source: None,
            check,
            mode,
            client_config,
            dane: None,
        }
    }

    /// A DANE policy for one MX host (never plaintext; audit mode only logs a failed check),
    /// with a fresh identity: a connection authorized under it carries mail for this record
    /// set alone. The handshake itself runs the check when enforcing (`DaneVerifier`).
    pub fn dane(check: DaneCheck, mode: PolicyMode, source: String) -> TlsPolicy {
        let check = Arc::new(check);
        let verifier = Arc::new(super::peer::DaneVerifier::new(
            check.clone(),
            mode == PolicyMode::Enforce,
        ));
        let client_config = ClientConfig::builder_with_provider(super::provider())
            .with_safe_default_protocol_versions()
            .map(|b| {
                Arc::new(
                    b.dangerous()
                        .with_custom_certificate_verifier(verifier)
                        .with_no_client_auth(),
                )
            })
            .unwrap_or_else(|_| super::opportunistic_client_config());
        let mut policy = TlsPolicy::new(None, PeerCheck::level(check.level()), mode, client_config)
            .with_source(source);
        policy.dane = Some(check);
        policy
    }

    /// The DANE check, for a policy made by [`TlsPolicy::dane`].
    pub fn dane_check(&self) -> Option<&DaneCheck> {
        self.dane.as_deref()
    }

    /// Enforce or audit.
    pub fn mode(&self) -> PolicyMode {
        self.mode
    }

    /// The opportunistic default (Postfix `may`).
    pub fn opportunistic(client_config: Arc<ClientConfig>) -> TlsPolicy {
        TlsPolicy::new(
            None,
            PeerCheck::level(TlsLevel::Opportunistic),
            PolicyMode::Enforce,
            client_config,
        )
    }

    /// Names the policy source (e.g. "mta-sts (example.test, enforce)"): permit details start
    /// with it and failures name it.
    pub fn with_source(mut self, source: impl Into<String>) -> TlsPolicy {
        self.source = Some(source.into());
        self
    }

    /// The policy source, when one was named.
    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    pub fn id(&self) -> PolicyId {
        self.id
    }

    pub fn connector(&self) -> Option<&str> {
        self.connector.as_deref()
    }

    pub fn level(&self) -> TlsLevel {
        self.check.level
    }

    pub fn client_config(&self) -> &Arc<ClientConfig> {
        &self.client_config
    }

    /// Whether a failed handshake or a missing STARTTLS may fall back to plaintext.
    pub fn allows_plaintext(&self) -> bool {
        self.check.level == TlsLevel::Opportunistic || self.mode == PolicyMode::Audit
    }

    /// A failure to meet this policy (it names the connector that demanded TLS).
    pub fn failure(&self, failure: impl Into<TlsFailure>) -> PolicyFailure {
        PolicyFailure {
            connector: self.connector.clone(),
            source: self.source.clone(),
            failure: failure.into(),
        }
    }

    fn permit(&self, achieved: TlsLevel, detail: String, host: &str) -> DeliveryPermit {
        let detail = match &self.source {
            Some(source) => format!("{source}: {detail}"),
            None => detail,
        };
        DeliveryPermit {
            achieved,
            detail,
            policy: self.id,
            host: host.to_string(),
            overlooked: None,
            _seal: Seal,
        }
    }

    /// Checks an established connection against the policy. `tls` is None for plaintext;
    /// `host` is the name the connection was made to.
    pub fn authorize(
        &self,
        tls: Option<&TlsFacts>,
        host: &str,
    ) -> Result<DeliveryPermit, PolicyFailure> {
        let Some(tls) = tls else {
            return if self.check.level == TlsLevel::Opportunistic {
                Ok(self.permit(TlsLevel::Opportunistic, "no TLS".into(), host))
            } else {
                Err(self.failure(TlsFailure::NotEncrypted))
            };
        };
        if self.check.level == TlsLevel::Opportunistic {
            return Ok(self.permit(
                TlsLevel::Opportunistic,
                format!("{tls} (certificate not checked)"),
                host,
            ));
        }
        let detail = match &self.dane {
            Some(dane) => dane.verify(&tls.peer_certificates),
            None => self.check.verify(&tls.peer_certificates, host),
        }
        .map_err(|reason| self.failure(reason))?;
        Ok(self.permit(self.check.level, detail, host))
    }

    /// `authorize`, and in audit mode a failed check still yields a permit (achieved
    /// opportunistic) that carries the failure it overlooked, for the caller to log.
    pub fn admit(
        &self,
        tls: Option<&TlsFacts>,
        host: &str,
    ) -> Result<DeliveryPermit, PolicyFailure> {
        match self.authorize(tls, host) {
            Err(failure) if self.mode == PolicyMode::Audit => {
                let mut permit = self.permit(
                    TlsLevel::Opportunistic,
                    format!("audit only, would have deferred: {failure}"),
                    host,
                );
                permit.overlooked = Some(failure);
                Ok(permit)
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_ordered_like_postfix() {
        assert!(TlsLevel::Opportunistic < TlsLevel::Required);
        assert!(TlsLevel::Required < TlsLevel::VerifyCa);
        assert!(TlsLevel::VerifyCa < TlsLevel::VerifyName);
        assert!(TlsLevel::VerifyName < TlsLevel::Fingerprint);
        assert_eq!(TlsLevel::parse("fingerprint"), Some(TlsLevel::Fingerprint));
        assert_eq!(TlsLevel::parse("verify-name"), Some(TlsLevel::VerifyName));
        assert_eq!(TlsLevel::parse("secure"), None);
    }

    #[test]
    fn permits_follow_the_level() {
        let config = crate::tls::opportunistic_client_config();
        let policy = TlsPolicy::opportunistic(config.clone());
        assert!(policy.authorize(None, "h").is_ok());
        let required = |mode| {
            TlsPolicy::new(
                Some("to-fabrikam".into()),
                PeerCheck::level(TlsLevel::Required),
                mode,
                config.clone(),
            )
        };
        let enforce = required(PolicyMode::Enforce);
        let e = enforce.authorize(None, "h").unwrap_err();
        assert_eq!(
            e.to_string(),
            "TLS required by connector to-fabrikam: connection is not encrypted"
        );
        assert_eq!(
            enforce.admit(None, "h").unwrap_err(),
            e,
            "enforce mode has no override"
        );
        let audit = required(PolicyMode::Audit);
        let permit = audit.admit(None, "h").unwrap();
        assert_eq!(permit.achieved(), TlsLevel::Opportunistic);
        assert_eq!(permit.overlooked(), Some(&e));
        assert!(
            !permit.verified(),
            "an overlooked failure is not verification"
        );
        assert!(!policy.authorize(None, "h").unwrap().verified());
    }

    #[test]
    fn only_checked_certificates_count_as_verified() {
        let verifying = [
            TlsLevel::VerifyCa,
            TlsLevel::VerifyName,
            TlsLevel::Fingerprint,
        ];
        for level in [TlsLevel::Opportunistic, TlsLevel::Required] {
            assert!(!level.verifies(), "{level:?}");
        }
        for level in verifying {
            assert!(level.verifies(), "{level:?}");
        }
    }

    #[test]
    fn a_permit_satisfies_only_the_policy_and_host_it_was_issued_for() {
        let config = crate::tls::opportunistic_client_config();
        let a = TlsPolicy::opportunistic(config.clone());
        let b = TlsPolicy::opportunistic(config);
        let permit = a.authorize(None, "mx.example.test").unwrap();
        assert!(permit.satisfies(&a, "mx.example.test"));
        assert!(
            permit.satisfies(&a.clone(), "mx.example.test"),
            "a clone is the same policy"
        );
        assert!(
            !permit.satisfies(&b, "mx.example.test"),
            "an equal-looking policy built elsewhere is another policy"
        );
        assert!(!permit.satisfies(&a, "other.example.test"));
    }

    fn fabrikam_chain() -> Vec<rustls_pki_types::CertificateDer<'static>> {
        let pki = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pki");
        crate::tls::load_certified_key(
            &pki.join("mx.fabrikam.test.crt"),
            &pki.join("mx.fabrikam.test.key"),
        )
        .unwrap()
        .chain
    }

    #[test]
    fn a_dane_policy_checks_the_records_and_counts_as_verified() {
        let chain = fabrikam_chain();
        let facts = TlsFacts {
            peer_certificates: chain.clone(),
            ..TlsFacts::new("TLSv1.3", "TLS_AES_256_GCM_SHA384")
        };
        let matching = super::super::dane::Tlsa::for_certificate(3, 1, 1, &chain[0]).unwrap();
        let check = |records: Vec<super::super::dane::Tlsa>| DaneCheck {
            records,
            names: vec!["mx.example.test".into()],
        };
        let source = || "dane (mx.example.test)".to_string();
        let policy = TlsPolicy::dane(check(vec![matching.clone()]), PolicyMode::Enforce, source());
        assert_eq!(policy.level(), TlsLevel::Dane);
        assert!(!policy.allows_plaintext());
        let permit = policy.authorize(Some(&facts), "mx.example.test").unwrap();
        assert!(permit.verified());
        assert_eq!(
            permit.detail(),
            "dane (mx.example.test): DANE-EE matched TLSA 3 1 1"
        );
        let e = policy.authorize(None, "mx.example.test").unwrap_err();
        assert_eq!(
            e.to_string(),
            "TLS required by dane (mx.example.test): connection is not encrypted"
        );

        let mut other = matching.clone();
        other.data[0] ^= 1;
        let mismatch = TlsPolicy::dane(check(vec![other]), PolicyMode::Enforce, source());
        let e = mismatch
            .authorize(Some(&facts), "mx.example.test")
            .unwrap_err();
        assert!(
            matches!(
                e.failure,
                TlsFailure::Certificate(CertificateFailure::DaneMismatch(_))
            ),
            "{e:?}"
        );
        assert_ne!(
            mismatch.id(),
            policy.id(),
            "each record set is its own policy"
        );

        // Only unusable records (PKIX-EE): TLS is mandatory, the certificate not authenticated.
        let mut pkix = matching;
        pkix.usage = 1;
        let unusable = TlsPolicy::dane(check(vec![pkix]), PolicyMode::Enforce, source());
        assert_eq!(unusable.level(), TlsLevel::Required);
        let permit = unusable.authorize(Some(&facts), "mx.example.test").unwrap();
        assert!(!permit.verified());
        assert!(unusable.authorize(None, "mx.example.test").is_err());
    }
}

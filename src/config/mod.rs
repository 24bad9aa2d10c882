//! Typed configuration: the TOML file as written (`file`), validated into what the program runs on.

pub mod connectors;
pub use operations::{read_token_file, AdminToken, Operations};
mod dane;
pub mod dkim;
mod encryption;
mod file;
mod licensing;
mod limits;
mod operations;
mod pkcs11;
pub mod routing;
mod rule_needs;
mod secret_file;
mod smime;
mod storage;
mod tls_report;
mod users;
mod validate;

pub use storage::StorageSettings;
pub use tls_report::TlsReportSettings;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

pub use pkcs11::key_sections;

pub use crate::tls::mta_sts::MtaStsMode;
/// `dane` takes the same values as `mta_sts`: "opportunistic", "mandatory" or "off".
pub use crate::tls::mta_sts::MtaStsMode as DaneMode;
pub use crate::tls::TlsMinVersion;
pub use crate::units::parse_duration;
pub use connectors::{DomainPattern, InboundConnector, OutboundConnector};
pub use dane::DnsTrustAnchor;
pub use encryption::{EncryptionPolicy, PolicyRef, StoreSettings};
pub use licensing::{Licensing, LicensingService, ReaderCa};
pub use smime::SmimeSigning;

/// A configuration problem: the file, the key and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub key: String,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.problem)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.key, self.problem)
        }
    }
}

impl std::error::Error for ConfigError {}

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerProtocol {
    /// Port 25 style: STARTTLS offered, no authentication.
    Smtp,
    /// Port 587 (RFC 6409): STARTTLS, then AUTH, which MAIL requires.
    Submission,
    /// Port 465 (RFC 8314): TLS from the first byte, then AUTH, which MAIL requires.
    Submissions,
    /// IMAP4rev2 on port 143: STARTTLS, logins only after it.
    Imap,
    /// IMAP4rev2 on port 993: TLS from the first byte.
    Imaps,
}

impl ListenerProtocol {
    /// Whether the listener speaks IMAP (else SMTP).
    pub fn is_imap(self) -> bool {
        matches!(self, ListenerProtocol::Imap | ListenerProtocol::Imaps)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub address: SocketAddr,
    pub protocol: ListenerProtocol,
}

/// `server.sender_login_mismatch`: what MAIL FROM an authenticated user may give (Postfix's
/// `reject_sender_login_mismatch`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SenderLoginMismatch {
    /// Only the addresses of its `[[user]]` entry, or the null sender (default).
    #[default]
    Reject,
    /// Any sender.
    Allow,
}

/// The server's own certificate and key: loaded and checked once, at validation (RSA keys
/// ≥ 2048 bits), and served as loaded; the paths are kept for logs. A reload validates anew.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    pub min_version: TlsMinVersion,
    /// `[tls] session_tickets`: clients may resume by stateless tickets (default on).
    pub session_tickets: bool,
    pub key: std::sync::Arc<crate::tls::CertifiedKey>,
}

/// Where a static route sends a domain's mail: a host (name or IP) and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Retry and lifetime of queued messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSettings {
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub lifetime: Duration,
    /// Send the sender a delay notice once a message has waited this long (None: never).
    pub delay_warning: Option<Duration>,
}

/// Outbound delivery settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliverySettings {
    /// Port used for hosts found through MX / A lookups (25).
    pub smtp_port: u16,
    /// Deliveries running at once.
    pub concurrency: usize,
    /// Timeout for connecting and for each reply.
    pub timeout: Duration,
    /// How long an idle outbound connection is kept for reuse.
    pub connection_reuse_time: Duration,
    /// `mta_sts`: how MX deliveries use recipient domains' MTA-STS policies (connectors may
    /// say otherwise).
    pub mta_sts: MtaStsMode,
    /// `dane`: how MX deliveries use DNSSEC-secure TLSA records (RFC 7672; connectors may say
    /// otherwise).
    pub dane: DaneMode,
}

/// Session limits of the inbound server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_message_size: usize,
    pub max_recipients: usize,
    /// The longest wait for the next command (RFC 5321 §4.5.3.2.7); also bounds TLS
    /// handshakes and writes to the client.
    pub command_timeout: Duration,
    /// The longest wait for the next chunk of message data after 354.
    pub data_timeout: Duration,
    /// Bare CR or LF in DATA: refuse the message (default) or convert to CRLF.
    pub bare_newline: crate::mail::BareNewline,
    /// Sessions open at once, in total and per client address (more get 421 4.7.0).
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Message bytes held outside the queue files at once, by every session, the transport rules
    /// and the queue runner together (see `queue::in_flight`).
    pub max_in_flight_size: u64,
}

/// A validated configuration. Paths are absolute or relative to the working directory.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from.
    pub path: PathBuf,
    pub hostname: String,
    pub data_dir: PathBuf,
    pub relay_networks: Vec<IpNet>,
    /// `server.shutdown_timeout`: how long transactions in flight may take to finish after
    /// SIGTERM before their sessions are closed.
    pub shutdown_timeout: Duration,
    pub listeners: Vec<Listener>,
    pub tls: Option<TlsFiles>,
    pub nameservers: Vec<SocketAddr>,
    /// `[dns] trust_anchor`: the DNSSEC trust anchor of DANE lookups (None: the IANA root keys).
    pub dns_trust_anchor: Option<DnsTrustAnchor>,
    /// Lowercase domain → where to deliver it instead of looking up MX.
    pub static_routes: BTreeMap<String, HostPort>,
    /// The domains delivered to local mailboxes. Ask it through [`Config::is_local_domain`] (or
    /// hand it on): it is the one answer to "is this domain local?".
    pub local_domains: crate::mail::DomainSet,
    /// Lowercase addresses of local mailboxes.
    pub mailboxes: BTreeSet<String>,
    pub queue: QueueSettings,
    pub delivery: DeliverySettings,
    /// `[delivery] mta_sts_ca_file`, loaded: the trust anchors of MTA-STS (None: public roots).
    pub mta_sts_anchors: Option<crate::tls::policy::TrustAnchors>,
    pub limits: Limits,
    pub outbound_connectors: Vec<OutboundConnector>,
    pub inbound_connectors: Vec<InboundConnector>,
    /// The `[rules] dir`, when configured.
    pub rules_dir: Option<PathBuf>,
    /// The transport rules loaded from `rules_dir` (empty without one).
    pub rules: crate::rules::RuleSet,
    /// `[smime] certificate_dir`: recipient certificates for the `smime_encrypt` action.
    pub smime_certificate_dir: Option<PathBuf>,
    /// `[smime] signing_dir`, its keys loaded: what the `smime_sign` action signs with.
    pub smime_signing: Option<SmimeSigning>,
    /// `[rms] tenant_key_dir`: tenant keys for the `rms_protect` action (checked to load, with an
    /// active key).
    pub rms_tenant_key_dir: Option<PathBuf>,
    /// `[pkcs11]`: the module and PIN source for keys named by `pkcs11:` URIs.
    pub pkcs11: Option<crate::keys::Pkcs11Config>,
    /// `[[rms.template]]`: template name → principal → rights.
    pub rms_templates: BTreeMap<String, BTreeMap<String, Vec<crate::rules::Right>>>,
    /// `[rms.licensing]`: the licensing service URL and use-license validity.
    pub rms_licensing: Option<Licensing>,
    /// `[[user]]`: lowercase name → argon2 PHC hash, for AUTH on submission listeners.
    pub users: BTreeMap<String, String>,
    /// `[[user]] addresses`: lowercase name → the lowercase envelope senders it owns.
    pub user_addresses: BTreeMap<String, BTreeSet<String>>,
    /// `[[user]] mailboxes`: lowercase name → the mailboxes it reads over IMAP, its own first
    /// (default: the name).
    pub user_mailboxes: BTreeMap<String, Vec<String>>,
    /// `server.sender_login_mismatch`: whether authenticated users may use other senders.
    pub sender_login_mismatch: SenderLoginMismatch,
    /// `server.always_add_missing_headers`: Date and Message-ID are added to every message that
    /// lacks them, not only to submitted ones (Postfix `always_add_missing_headers`).
    pub always_add_missing_headers: bool,
    /// `[[encryption_policy]]` by name.
    pub encryption_policies: BTreeMap<String, EncryptionPolicy>,
    /// Lowercase mailbox address → the policy it is stored under (resolved from its own
    /// `encryption_policy` or its domain's).
    pub mailbox_policies: BTreeMap<String, PolicyRef>,
    pub store: StoreSettings,
    /// `[admin]` and `[trace]`.
    /// `[tls_report]`: TLS-RPT (RFC 8460) reports.
    pub tls_report: TlsReportSettings,
    /// `[storage]`: where the queue lives (the spool, or PostgreSQL).
    pub storage: StorageSettings,
    pub operations: Operations,
    /// `[[dkim]]`: the signers of our outbound mail, by From: domain.
    pub dkim: crate::sender_auth::Signers,
    /// `[sender_auth]`: checks of mail from outside.
    pub sender_auth: dkim::SenderAuth,
}

impl Config {
    /// Reads and validates a configuration file; `data_dir` overrides `server.data_dir`.
    pub fn load(path: &Path, data_dir: Option<&Path>) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            key: String::new(),
            problem: format!("cannot read: {e}"),
        })?;
        Self::from_toml(path, &text, data_dir)
    }

    /// Validates configuration text as if it had been read from `path`.
    pub fn from_toml(
        path: &Path,
        text: &str,
        data_dir: Option<&Path>,
    ) -> Result<Config, ConfigError> {
        let raw: file::RawConfig = toml::from_str(text).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            key: String::new(),
            // The parser's own report: line, column, the line itself and a caret.
            problem: e.to_string().trim_end().to_string(),
        })?;
        validate::validate(path, raw, data_dir)
    }

    /// True when `address` (any case) is a local mailbox.
    pub fn is_local_mailbox(&self, address: &str) -> bool {
        self.mailboxes.contains(&address.to_ascii_lowercase())
    }

    /// The policy a local mailbox (any case) is stored under; `None` when it is not local.
    pub fn mailbox_policy(&self, address: &str) -> Option<PolicyRef> {
        self.mailbox_policies
            .get(&address.to_ascii_lowercase())
            .cloned()
    }

    /// True when `domain` (any case) is delivered locally.
    pub fn is_local_domain(&self, domain: &str) -> bool {
        self.local_domains.contains(domain)
    }

    /// The outbound connector for a recipient domain (any case), if one claims it.
    pub fn outbound_connector(&self, domain: &str) -> Option<&OutboundConnector> {
        let domain = domain.to_ascii_lowercase();
        self.outbound_connectors
            .iter()
            .find(|c| c.recipient_domains.iter().any(|p| p.matches(&domain)))
    }

    /// The inbound connectors that apply to a client and sender domain (any case).
    pub fn inbound_connectors_for(
        &self,
        client: std::net::IpAddr,
        sender_domain: &str,
    ) -> Vec<&InboundConnector> {
        let domain = sender_domain.to_ascii_lowercase();
        self.inbound_connectors
            .iter()
            .filter(|c| c.matches(client, &domain))
            .collect()
    }

    /// Whether a client address may relay to any domain.
    pub fn relay_allowed(&self, ip: std::net::IpAddr) -> bool {
        self.relay_networks.iter().any(|n| n.contains(&ip))
    }
}

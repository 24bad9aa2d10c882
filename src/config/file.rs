//! The configuration file as written: serde structures with `deny_unknown_fields`.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub server: RawServer,
    #[serde(default)]
    pub listener: Vec<RawListener>,
    pub tls: Option<RawTls>,
    #[serde(default)]
    pub dns: RawDns,
    #[serde(default)]
    pub domain: Vec<RawDomain>,
    #[serde(default)]
    pub mailbox: Vec<RawMailbox>,
    #[serde(default)]
    pub queue: RawQueue,
    #[serde(default)]
    pub delivery: RawDelivery,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub connector: RawConnectors,
    pub rules: Option<RawRules>,
    pub smime: Option<RawSmime>,
    pub rms: Option<RawRms>,
    pub pkcs11: Option<super::pkcs11::RawPkcs11>,
    #[serde(default)]
    pub user: Vec<RawUser>,
    #[serde(default)]
    pub encryption_policy: Vec<super::encryption::RawEncryptionPolicy>,
    pub store: Option<super::encryption::RawStore>,
    pub admin: Option<super::operations::RawAdmin>,
    pub trace: Option<super::operations::RawTrace>,
    pub tls_report: Option<super::tls_report::RawTlsReport>,
    pub storage: Option<super::storage::RawStorage>,
    #[serde(default)]
    pub dkim: Vec<super::dkim::RawDkim>,
    pub sender_auth: Option<super::dkim::RawSenderAuth>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub hostname: String,
    pub data_dir: Option<String>,
    #[serde(default)]
    pub relay_networks: Vec<String>,
    pub shutdown_timeout: Option<String>,
    /// "reject" (default) or "allow": may an authenticated user send as addresses it does not own.
    pub sender_login_mismatch: Option<String>,
    /// Add a missing Date and Message-ID to relayed mail too (submitted mail always gets them).
    #[serde(default)]
    pub always_add_missing_headers: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub address: String,
    #[serde(default = "default_protocol")]
    pub protocol: String,
}

fn default_protocol() -> String {
    "smtp".to_string()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub certificate: String,
    pub private_key: String,
    #[serde(default = "default_min_version")]
    pub min_version: String,
    /// Resumption by stateless session tickets (keys in memory only, rotated).
    #[serde(default = "default_session_tickets")]
    pub session_tickets: bool,
}

fn default_session_tickets() -> bool {
    true
}

fn default_min_version() -> String {
    "1.2".to_string()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDns {
    #[serde(default)]
    pub nameservers: Vec<String>,
    #[serde(default)]
    pub static_routes: BTreeMap<String, String>,
    /// DNSSEC trust anchor for DANE: DNSKEY records in zone-file format (default: the IANA
    /// root keys).
    pub trust_anchor: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDomain {
    pub name: String,
    /// A policy name or "none": the default for this domain's mailboxes.
    pub encryption_policy: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMailbox {
    pub address: String,
    /// A policy name or "none": overrides the domain's.
    pub encryption_policy: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQueue {
    pub retry_initial: Option<String>,
    pub retry_max: Option<String>,
    pub lifetime: Option<String>,
    pub delay_warning: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDelivery {
    pub smtp_port: Option<u16>,
    pub concurrency: Option<usize>,
    pub timeout: Option<String>,
    pub connection_reuse_time: Option<String>,
    /// "opportunistic" (default), "mandatory" or "off".
    pub mta_sts: Option<String>,
    /// CA certificates (PEM) that replace the public roots for MTA-STS policy hosts and MX hosts.
    pub mta_sts_ca_file: Option<String>,
    /// DANE (RFC 7672): "opportunistic" (default), "mandatory" or "off".
    pub dane: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_message_size: Option<usize>,
    pub max_recipients: Option<usize>,
    pub command_timeout: Option<String>,
    pub data_timeout: Option<String>,
    /// The old name of `command_timeout`, still accepted.
    pub idle_timeout: Option<String>,
    pub bare_newline: Option<crate::mail::BareNewline>,
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    pub max_in_flight_size: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConnectors {
    #[serde(default)]
    pub outbound: Vec<RawOutbound>,
    #[serde(default)]
    pub inbound: Vec<RawInbound>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutbound {
    pub name: String,
    pub recipient_domains: Vec<String>,
    #[serde(default)]
    pub smart_hosts: Vec<String>,
    #[serde(default = "default_outbound_tls")]
    pub tls: String,
    #[serde(default)]
    pub tls_names: Vec<String>,
    /// Pins under tls = "fingerprint": "sha256:<hex>" of the certificate or its public key.
    #[serde(default)]
    pub tls_fingerprints: Vec<String>,
    pub ca_file: Option<String>,
    pub client_certificate: Option<String>,
    pub client_private_key: Option<String>,
    #[serde(default = "default_min_version")]
    pub min_version: String,
    #[serde(default = "default_mode")]
    pub mode: String,
    /// MTA-STS for this connector's MX deliveries; None: `[delivery] mta_sts`.
    pub mta_sts: Option<String>,
    /// DANE for this connector's MX deliveries; None: `[delivery] dane`.
    pub dane: Option<String>,
}

fn default_outbound_tls() -> String {
    "opportunistic".to_string()
}

fn default_mode() -> String {
    "enforce".to_string()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInbound {
    pub name: String,
    #[serde(default)]
    pub sender_domains: Vec<String>,
    #[serde(default)]
    pub client_networks: Vec<String>,
    #[serde(default)]
    pub require_tls: bool,
    #[serde(default)]
    pub client_certificate_names: Vec<String>,
    pub ca_file: Option<String>,
}

/// `[rules] dir = "../rules/contoso"`: the transport rules, one TOML file per rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRules {
    pub dir: String,
}

/// `[smime] certificate_dir = "pki/smime"`: recipient certificates for `smime_encrypt`;
/// `signing_dir = "pki/signing"`: keys and certificates for `smime_sign`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSmime {
    pub certificate_dir: Option<String>,
    pub signing_dir: Option<String>,
}

/// `[[user]]`: a submission user, the argon2 hash of its password and the envelope senders it
/// may use (default: its name).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    pub name: String,
    pub password_hash: String,
    pub addresses: Option<Vec<String>>,
    pub mailboxes: Option<Vec<String>>,
}

/// `[rms] tenant_key_dir = "keys/tenant"`: tenant keys for `rms_protect` (one marked active).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRms {
    pub tenant_key_dir: String,
    /// `[[rms.template]]`: named rights sets that rules can use as `template = "<name>"`.
    #[serde(default)]
    pub template: Vec<RawRmsTemplate>,
    /// `[rms.licensing]`: the licensing service named in publishing licenses.
    pub licensing: Option<RawRmsLicensing>,
}

/// `[rms.licensing] url = "https://..."`, `use_license_validity = "30d"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRmsLicensing {
    pub url: String,
    pub use_license_validity: Option<String>,
    /// Where the service listens (HTTPS); without it this server only names the service.
    pub listen: Option<String>,
    /// The service's own certificate and key; default: the server's `[tls]` ones.
    pub certificate: Option<String>,
    pub private_key: Option<String>,
    /// `[[rms.licensing.trust]]`: the CAs that may name readers, each for its domains.
    #[serde(default)]
    pub trust: Vec<RawLicensingTrust>,
    /// Whether `[[user]]` entries may prove themselves with their password (default true).
    pub passwords: Option<bool>,
}

/// `[[rms.licensing.trust]] domains = ["fabrikam.test"]`, `ca_file = "pki/ca.crt"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLicensingTrust {
    pub domains: Vec<String>,
    pub ca_file: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRmsTemplate {
    pub name: String,
    /// Principal (address, `*@domain`, `ANYONE`) → rights.
    pub rights: BTreeMap<String, Vec<crate::rules::Right>>,
}

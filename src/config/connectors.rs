//! Partner connectors in the configuration: `[[connector.outbound]]` and `[[connector.inbound]]`.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use super::file::{RawDelivery, RawInbound, RawOutbound};
use super::validate::{is_domain, parse_host_port, Checker};
use super::{ConfigError, DaneMode, HostPort, MtaStsMode, TlsMinVersion};
use crate::tls::policy::{Fingerprint, PolicyMode, TlsLevel, TrustAnchors};
use crate::tls::CertifiedKey;

/// A recipient or sender domain pattern: `example.test`, or `*.example.test` for its subdomains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainPattern {
    Exact(String),
    Subdomains(String),
}

impl DomainPattern {
    pub fn parse(text: &str) -> Option<DomainPattern> {
        let t = text.trim().to_ascii_lowercase();
        match t.strip_prefix("*.") {
            Some(rest) if is_domain(rest) => Some(DomainPattern::Subdomains(rest.to_string())),
            None if is_domain(&t) => Some(DomainPattern::Exact(t)),
            _ => None,
        }
    }

    /// `domain` must be lowercase.
    pub fn matches(&self, domain: &str) -> bool {
        match self {
            DomainPattern::Exact(d) => d == domain,
            DomainPattern::Subdomains(d) => {
                domain.len() > d.len() + 1 && domain.ends_with(d.as_str()) && {
                    domain.as_bytes()[domain.len() - d.len() - 1] == b'.'
                }
            }
        }
    }
}

impl std::fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DomainPattern::Exact(d) => write!(f, "{d}"),
            DomainPattern::Subdomains(d) => write!(f, "*.{d}"),
        }
    }
}

/// Where and how mail for some recipient domains leaves.
#[derive(Debug, Clone)]
pub struct OutboundConnector {
    pub name: String,
    pub recipient_domains: Vec<DomainPattern>,
    /// Empty: the recipient domain's MX (or its static route).
    pub smart_hosts: Vec<HostPort>,
    pub tls: TlsLevel,
    /// Names accepted under verify-name; empty: the host connected to.
    pub tls_names: Vec<String>,
    /// Pins under fingerprint: the peer's certificate or public key must match one.
    pub tls_fingerprints: Vec<Fingerprint>,
    /// Trust anchors for verify-ca/verify-name (`ca_file`, loaded); None: the public roots.
    pub anchors: Option<TrustAnchors>,
    /// Certificate and key presented to the partner (mutual TLS), loaded and checked.
    pub client_certificate: Option<Arc<CertifiedKey>>,
    pub min_version: TlsMinVersion,
    pub mode: PolicyMode,
    /// MTA-STS for deliveries by MX under this connector; None: `[delivery] mta_sts`. Only
    /// for connectors without smart hosts whose own `tls` is opportunistic: a forced TLS level
    /// of the connector wins over any policy a domain publishes.
    pub mta_sts: Option<MtaStsMode>,
    /// DANE for deliveries by MX under this connector; None: `[delivery] dane`. Same
    /// restrictions as `mta_sts`.
    pub dane: Option<DaneMode>,
}

/// What a partner sending to us must do.
#[derive(Debug, Clone)]
pub struct InboundConnector {
    pub name: String,
    pub sender_domains: Vec<DomainPattern>,
    pub client_networks: Vec<IpNet>,
    pub require_tls: bool,
    /// The client must present a certificate chaining to `anchors` and naming one of these.
    pub client_certificate_names: Vec<String>,
    /// The connector's `ca_file`, loaded.
    pub anchors: Option<TrustAnchors>,
}

impl InboundConnector {
    /// Both criteria must hold where both are given. `sender_domain` is lowercase.
    pub fn matches(&self, client: IpAddr, sender_domain: &str) -> bool {
        let by_domain = self.sender_domains.is_empty()
            || self.sender_domains.iter().any(|p| p.matches(sender_domain));
        let by_network = self.client_networks.is_empty()
            || self.client_networks.iter().any(|n| n.contains(&client));
        by_domain && by_network
    }
}

fn domains(c: &Checker, key: &str, list: &[String]) -> Result<Vec<DomainPattern>, ConfigError> {
    list.iter()
        .enumerate()
        .map(|(i, d)| {
            DomainPattern::parse(d).ok_or_else(|| {
                c.err(
                    format!("{key}[{i}]"),
                    format!("not a domain or *.domain: {d:?}"),
                )
            })
        })
        .collect()
}

/// A CA file that exists and holds usable certificates, loaded.
pub(super) fn ca_file(
    c: &Checker,
    key: &str,
    value: Option<&str>,
) -> Result<Option<TrustAnchors>, ConfigError> {
    let Some(value) = value else { return Ok(None) };
    let path = c.existing_file(key, value)?;
    let anchors = crate::tls::load_trust_anchors(&path).map_err(|e| c.err(key, e.to_string()))?;
    Ok(Some(anchors))
}

/// An `mta_sts` value: "opportunistic", "mandatory" or "off".
pub(super) fn mta_sts_mode(
    c: &Checker,
    key: &str,
    value: Option<&str>,
) -> Result<Option<MtaStsMode>, ConfigError> {
    value
        .map(|v| {
            MtaStsMode::parse(v).ok_or_else(|| {
                c.err(
                    key,
                    format!("must be opportunistic, mandatory or off, not {v:?}"),
                )
            })
        })
        .transpose()
}

/// `[delivery] mta_sts` (default opportunistic).
pub(super) fn delivery_mta_sts(c: &Checker, raw: &RawDelivery) -> Result<MtaStsMode, ConfigError> {
    Ok(mta_sts_mode(c, "delivery.mta_sts", raw.mta_sts.as_deref())?.unwrap_or_default())
}

/// `[delivery] mta_sts_ca_file`, loaded.
pub(super) fn delivery_mta_sts_anchors(
    c: &Checker,
    raw: &RawDelivery,
) -> Result<Option<TrustAnchors>, ConfigError> {
    ca_file(
        c,
        "delivery.mta_sts_ca_file",
        raw.mta_sts_ca_file.as_deref(),
    )
}

pub(super) fn outbound(
    c: &Checker,
    raw: &[RawOutbound],
) -> Result<Vec<OutboundConnector>, ConfigError> {
    let mut out: Vec<OutboundConnector> = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let key = |k: &str| format!("connector.outbound[{i}].{k}");
        if r.name.trim().is_empty() || out.iter().any(|o| o.name == r.name) {
            return Err(c.err(
                key("name"),
                format!("missing or duplicate connector name {:?}", r.name),
            ));
        }
        let recipient_domains = domains(c, &key("recipient_domains"), &r.recipient_domains)?;
        if recipient_domains.is_empty() {
            return Err(c.err(key("recipient_domains"), "at least one domain is needed"));
        }
        for other in &out {
            if let Some(p) = recipient_domains
                .iter()
                .find(|p| other.recipient_domains.contains(p))
            {
                return Err(c.err(
                    key("recipient_domains"),
                    format!("{p} is also routed by connector {}", other.name),
                ));
            }
        }
        let smart_hosts = r
            .smart_hosts
            .iter()
            .enumerate()
            .map(|(j, h)| {
                parse_host_port(h).ok_or_else(|| {
                    c.err(
                        format!("{}[{j}]", key("smart_hosts")),
                        format!("expected host:port, got {h:?}"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let tls = TlsLevel::parse(&r.tls).ok_or_else(|| {
            c.err(
                key("tls"),
                format!(
                    "must be opportunistic, required, verify-ca, verify-name or fingerprint, not {:?}",
                    r.tls
                ),
            )
        })?;
        for (j, n) in r.tls_names.iter().enumerate() {
            if !is_domain(&n.to_ascii_lowercase()) {
                return Err(c.err(
                    format!("{}[{j}]", key("tls_names")),
                    format!("not a host name: {n:?}"),
                ));
            }
        }
        if !r.tls_names.is_empty() && tls != TlsLevel::VerifyName {
            return Err(c.err(key("tls_names"), "only used with tls = \"verify-name\""));
        }
        let tls_fingerprints = r
            .tls_fingerprints
            .iter()
            .enumerate()
            .map(|(j, f)| {
                Fingerprint::parse(f)
                    .map_err(|e| c.err(format!("{}[{j}]", key("tls_fingerprints")), e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        match (tls == TlsLevel::Fingerprint, tls_fingerprints.is_empty()) {
            (true, true) => {
                return Err(c.err(
                    key("tls_fingerprints"),
                    "tls = \"fingerprint\" needs at least one pin (sealpost tls-check prints them)",
                ))
            }
            (false, false) => {
                return Err(c.err(
                    key("tls_fingerprints"),
                    "only used with tls = \"fingerprint\"",
                ))
            }
            _ => {}
        }
        let ca_file = ca_file(c, &key("ca_file"), r.ca_file.as_deref())?;
        let client_certificate = match (&r.client_certificate, &r.client_private_key) {
            (None, None) => None,
            (Some(cert), Some(k)) => {
                let cert = c.existing_file(&key("client_certificate"), cert)?;
                let k = c.existing_file(&key("client_private_key"), k)?;
                let loaded = crate::tls::load_certified_key(&cert, &k)
                    .map_err(|e| c.err(key("client_certificate"), e.to_string()))?;
                Some(Arc::new(loaded))
            }
            _ => {
                return Err(c.err(
                    key("client_certificate"),
                    "client_certificate and client_private_key go together",
                ));
            }
        };
        let min_version = match r.min_version.as_str() {
            "1.2" => TlsMinVersion::Tls12,
            "1.3" => TlsMinVersion::Tls13,
            v => {
                return Err(c.err(
                    key("min_version"),
                    format!("must be \"1.2\" or \"1.3\", not {v:?}"),
                ))
            }
        };
        let mode = match r.mode.as_str() {
            "enforce" => PolicyMode::Enforce,
            "audit" => PolicyMode::Audit,
            m => return Err(c.err(key("mode"), format!("must be enforce or audit, not {m:?}"))),
        };
        let mta_sts = mta_sts_mode(c, &key("mta_sts"), r.mta_sts.as_deref())?;
        if mta_sts.is_some() && !smart_hosts.is_empty() {
            return Err(c.err(
                key("mta_sts"),
                "only for connectors that deliver by MX: this one has smart_hosts",
            ));
        }
        if mta_sts.is_some_and(|m| m != MtaStsMode::Off) && tls != TlsLevel::Opportunistic {
            return Err(c.err(
                key("mta_sts"),
                format!(
                    "the connector's own tls = {:?} decides; MTA-STS applies only with tls = \"opportunistic\" (or set mta_sts = \"off\")",
                    tls.as_str()
                ),
            ));
        }
        let dane =
            super::dane::connector_dane(c, &key("dane"), r.dane.as_deref(), &smart_hosts, tls)?;
        out.push(OutboundConnector {
            name: r.name.clone(),
            recipient_domains,
            smart_hosts,
            tls,
            tls_names: r.tls_names.iter().map(|n| n.to_ascii_lowercase()).collect(),
            tls_fingerprints,
            anchors: ca_file,
            client_certificate,
            min_version,
            mode,
            mta_sts,
            dane,
        });
    }
    Ok(out)
}

pub(super) fn inbound(
    c: &Checker,
    raw: &[RawInbound],
) -> Result<Vec<InboundConnector>, ConfigError> {
    let mut out: Vec<InboundConnector> = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let key = |k: &str| format!("connector.inbound[{i}].{k}");
        if r.name.trim().is_empty() || out.iter().any(|o| o.name == r.name) {
            return Err(c.err(
                key("name"),
                format!("missing or duplicate connector name {:?}", r.name),
            ));
        }
        let sender_domains = domains(c, &key("sender_domains"), &r.sender_domains)?;
        let client_networks = r
            .client_networks
            .iter()
            .enumerate()
            .map(|(j, n)| {
                n.parse::<IpNet>()
                    .or_else(|_| n.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        c.err(
                            format!("{}[{j}]", key("client_networks")),
                            format!("not a network: {n:?}"),
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if sender_domains.is_empty() && client_networks.is_empty() {
            return Err(c.err(
                key("sender_domains"),
                "give sender_domains, client_networks or both",
            ));
        }
        let ca_file = ca_file(c, &key("ca_file"), r.ca_file.as_deref())?;
        if !r.client_certificate_names.is_empty() && ca_file.is_none() {
            return Err(c.err(
                key("ca_file"),
                "missing: client_certificate_names needs the CA that issues them",
            ));
        }
        for (j, n) in r.client_certificate_names.iter().enumerate() {
            if !is_domain(&n.to_ascii_lowercase()) {
                return Err(c.err(
                    format!("{}[{j}]", key("client_certificate_names")),
                    format!("not a host name: {n:?}"),
                ));
            }
        }
        out.push(InboundConnector {
            name: r.name.clone(),
            sender_domains,
            client_networks,
            require_tls: r.require_tls || !r.client_certificate_names.is_empty(),
            client_certificate_names: r
                .client_certificate_names
                .iter()
                .map(|n| n.to_ascii_lowercase())
                .collect(),
            anchors: ca_file,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_patterns() {
        let exact = DomainPattern::parse("Fabrikam.test").unwrap();
        assert!(exact.matches("fabrikam.test") && !exact.matches("mx.fabrikam.test"));
        let sub = DomainPattern::parse("*.fabrikam.test").unwrap();
        assert!(
            sub.matches("eu.fabrikam.test")
                && !sub.matches("fabrikam.test")
                && !sub.matches("evilfabrikam.test")
        );
        assert!(DomainPattern::parse("*.").is_none() && DomainPattern::parse("a b").is_none());
    }
}

#[cfg(test)]
mod mta_sts_tests {
    use crate::config::{Config, MtaStsMode};
    use std::path::Path;

    const BASE: &str = "[server]\nhostname = \"mx.a.test\"\ndata_dir = \"d\"\n";

    fn load(extra: &str) -> Result<Config, crate::config::ConfigError> {
        Config::from_toml(Path::new("c.toml"), &format!("{BASE}{extra}"), None)
    }

    #[test]
    fn mta_sts_keys_are_validated_with_their_key() {
        let c = load("").unwrap();
        assert_eq!(c.delivery.mta_sts, MtaStsMode::Opportunistic);
        assert!(c.mta_sts_anchors.is_none());
        let c = load("[delivery]\nmta_sts = \"mandatory\"\n").unwrap();
        assert_eq!(c.delivery.mta_sts, MtaStsMode::Mandatory);
        let e = load("[delivery]\nmta_sts = \"strict\"\n").unwrap_err();
        assert_eq!(e.key, "delivery.mta_sts");
        assert!(e.problem.contains("opportunistic, mandatory or off"), "{e}");
        let e = load("[delivery]\nmta_sts_ca_file = \"nowhere.crt\"\n").unwrap_err();
        assert_eq!(e.key, "delivery.mta_sts_ca_file");
        let c = load("[[connector.outbound]]\nname = \"x\"\nrecipient_domains = [\"x.test\"]\nmta_sts = \"off\"\n")
            .unwrap();
        assert_eq!(c.outbound_connectors[0].mta_sts, Some(MtaStsMode::Off));
        let e = load("[[connector.outbound]]\nname = \"x\"\nrecipient_domains = [\"x.test\"]\nsmart_hosts = [\"h.test:25\"]\nmta_sts = \"mandatory\"\n")
            .unwrap_err();
        assert_eq!(e.key, "connector.outbound[0].mta_sts");
        assert!(e.problem.contains("smart_hosts"), "{e}");
        let e = load("[[connector.outbound]]\nname = \"x\"\nrecipient_domains = [\"x.test\"]\ntls = \"required\"\nmta_sts = \"mandatory\"\n")
            .unwrap_err();
        assert_eq!(e.key, "connector.outbound[0].mta_sts");
    }
}

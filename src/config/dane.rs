//! The DANE keys (RFC 7672): `[delivery] dane`, each outbound connector's `dane`, and
//! `[dns] trust_anchor`, the DNSSEC trust anchor of the validating lookups DANE needs.

use std::path::PathBuf;

use super::file::{RawDelivery, RawDns};
use super::validate::Checker;
use super::{ConfigError, DaneMode, HostPort};
use crate::tls::policy::TlsLevel;

/// `[dns] trust_anchor`, checked: the file and the zone its DNSKEY records belong to (the zone
/// whose keys show that validation works, e.g. `.` for the root keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsTrustAnchor {
    pub path: PathBuf,
    pub zone: String,
}

/// A `dane` value: "opportunistic", "mandatory" or "off".
fn mode(c: &Checker, key: &str, value: Option<&str>) -> Result<Option<DaneMode>, ConfigError> {
    value
        .map(|v| {
            DaneMode::parse(v).ok_or_else(|| {
                c.err(
                    key,
                    format!("must be opportunistic, mandatory or off, not {v:?}"),
                )
            })
        })
        .transpose()
}

/// `[delivery] dane` (default opportunistic).
pub(super) fn delivery_dane(c: &Checker, raw: &RawDelivery) -> Result<DaneMode, ConfigError> {
    Ok(mode(c, "delivery.dane", raw.dane.as_deref())?.unwrap_or_default())
}

/// A connector's `dane`: only for connectors that deliver by MX and do not force TLS
/// themselves (their own `tls` wins).
pub(super) fn connector_dane(
    c: &Checker,
    key: &str,
    value: Option<&str>,
    smart_hosts: &[HostPort],
    tls: TlsLevel,
) -> Result<Option<DaneMode>, ConfigError> {
    let dane = mode(c, key, value)?;
    if dane.is_some() && !smart_hosts.is_empty() {
        return Err(c.err(
            key,
            "only for connectors that deliver by MX: this one has smart_hosts",
        ));
    }
    if dane.is_some_and(|m| m != DaneMode::Off) && tls != TlsLevel::Opportunistic {
        return Err(c.err(
            key,
            format!(
                "the connector's own tls = {:?} decides; DANE applies only with tls = \"opportunistic\" (or set dane = \"off\")",
                tls.as_str()
            ),
        ));
    }
    Ok(dane)
}

/// `[dns] trust_anchor`: a readable file of DNSKEY records, all of one zone.
pub(super) fn trust_anchor(
    c: &Checker,
    raw: &RawDns,
) -> Result<Option<DnsTrustAnchor>, ConfigError> {
    const KEY: &str = "dns.trust_anchor";
    let Some(value) = raw.trust_anchor.as_deref() else {
        return Ok(None);
    };
    let path = c.existing_file(KEY, value)?;
    let text = std::fs::read_to_string(&path)
        .map_err(|e| c.err(KEY, format!("cannot read {value}: {e}")))?;
    let zone = anchor_zone(&text).map_err(|why| c.err(KEY, format!("{value}: {why}")))?;
    hickory_resolver::proto::dnssec::TrustAnchors::from_file(&path)
        .map_err(|e| c.err(KEY, format!("{value}: {e}")))?;
    Ok(Some(DnsTrustAnchor { path, zone }))
}

/// The owner name of the DNSKEY records in a zone-file text (one zone only).
fn anchor_zone(text: &str) -> Result<String, String> {
    let mut zone: Option<String> = None;
    for line in text.lines() {
        let line = line.split(';').next().unwrap_or("");
        let fields: Vec<&str> = line.split_whitespace().collect();
        if !fields.iter().any(|f| f.eq_ignore_ascii_case("DNSKEY")) {
            continue;
        }
        let owner = fields[0].to_ascii_lowercase();
        if !owner.ends_with('.') {
            return Err(format!("the owner name {owner:?} is not absolute"));
        }
        match &zone {
            Some(z) if *z != owner => {
                return Err(format!("DNSKEY records of two zones ({z} and {owner})"))
            }
            _ => zone = Some(owner),
        }
    }
    zone.ok_or_else(|| "no DNSKEY record".to_string())
}

#[cfg(test)]
mod tests {
    use super::anchor_zone;
    use crate::config::{Config, DaneMode};
    use std::path::Path;

    const BASE: &str = "[server]\nhostname = \"mx.a.test\"\ndata_dir = \"d\"\n";

    fn load(extra: &str) -> Result<Config, crate::config::ConfigError> {
        Config::from_toml(Path::new("c.toml"), &format!("{BASE}{extra}"), None)
    }

    #[test]
    fn dane_keys_are_validated_with_their_key() {
        let c = load("").unwrap();
        assert_eq!(c.delivery.dane, DaneMode::Opportunistic);
        assert!(c.dns_trust_anchor.is_none());
        let c = load("[delivery]\ndane = \"off\"\n").unwrap();
        assert_eq!(c.delivery.dane, DaneMode::Off);
        let e = load("[delivery]\ndane = \"strict\"\n").unwrap_err();
        assert_eq!(e.key, "delivery.dane");
        assert!(e.problem.contains("opportunistic, mandatory or off"), "{e}");
        let e = load("[dns]\ntrust_anchor = \"nowhere.key\"\n").unwrap_err();
        assert_eq!(e.key, "dns.trust_anchor");
        let c = load("[[connector.outbound]]\nname = \"x\"\nrecipient_domains = [\"x.test\"]\ndane = \"mandatory\"\n")
            .unwrap();
        assert_eq!(c.outbound_connectors[0].dane, Some(DaneMode::Mandatory));
        let e = load("[[connector.outbound]]\nname = \"x\"\nrecipient_domains = [\"x.test\"]\nsmart_hosts = [\"h.test:25\"]\ndane = \"mandatory\"\n")
            .unwrap_err();
        assert_eq!(e.key, "connector.outbound[0].dane");
        let e = load("[[connector.outbound]]\nname = \"x\"\nrecipient_domains = [\"x.test\"]\ntls = \"required\"\ndane = \"opportunistic\"\n")
            .unwrap_err();
        assert_eq!(e.key, "connector.outbound[0].dane");
    }

    #[test]
    fn the_anchor_zone_is_the_dnskey_owner() {
        let text = "; root\n. 172800 IN DNSKEY 257 3 8 AwEAAa...\n. IN DNSKEY 256 3 8 AwEAAb\n";
        assert_eq!(anchor_zone(text).unwrap(), ".");
        let two = "a.test. IN DNSKEY 257 3 13 x\nb.test. IN DNSKEY 257 3 13 y\n";
        assert!(anchor_zone(two).unwrap_err().contains("two zones"));
        assert!(anchor_zone("a.test. IN DS 1 13 2 ab\n").is_err());
        assert!(anchor_zone("a.test IN DNSKEY 257 3 13 x\n").is_err());
    }
}

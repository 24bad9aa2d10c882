//! The hickory-backed resolver: MX, address and TXT lookups with delivery-oriented errors.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::dnssec::TrustAnchors;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::TokioResolver;

use super::error::{classify, Negative};
use super::mx::{display_name, implicit_mx, order_mx};
use super::{DnsError, MxHost};

/// Per-query timeout.
const TIMEOUT: Duration = Duration::from_secs(2);
/// hickory counts retries after the first try: 1 retry = 2 attempts in all.
const RETRIES: usize = 1;
/// Responses kept in the positive cache.
const CACHE_SIZE: u64 = 1024;
/// Upper bound on how long a positive answer is reused.
const POSITIVE_MAX_TTL: Duration = Duration::from_secs(300);

/// MX, address and TXT lookups for routing and policy discovery. Cheap to clone; clones share the cache and connections.
#[derive(Clone)]
pub struct Resolver {
    pub(super) inner: Arc<TokioResolver>,
    /// True when built by [`Resolver::validating`]: answers carry DNSSEC proofs.
    pub(super) validating: bool,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

/// The result of one (name, type) query.
enum Answer<T> {
    Found(Vec<T>),
    Missing(Negative),
}

impl Resolver {
    /// The hickory resolver underneath (same servers, options and cache), for libraries that
    /// take one (the sender checks of mail-auth).
    pub fn hickory(&self) -> TokioResolver {
        TokioResolver::clone(&self.inner)
    }

    /// Empty list: the system configuration (/etc/resolv.conf); if that cannot be read, a clear
    /// [`DnsError::Config`]. Otherwise exactly these servers, UDP with TCP fallback for truncated
    /// answers. Either way: 2 s timeout, 2 attempts, no /etc/hosts, no search domains (names are
    /// always queried as absolute), no negative caching, positive answers cached ≤ 5 minutes.
    pub fn new(nameservers: &[SocketAddr]) -> Result<Resolver, DnsError> {
        Resolver::build(nameservers, None)
    }

    /// Like [`Resolver::new`], but every answer is DNSSEC-validated here (RFC 4035 §5), with
    /// the IANA root keys as trust anchors, or with the DNSKEY records of `trust_anchor` (a zone
    /// file, the anchor's owner name on each record) instead. Needed for TLSA lookups
    /// ([`Resolver::tlsa`], [`Resolver::mx_secure`]); MX, address and TXT lookups work as
    /// through [`Resolver::new`], except that a bogus answer fails as [`DnsError::Temporary`].
    pub fn validating(
        nameservers: &[SocketAddr],
        trust_anchor: Option<&Path>,
    ) -> Result<Resolver, DnsError> {
        let anchors = match trust_anchor {
            None => TrustAnchors::default(),
            Some(path) => TrustAnchors::from_file(path).map_err(|e| {
                DnsError::Config(format!(
                    "cannot read the DNSSEC trust anchor {}: {e}",
                    path.display()
                ))
            })?,
        };
        Resolver::build(nameservers, Some(anchors))
    }

    fn build(
        nameservers: &[SocketAddr],
        anchors: Option<TrustAnchors>,
    ) -> Result<Resolver, DnsError> {
        let config = if nameservers.is_empty() {
            system_config()?
        } else {
            let servers = nameservers.iter().map(|addr| name_server(*addr)).collect();
            ResolverConfig::from_parts(None, Vec::new(), servers)
        };
        let mut builder =
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
        *builder.options_mut() = options();
        let validating = anchors.is_some();
        if let Some(anchors) = anchors {
            builder = builder.with_trust_anchor(Arc::new(anchors));
        }
        let inner = builder
            .build()
            .map_err(|e| DnsError::Config(format!("cannot build resolver: {e}")))?;
        Ok(Resolver {
            inner: Arc::new(inner),
            validating,
        })
    }

    /// RFC 5321 §5.1: MX records sorted by preference (ties shuffled); no MX records but the
    /// domain exists → implicit MX (the domain itself, preference 0); null MX (RFC 7505, a single
    /// MX ".") → [`DnsError::NullMx`]; NXDOMAIN or an invalid name → [`DnsError::NoSuchDomain`];
    /// timeouts, SERVFAIL and the like → [`DnsError::Temporary`].
    pub async fn mx_hosts(&self, domain: &str) -> Result<Vec<MxHost>, DnsError> {
        let shown = display_name(domain);
        let name = absolute_name(domain).ok_or_else(|| DnsError::NoSuchDomain(shown.clone()))?;
        let found = self
            .query(name, RecordType::MX, |rdata| match rdata {
                RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                _ => None,
            })
            .await;
        match found {
            // A CNAME chain that ends without MX records also lands here as NoData or empty.
            Answer::Found(records) if records.is_empty() => Ok(implicit_mx(&shown)),
            Answer::Found(records) => order_mx(&shown, &records, &mut rand::rng()),
            Answer::Missing(Negative::NoData) => Ok(implicit_mx(&shown)),
            Answer::Missing(Negative::NxDomain) => Err(DnsError::NoSuchDomain(shown)),
            Answer::Missing(Negative::Temporary(why)) => {
                Err(DnsError::Temporary(format!("MX lookup for {shown}: {why}")))
            }
        }
    }

    /// A and AAAA addresses of a host (queried in parallel; IPv4 first, duplicates removed).
    /// An IP address literal is returned as is. No address → [`DnsError::NoAddress`]; if one
    /// family answers and the other fails temporarily, the answered addresses are returned.
    pub async fn host_addresses(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let shown = display_name(host);
        let name = absolute_name(host).ok_or_else(|| DnsError::NoAddress(shown.clone()))?;
        let (v4, v6) = tokio::join!(
            self.query(name.clone(), RecordType::A, |rdata| match rdata {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                _ => None,
            }),
            self.query(name, RecordType::AAAA, |rdata| match rdata {
                RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
                _ => None,
            }),
        );
        let mut addrs: Vec<IpAddr> = Vec::new();
        let mut failures: Vec<String> = Vec::new();
        for (family, answer) in [("A", v4), ("AAAA", v6)] {
            match answer {
                Answer::Found(found) => {
                    for ip in found {
                        if !addrs.contains(&ip) {
                            addrs.push(ip);
                        }
                    }
                }
                Answer::Missing(Negative::Temporary(why)) => {
                    failures.push(format!("{family} lookup for {shown}: {why}"));
                }
                Answer::Missing(Negative::NxDomain | Negative::NoData) => {}
            }
        }
        if !addrs.is_empty() {
            if !failures.is_empty() {
                tracing::debug!(host = %shown, failures = ?failures, "partial address lookup");
            }
            Ok(addrs)
        } else if !failures.is_empty() {
            Err(DnsError::Temporary(failures.join("; ")))
        } else {
            Err(DnsError::NoAddress(shown))
        }
    }

    /// The TXT records of `name`, each record's strings joined (as RFC 7208 and RFC 8461 read
    /// them; invalid UTF-8 is replaced). NXDOMAIN or no TXT records → an empty list; timeouts,
    /// SERVFAIL and the like → [`DnsError::Temporary`]; a name DNS cannot carry →
    /// [`DnsError::NoSuchDomain`].
    pub async fn txt_records(&self, name: &str) -> Result<Vec<String>, DnsError> {
        let shown = display_name(name);
        let query = absolute_name(name).ok_or_else(|| DnsError::NoSuchDomain(shown.clone()))?;
        let found = self
            .query(query, RecordType::TXT, |rdata| match rdata {
                RData::TXT(txt) => Some(
                    txt.txt_data
                        .iter()
                        .map(|part| String::from_utf8_lossy(part))
                        .collect::<String>(),
                ),
                _ => None,
            })
            .await;
        match found {
            Answer::Found(records) => Ok(records),
            Answer::Missing(Negative::NxDomain | Negative::NoData) => Ok(Vec::new()),
            Answer::Missing(Negative::Temporary(why)) => Err(DnsError::Temporary(format!(
                "TXT lookup for {shown}: {why}"
            ))),
        }
    }

    /// One query; the answer records of the asked type (CNAMEs already followed by hickory).
    async fn query<T>(
        &self,
        name: Name,
        rtype: RecordType,
        pick: impl Fn(&RData) -> Option<T>,
    ) -> Answer<T> {
        match self.inner.lookup(name, rtype).await {
            Ok(lookup) => Answer::Found(
                lookup
                    .answers()
                    .iter()
                    .filter(|r| r.record_type() == rtype)
                    .filter_map(|r| pick(&r.data))
                    .collect(),
            ),
            Err(err) => Answer::Missing(classify(&err)),
        }
    }
}

/// Parse a domain (ASCII or UTF-8, which becomes A-labels) as an absolute name.
/// `None` for names DNS cannot carry; the root alone is not a mail domain either.
pub(super) fn absolute_name(domain: &str) -> Option<Name> {
    let trimmed = domain.trim();
    if trimmed.is_empty() || trimmed == "." {
        return None;
    }
    let mut name = Name::from_utf8(trimmed).ok()?;
    name.set_fqdn(true);
    Some(name)
}

fn name_server(addr: SocketAddr) -> NameServerConfig {
    let mut udp = ConnectionConfig::udp();
    udp.port = addr.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = addr.port();
    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
}

/// Where lookups go, for the log and `check-config`: the configured servers, or the system's
/// (from /etc/resolv.conf), or why there are none.
pub fn describe_nameservers(nameservers: &[SocketAddr]) -> String {
    if !nameservers.is_empty() {
        let shown: Vec<String> = nameservers.iter().map(|a| a.to_string()).collect();
        return shown.join(", ");
    }
    match system_config() {
        Ok(config) => {
            let shown: Vec<String> = config
                .name_servers()
                .iter()
                .map(|s| s.ip.to_string())
                .collect();
            format!("{} (/etc/resolv.conf)", shown.join(", "))
        }
        Err(e) => format!("none ({e})"),
    }
}

fn system_config() -> Result<ResolverConfig, DnsError> {
    let (config, _system_opts) =
        hickory_resolver::system_conf::read_system_conf().map_err(|e| {
            DnsError::Config(format!(
                "cannot read the system DNS configuration (/etc/resolv.conf): {e}"
            ))
        })?;
    if config.name_servers().is_empty() {
        return Err(DnsError::Config(
            "the system DNS configuration (/etc/resolv.conf) lists no name servers".to_string(),
        ));
    }
    // Search domains never apply to mail domains: names are queried as absolute anyway.
    Ok(ResolverConfig::from_parts(
        None,
        Vec::new(),
        config.name_servers().to_vec(),
    ))
}

fn options() -> ResolverOpts {
    let mut opts = ResolverOpts::default();
    opts.timeout = TIMEOUT;
    opts.attempts = RETRIES;
    opts.use_hosts_file = ResolveHosts::Never;
    opts.cache_size = CACHE_SIZE;
    opts.positive_max_ttl = Some(POSITIVE_MAX_TTL);
    opts.negative_min_ttl = Some(Duration::ZERO);
    opts.negative_max_ttl = Some(Duration::ZERO);
    opts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_absolute_and_idna_encoded() {
        let name = absolute_name("example.test").unwrap();
        assert!(name.is_fqdn());
        assert_eq!(name.to_ascii(), "example.test.");
        let name = absolute_name("bücher.test.").unwrap();
        assert_eq!(name.to_ascii(), "xn--bcher-kva.test.");
    }

    #[test]
    fn unusable_names_are_rejected() {
        assert!(absolute_name("").is_none());
        assert!(absolute_name(".").is_none());
        assert!(absolute_name("a..b").is_none());
        assert!(absolute_name(&format!("{}.test", "x".repeat(64))).is_none());
    }

    #[test]
    fn explicit_servers_keep_their_ports() {
        let ns = name_server("127.0.0.1:5353".parse().unwrap());
        assert_eq!(ns.ip, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(ns.connections.len(), 2);
        assert!(ns.connections.iter().all(|c| c.port == 5353));
    }

    #[test]
    fn options_are_short_and_never_cache_negatives() {
        let opts = options();
        assert_eq!(opts.timeout, Duration::from_secs(2));
        assert_eq!(opts.attempts, 1);
        assert_eq!(opts.negative_max_ttl, Some(Duration::ZERO));
        assert_eq!(opts.use_hosts_file, ResolveHosts::Never);
    }

    #[test]
    fn resolver_is_send_sync_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<Resolver>();
    }

    #[tokio::test]
    async fn address_literals_skip_dns() {
        // Port 9 (discard) on loopback: any query would fail, so success proves no query was made.
        let resolver = Resolver::new(&["127.0.0.1:9".parse().unwrap()]).unwrap();
        let addrs = resolver.host_addresses("::1").await.unwrap();
        assert_eq!(addrs, vec!["::1".parse::<IpAddr>().unwrap()]);
    }
}

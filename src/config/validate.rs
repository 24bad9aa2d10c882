//! Turns the file as written into a validated `Config`, naming the file, key and problem on error.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::file::RawConfig;
use super::{
    Config, ConfigError, DeliverySettings, HostPort, Listener, ListenerProtocol, QueueSettings,
    TlsFiles, TlsMinVersion,
};
use crate::units::parse_duration;

pub(super) struct Checker<'a> {
    file: &'a Path,
    dir: PathBuf,
}

impl<'a> Checker<'a> {
    /// A checker for the config file at `file` (relative paths start at its directory).
    pub(super) fn new(file: &'a Path) -> Checker<'a> {
        let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        Checker { file, dir }
    }

    pub(super) fn err(&self, key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            key: key.into(),
            problem: problem.into(),
        }
    }

    /// A path relative to the config file's directory.
    pub(super) fn path(&self, value: &str) -> PathBuf {
        let p = Path::new(value);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }

    pub(super) fn existing_file(&self, key: &str, value: &str) -> Result<PathBuf, ConfigError> {
        let p = self.path(value);
        if p.is_file() {
            Ok(p)
        } else {
            Err(self.err(key, format!("file not found: {value}")))
        }
    }

    pub(super) fn duration(
        &self,
        key: &str,
        value: Option<&str>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match value {
            None => Ok(default),
            Some(v) => parse_duration(v).map_err(|p| self.err(key, p)),
        }
    }
}

pub(super) fn is_domain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

pub(super) fn parse_host_port(value: &str) -> Option<HostPort> {
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Some(HostPort {
            host: addr.ip().to_string(),
            port: addr.port(),
        });
    }
    let (host, port) = value.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    is_domain(host).then(|| HostPort {
        host: host.to_ascii_lowercase(),
        port,
    })
}

pub fn validate(
    path: &Path,
    raw: RawConfig,
    data_dir: Option<&Path>,
) -> Result<Config, ConfigError> {
    let c = Checker::new(path);

    let hostname = raw.server.hostname.trim().to_ascii_lowercase();
    if !is_domain(&hostname) {
        return Err(c.err(
            "server.hostname",
            format!("not a host name: {:?}", raw.server.hostname),
        ));
    }
    let data_dir = match (data_dir, &raw.server.data_dir) {
        (Some(d), _) => d.to_path_buf(),
        (None, Some(d)) => c.path(d),
        (None, None) => return Err(c.err("server.data_dir", "missing (set it or pass --data-dir)")),
    };
    let mut relay_networks = Vec::new();
    for (i, n) in raw.server.relay_networks.iter().enumerate() {
        let net = n
            .parse::<ipnet::IpNet>()
            .or_else(|_| n.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| {
                c.err(
                    format!("server.relay_networks[{i}]"),
                    format!("not a network: {n:?}"),
                )
            })?;
        relay_networks.push(net);
    }

    let mut listeners = Vec::new();
    for (i, l) in raw.listener.iter().enumerate() {
        let address = l.address.parse::<SocketAddr>().map_err(|_| {
            c.err(
                format!("listener[{i}].address"),
                format!("not an address:port: {:?}", l.address),
            )
        })?;
        let protocol = match l.protocol.as_str() {
            "smtp" => ListenerProtocol::Smtp,
            "submission" => ListenerProtocol::Submission,
            "submissions" => ListenerProtocol::Submissions,
            "imap" => ListenerProtocol::Imap,
            "imaps" => ListenerProtocol::Imaps,
            other => return Err(c.err(
                format!("listener[{i}].protocol"),
                format!("unknown protocol {other:?} (expected smtp, submission, submissions, imap or imaps)"),
            )),
        };
        if protocol != ListenerProtocol::Smtp && raw.tls.is_none() {
            return Err(c.err(
                format!("listener[{i}].protocol"),
                format!(
                    "{} needs a [tls] certificate (logins are only accepted over TLS)",
                    l.protocol
                ),
            ));
        }
        listeners.push(Listener { address, protocol });
    }

    let tls = match &raw.tls {
        None => None,
        Some(t) => {
            let certificate = c.existing_file("tls.certificate", &t.certificate)?;
            let private_key = c.existing_file("tls.private_key", &t.private_key)?;
            let min_version = match t.min_version.as_str() {
                "1.2" => TlsMinVersion::Tls12,
                "1.3" => TlsMinVersion::Tls13,
                v => {
                    return Err(c.err(
                        "tls.min_version",
                        format!("must be \"1.2\" or \"1.3\", not {v:?}"),
                    ))
                }
            };
            let key = crate::tls::load_certified_key(&certificate, &private_key)
                .map_err(|e| c.err("tls", e.to_string()))?;
            Some(TlsFiles {
                certificate,
                private_key,
                min_version,
                session_tickets: t.session_tickets,
                key: std::sync::Arc::new(key),
            })
        }
    };

    let mut nameservers = Vec::new();
    for (i, n) in raw.dns.nameservers.iter().enumerate() {
        let addr = n
            .parse::<SocketAddr>()
            .or_else(|_| {
                n.parse::<std::net::IpAddr>()
                    .map(|ip| SocketAddr::new(ip, 53))
            })
            .map_err(|_| {
                c.err(
                    format!("dns.nameservers[{i}]"),
                    format!("not an address: {n:?}"),
                )
            })?;
        nameservers.push(addr);
    }
    let mut static_routes = BTreeMap::new();
    for (domain, target) in &raw.dns.static_routes {
        let key = format!("dns.static_routes.{domain:?}");
        let d = domain.to_ascii_lowercase();
        if !is_domain(&d) {
            return Err(c.err(key, "not a domain name"));
        }
        let hp = parse_host_port(target)
            .ok_or_else(|| c.err(&key, format!("expected host:port, got {target:?}")))?;
        static_routes.insert(d, hp);
    }

    let mut local_domains = crate::mail::DomainSet::default();
    for (i, d) in raw.domain.iter().enumerate() {
        let name = d.name.to_ascii_lowercase();
        if !is_domain(&name) {
            return Err(c.err(
                format!("domain[{i}].name"),
                format!("not a domain name: {:?}", d.name),
            ));
        }
        if static_routes.contains_key(&name) {
            return Err(c.err(
                format!("domain[{i}].name"),
                format!("{name} is local and also has a static route"),
            ));
        }
        if !local_domains.insert(&name) {
            return Err(c.err(
                format!("domain[{i}].name"),
                format!("{name} is listed twice"),
            ));
        }
    }
    let mut mailboxes = BTreeSet::new();
    for (i, m) in raw.mailbox.iter().enumerate() {
        let key = format!("mailbox[{i}].address");
        let addr = m.address.to_ascii_lowercase();
        let Some((local, domain)) = addr.rsplit_once('@') else {
            return Err(c.err(key, format!("not an address: {:?}", m.address)));
        };
        if local.is_empty()
            || local
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b'/')
        {
            return Err(c.err(key, format!("not an address: {:?}", m.address)));
        }
        if !local_domains.contains(domain) {
            return Err(c.err(key, format!("{domain} is not a local [[domain]]")));
        }
        if !mailboxes.insert(addr.clone()) {
            return Err(c.err(key, format!("{addr} is listed twice")));
        }
    }

    let queue = QueueSettings {
        retry_initial: c.duration(
            "queue.retry_initial",
            raw.queue.retry_initial.as_deref(),
            Duration::from_secs(60),
        )?,
        retry_max: c.duration(
            "queue.retry_max",
            raw.queue.retry_max.as_deref(),
            Duration::from_secs(3600),
        )?,
        lifetime: c.duration(
            "queue.lifetime",
            raw.queue.lifetime.as_deref(),
            Duration::from_secs(5 * 86400),
        )?,
        delay_warning: Some(c.duration(
            "queue.delay_warning",
            raw.queue.delay_warning.as_deref(),
            Duration::from_secs(4 * 3600),
        )?)
        .filter(|d| !d.is_zero()),
    };
    if queue.retry_initial.is_zero() || queue.retry_max < queue.retry_initial {
        return Err(c.err(
            "queue.retry_max",
            "must be at least queue.retry_initial, which must be above zero",
        ));
    }
    let delivery = DeliverySettings {
        smtp_port: raw.delivery.smtp_port.unwrap_or(25),
        concurrency: raw.delivery.concurrency.unwrap_or(32),
        timeout: c.duration(
            "delivery.timeout",
            raw.delivery.timeout.as_deref(),
            Duration::from_secs(60),
        )?,
        connection_reuse_time: c.duration(
            "delivery.connection_reuse_time",
            raw.delivery.connection_reuse_time.as_deref(),
            Duration::from_secs(5),
        )?,
        mta_sts: super::connectors::delivery_mta_sts(&c, &raw.delivery)?,
        dane: super::dane::delivery_dane(&c, &raw.delivery)?,
    };
    let mta_sts_anchors = super::connectors::delivery_mta_sts_anchors(&c, &raw.delivery)?;
    if delivery.concurrency == 0 {
        return Err(c.err("delivery.concurrency", "must be at least 1"));
    }
    let limits = super::limits::limits(&c, &raw.limits)?;
    let shutdown_timeout = super::limits::shutdown_timeout(&c, &raw.server)?;

    let users = super::users::validate(&c, &raw.user, &raw.server)?;
    let outbound_connectors = super::connectors::outbound(&c, &raw.connector.outbound)?;
    let inbound_connectors = super::connectors::inbound(&c, &raw.connector.inbound)?;
    let (rules_dir, rules) = load_rules(&c, raw.rules.as_ref())?;
    let smime = super::smime::check(&c, raw.smime.as_ref())?;
    let pkcs11 = super::pkcs11::check(&c, raw.pkcs11.as_ref())?;
    let rms_tenant_key_dir = super::pkcs11::tenant_key_dir(&c, raw.rms.as_ref(), pkcs11.as_ref())?;
    super::rule_needs::check(
        &c,
        &rules,
        &super::rule_needs::Available {
            smime_certificate_dir: smime.certificate_dir.as_deref(),
            smime_signing_dir: smime.signing.as_ref().map(|s| s.dir.as_path()),
            rms_tenant_key_dir: rms_tenant_key_dir.as_deref(),
            outbound_connectors: &outbound_connectors,
        },
    )?;
    let mut rms_templates = BTreeMap::new();
    for (i, t) in raw.rms.iter().flat_map(|r| r.template.iter()).enumerate() {
        let key = format!("rms.template[{i}].name");
        if crate::crypto::rms::builtin_template(&t.name).is_some() {
            return Err(c.err(key, format!("{:?} is a built-in template", t.name)));
        }
        if t.name.trim().is_empty()
            || rms_templates
                .insert(t.name.clone(), t.rights.clone())
                .is_some()
        {
            return Err(c.err(
                key,
                format!("missing or duplicate template name {:?}", t.name),
            ));
        }
    }
    let rms_licensing = super::licensing::validate(
        &c,
        raw.rms.as_ref().and_then(|r| r.licensing.as_ref()),
        tls.as_ref().map(|t| &t.key),
        !users.hashes.is_empty(),
    )?;
    let domains: Vec<(usize, String, Option<String>)> = raw
        .domain
        .iter()
        .enumerate()
        .map(|(i, d)| (i, d.name.to_ascii_lowercase(), d.encryption_policy.clone()))
        .collect();
    let boxes: Vec<(usize, String, Option<String>)> = raw
        .mailbox
        .iter()
        .enumerate()
        .map(|(i, m)| {
            (
                i,
                m.address.to_ascii_lowercase(),
                m.encryption_policy.clone(),
            )
        })
        .collect();
    let encryption = super::encryption::validate(
        path,
        &c.dir,
        &data_dir,
        super::encryption::RawPolicies {
            policies: &raw.encryption_policy,
            pkcs11: pkcs11.as_ref(),
        },
        raw.store.as_ref(),
        &domains,
        &boxes,
    )?;

    let operations = super::operations::validate(
        path,
        &c.dir,
        &data_dir,
        raw.admin.as_ref(),
        raw.trace.as_ref(),
    )?;

    let tls_report = super::tls_report::settings(&c, raw.tls_report.as_ref(), &hostname)?;
    let storage = super::storage::settings(&c, raw.storage.as_ref())?;
    let (dkim, sender_auth) =
        super::dkim::validate(&c, &raw.dkim, raw.sender_auth.as_ref(), &local_domains)?;
    Ok(Config {
        path: path.to_path_buf(),
        hostname,
        data_dir,
        relay_networks,
        shutdown_timeout,
        listeners,
        tls,
        nameservers,
        dns_trust_anchor: super::dane::trust_anchor(&c, &raw.dns)?,
        static_routes,
        local_domains,
        mailboxes,
        queue,
        delivery,
        mta_sts_anchors,
        limits,
        outbound_connectors,
        inbound_connectors,
        rules_dir,
        rules,
        smime_certificate_dir: smime.certificate_dir,
        smime_signing: smime.signing,
        rms_tenant_key_dir,
        pkcs11,
        rms_templates,
        rms_licensing,
        users: users.hashes,
        user_addresses: users.addresses,
        user_mailboxes: users.mailboxes,
        sender_login_mismatch: users.mismatch,
        always_add_missing_headers: raw.server.always_add_missing_headers,
        encryption_policies: encryption.policies,
        mailbox_policies: encryption.mailboxes,
        store: encryption.store,
        tls_report,
        storage,
        operations,
        dkim,
        sender_auth,
    })
}

/// `[rules] dir`, relative to the config file; a bad rule file is reported under `rules.dir`.
fn load_rules(
    c: &Checker,
    raw: Option<&super::file::RawRules>,
) -> Result<(Option<PathBuf>, crate::rules::RuleSet), ConfigError> {
    let Some(raw) = raw else {
        return Ok((None, crate::rules::RuleSet::default()));
    };
    let dir = c.path(&raw.dir);
    if !dir.is_dir() {
        return Err(c.err("rules.dir", format!("not a directory: {}", raw.dir)));
    }
    let rules = crate::rules::load_dir(&dir).map_err(|e| c.err("rules.dir", e.to_string()))?;
    Ok((Some(dir), rules))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(Path::new("/etc/sealpost/test.toml"), text, None)
    }

    const MINIMAL: &str = r#"
[server]
hostname = "mx.example.test"
data_dir = "data"
[[domain]]
name = "example.test"
encryption_policy = "none"
[[mailbox]]
address = "Alice@Example.test"
"#;

    #[test]
    fn minimal_config_has_safe_defaults() {
        let c = load(MINIMAL).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/etc/sealpost/data"));
        assert!(c.relay_networks.is_empty(), "no relay unless configured");
        assert!(!c.relay_allowed("127.0.0.1".parse().unwrap()));
        assert!(c.is_local_mailbox("alice@EXAMPLE.test"));
        assert_eq!(c.queue.lifetime, Duration::from_secs(5 * 86400));
        assert!(c.tls.is_none());
        assert!(c.rules_dir.is_none() && c.rules.is_empty());
    }

    #[test]
    fn rules_dir_is_relative_to_the_config_and_rule_errors_are_keyed() {
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("rules");
        std::fs::create_dir(&rules).unwrap();
        let rule = "name = \"a\"\npriority = 1\n[[actions]]\ntype = \"require_tls\"\n";
        std::fs::write(rules.join("a.toml"), rule).unwrap();
        let path = dir.path().join("c.toml");
        let text = format!("{MINIMAL}\n[rules]\ndir = \"rules\"\n");
        let c = Config::from_toml(&path, &text, None).unwrap();
        assert_eq!(c.rules_dir, Some(rules.clone()));
        assert_eq!(c.rules.len(), 1);

        let bad = "name = \"b\"\npriority = 1\n[[actions]]\ntype = \"reject\"\ncode = 250\n";
        std::fs::write(rules.join("b.toml"), bad).unwrap();
        let e = Config::from_toml(&path, &text, None).unwrap_err();
        assert_eq!(e.key, "rules.dir");
        let prefix = format!("{}:3: ", rules.join("b.toml").display());
        assert!(e.problem.starts_with(&prefix), "{e}");
        assert!(e.problem.contains("250"), "{e}");

        let text = format!("{MINIMAL}\n[rules]\ndir = \"nope\"\n");
        let e = Config::from_toml(&path, &text, None).unwrap_err();
        assert_eq!(
            (e.key.as_str(), e.problem.as_str()),
            ("rules.dir", "not a directory: nope")
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let e = load(&format!("{MINIMAL}\n[queue]\nretry_intial = \"1m\"\n")).unwrap_err();
        assert!(e.to_string().contains("retry_intial"), "{e}");
        assert!(
            e.to_string().starts_with("/etc/sealpost/test.toml: "),
            "{e}"
        );
    }

    #[test]
    fn missing_key_file_names_file_key_and_path() {
        let text =
            format!("{MINIMAL}\n[tls]\ncertificate = \"nope.crt\"\nprivate_key = \"nope.key\"\n");
        let e = load(&text).unwrap_err();
        assert_eq!(e.key, "tls.certificate");
        assert_eq!(
            e.to_string(),
            "/etc/sealpost/test.toml: tls.certificate: file not found: nope.crt"
        );
    }

    #[test]
    fn mailbox_outside_local_domains_is_refused() {
        let e = load(&format!(
            "{MINIMAL}\n[[mailbox]]\naddress = \"bob@other.test\"\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "mailbox[1].address");
        assert!(e.problem.contains("other.test"));
    }

    #[test]
    fn bad_values_are_refused_with_their_key() {
        let cases = [
            ("[server]\nhostname = \"mx.example.test\"\ndata_dir = \"d\"\nrelay_networks = [\"10.0.0.0/33\"]\n", "server.relay_networks[0]"),
            ("[server]\nhostname = \"mx.example.test\"\ndata_dir = \"d\"\n[[listener]]\naddress = \"localhost\"\n", "listener[0].address"),
            ("[server]\nhostname = \"mx.example.test\"\ndata_dir = \"d\"\n[dns.static_routes]\n\"a.test\" = \"nohost\"\n", "dns.static_routes.\"a.test\""),
            ("[server]\nhostname = \"mx.example.test\"\ndata_dir = \"d\"\n[queue]\nlifetime = \"soon\"\n", "queue.lifetime"),
            ("[server]\nhostname = \"bad host\"\ndata_dir = \"d\"\n", "server.hostname"),
            ("[server]\nhostname = \"mx.example.test\"\n", "server.data_dir"),
        ];
        for (text, key) in cases {
            let e = load(text).unwrap_err();
            assert_eq!(e.key, key, "{text}: {e}");
        }
    }

    #[test]
    fn data_dir_override_wins() {
        let c =
            Config::from_toml(Path::new("x.toml"), MINIMAL, Some(Path::new("/tmp/other"))).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/tmp/other"));
    }

    #[test]
    fn static_route_accepts_names_and_ips() {
        assert_eq!(
            parse_host_port("127.0.0.1:2526"),
            Some(HostPort {
                host: "127.0.0.1".into(),
                port: 2526
            })
        );
        assert_eq!(
            parse_host_port("[::1]:25"),
            Some(HostPort {
                host: "::1".into(),
                port: 25
            })
        );
        assert_eq!(
            parse_host_port("MX.b.test:25"),
            Some(HostPort {
                host: "mx.b.test".into(),
                port: 25
            })
        );
        assert_eq!(parse_host_port("mx.b.test"), None);
    }
}

//! Routing: where each recipient's mail goes (local mailbox, static route, a connector's smart
//! hosts, or MX), a pure function of the validated configuration. The SMTP server asks it to
//! refuse relaying, the queue runner to deliver: both get the same answer.

use super::{Config, HostPort};
use crate::mail::domain_of;

/// Where the mail for one recipient goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Route {
    /// A mailbox of a local domain.
    Local,
    /// Another server.
    Remote(Destination),
}

/// A remote destination; recipients with the same destination share one SMTP transaction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Destination {
    pub hop: NextHop,
    /// The outbound connector whose TLS policy applies; None: opportunistic.
    pub connector: Option<String>,
}

/// Which servers receive the mail.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NextHop {
    /// `dns.static_routes`: this host and port, no MX lookup.
    Static(HostPort),
    /// A connector's smart hosts, tried in order.
    SmartHosts(Vec<HostPort>),
    /// The domain's MX hosts (or its address records, RFC 5321 §5.1).
    Mx(String),
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.hop {
            NextHop::Static(hp) => write!(f, "static route {hp}")?,
            NextHop::SmartHosts(hosts) => {
                let list: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
                write!(f, "smart hosts {}", list.join(", "))?
            }
            NextHop::Mx(domain) => write!(f, "MX of {domain}")?,
        }
        if let Some(c) = &self.connector {
            write!(f, " via connector {c}")?;
        }
        Ok(())
    }
}

/// Routes a recipient through a named outbound connector (a transport rule's `route_via`); an
/// unknown connector name falls back to normal routing.
pub fn route_via(config: &Config, recipient: &str, connector: &str) -> Route {
    let Route::Remote(mut dest) = route(config, recipient) else {
        return Route::Local;
    };
    if let Some(c) = config
        .outbound_connectors
        .iter()
        .find(|c| c.name == connector)
    {
        if !c.smart_hosts.is_empty() {
            dest.hop = NextHop::SmartHosts(c.smart_hosts.clone());
        }
        dest.connector = Some(c.name.clone());
    }
    Route::Remote(dest)
}

/// Routes one recipient: local domains first; otherwise a connector's smart hosts, a static
/// route, or MX, under the connector's TLS policy when a connector claims the domain.
pub fn route(config: &Config, recipient: &str) -> Route {
    let domain = domain_of(recipient).to_ascii_lowercase();
    let domain = domain.trim_end_matches('.');
    if config.is_local_domain(domain) {
        return Route::Local;
    }
    let connector = config.outbound_connector(domain);
    let hop = match (connector, config.static_routes.get(domain)) {
        (Some(c), _) if !c.smart_hosts.is_empty() => NextHop::SmartHosts(c.smart_hosts.clone()),
        (_, Some(hp)) => NextHop::Static(hp.clone()),
        _ => NextHop::Mx(domain.to_string()),
    };
    Route::Remote(Destination {
        hop,
        connector: connector.map(|c| c.name.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn routes_local_static_and_mx() {
        let text = r#"
[server]
hostname = "mx.a.test"
data_dir = "d"
[dns.static_routes]
"b.test" = "127.0.0.1:2526"
[[domain]]
name = "a.test"
"#;
        let c = Config::from_toml(Path::new("c.toml"), text, None).unwrap();
        assert_eq!(route(&c, "x@A.test"), Route::Local);
        let hp = HostPort {
            host: "127.0.0.1".into(),
            port: 2526,
        };
        assert_eq!(
            route(&c, "bob@B.TEST"),
            Route::Remote(Destination {
                hop: NextHop::Static(hp),
                connector: None
            })
        );
        assert_eq!(
            route(&c, "carol@c.test."),
            Route::Remote(Destination {
                hop: NextHop::Mx("c.test".into()),
                connector: None
            })
        );
    }

    #[test]
    fn connectors_claim_domains_and_bring_smart_hosts() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/x.toml");
        let text = r#"
[server]
hostname = "mx.a.test"
data_dir = "d"
[dns.static_routes]
"b.test" = "127.0.0.1:2526"
[[connector.outbound]]
name = "to-b"
recipient_domains = ["b.test", "*.c.test"]
tls = "verify-name"
ca_file = "pki/ca.crt"
[[connector.outbound]]
name = "to-d"
recipient_domains = ["d.test"]
smart_hosts = ["relay.d.test:587"]
tls = "required"
"#;
        let c = Config::from_toml(&dir, text, None).unwrap();
        let hp = HostPort {
            host: "127.0.0.1".into(),
            port: 2526,
        };
        let b = Some("to-b".to_string());
        assert_eq!(
            route(&c, "x@b.test"),
            Route::Remote(Destination {
                hop: NextHop::Static(hp),
                connector: b.clone()
            })
        );
        assert_eq!(
            route(&c, "x@eu.c.test"),
            Route::Remote(Destination {
                hop: NextHop::Mx("eu.c.test".into()),
                connector: b
            })
        );
        assert_eq!(
            route(&c, "x@c.test"),
            Route::Remote(Destination {
                hop: NextHop::Mx("c.test".into()),
                connector: None
            })
        );
        let relay = HostPort {
            host: "relay.d.test".into(),
            port: 587,
        };
        assert_eq!(
            route(&c, "x@d.test"),
            Route::Remote(Destination {
                hop: NextHop::SmartHosts(vec![relay]),
                connector: Some("to-d".into())
            })
        );
    }
}

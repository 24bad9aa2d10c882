//! Delivery: where each recipient's mail goes (local mailbox, static route, MX) and getting it there.

pub mod remote;

use crate::config::{Config, HostPort};

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
pub enum Destination {
    /// `dns.static_routes`: this host and port, no MX lookup.
    Static(HostPort),
    /// The domain's MX hosts (or its address records, RFC 5321 §5.1).
    Mx(String),
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Static(hp) => write!(f, "static route {hp}"),
            Destination::Mx(domain) => write!(f, "MX of {domain}"),
        }
    }
}

/// The domain of an address, lowercased ("" if there is none).
pub fn domain_of(address: &str) -> String {
    address
        .rsplit_once('@')
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_default()
}

/// Routes one recipient: local domains first, then static routes, then MX.
pub fn route(config: &Config, recipient: &str) -> Route {
    let domain = domain_of(recipient);
    let domain = domain.trim_end_matches('.');
    if config.is_local_domain(domain) {
        Route::Local
    } else if let Some(hp) = config.static_routes.get(domain) {
        Route::Remote(Destination::Static(hp.clone()))
    } else {
        Route::Remote(Destination::Mx(domain.to_string()))
    }
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
        assert_eq!(
            route(&c, "bob@B.TEST"),
            Route::Remote(Destination::Static(HostPort {
                host: "127.0.0.1".into(),
                port: 2526
            }))
        );
        assert_eq!(
            route(&c, "carol@c.test."),
            Route::Remote(Destination::Mx("c.test".into()))
        );
    }
}

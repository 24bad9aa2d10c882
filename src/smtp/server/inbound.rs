//! Inbound connectors at work: what a partner must do (TLS, client certificate) before MAIL FROM
//! is accepted, and the connector and verification recorded for the Received header.

use std::net::IpAddr;
use std::sync::Arc;

use super::policy::{LocalPolicy, Policy};
use super::session::SessionFacts;
pub use super::transaction::InboundVerdict;
use crate::config::{Config, InboundConnector};
use crate::mail::domain_of;
use crate::mail::Reply;
use crate::tls::policy::check_client;
use crate::tls::TlsFacts;

/// The inbound connectors of a configuration (their trust anchors were loaded by validation).
#[derive(Clone, Default)]
pub struct InboundConnectors {
    list: Vec<InboundConnector>,
}

impl InboundConnectors {
    pub fn from_config(config: &Config) -> Self {
        InboundConnectors {
            list: config.inbound_connectors.clone(),
        }
    }

    /// Whether any connector checks client certificates (the listener then asks for one).
    pub fn wants_client_certificates(&self) -> bool {
        self.list
            .iter()
            .any(|c| !c.client_certificate_names.is_empty())
    }

    /// Applies every connector matching the client and sender. Ok(None): no connector applies.
    pub fn check(
        &self,
        client: IpAddr,
        sender: &str,
        tls: Option<&TlsFacts>,
    ) -> Result<Option<InboundVerdict>, Reply> {
        let domain = domain_of(sender).to_ascii_lowercase();
        let mut verdict = None;
        for c in self.list.iter().filter(|c| c.matches(client, &domain)) {
            if c.require_tls && tls.is_none() {
                return Err(Reply::new(
                    530,
                    [5, 7, 0],
                    "Must issue a STARTTLS command first",
                ));
            }
            let detail = match (&c.client_certificate_names[..], &c.anchors, tls) {
                ([], _, Some(t)) => format!("TLS ({})", t.version),
                ([], _, None) => "no TLS".to_string(),
                (names, Some(anchors), Some(t)) => {
                    check_client(&t.peer_certificates, anchors, names).map_err(|reason| {
                        Reply::new(
                            550,
                            [5, 7, 1],
                            format!(
                                "Client certificate required by connector {}: {reason}",
                                c.name
                            ),
                        )
                    })?
                }
                (_, _, _) => {
                    return Err(Reply::new(
                        550,
                        [5, 7, 1],
                        format!("Connector {} cannot verify client certificates", c.name),
                    ));
                }
            };
            verdict.get_or_insert(InboundVerdict {
                connector: c.name.clone(),
                detail,
            });
        }
        Ok(verdict)
    }
}

/// Local delivery and relay rules (LocalPolicy) plus the inbound connectors' demands.
pub struct ConnectorPolicy {
    pub local: LocalPolicy,
    pub inbound: Arc<InboundConnectors>,
}

impl Policy for ConnectorPolicy {
    fn check_sender(
        &self,
        facts: &SessionFacts,
        sender: &str,
    ) -> Result<Option<InboundVerdict>, Reply> {
        self.local.check_sender(facts, sender)?;
        self.inbound
            .check(facts.peer.ip(), sender, facts.tls.as_ref())
    }

    fn check_recipient(&self, facts: &SessionFacts, sender: &str, rcpt: &str) -> Result<(), Reply> {
        self.local.check_recipient(facts, sender, rcpt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn connectors() -> InboundConnectors {
        let text = r#"
[server]
hostname = "mx.fabrikam.test"
data_dir = "d"
[[connector.inbound]]
name = "from-contoso"
sender_domains = ["contoso.test"]
require_tls = true
client_certificate_names = ["mx.contoso.test"]
ca_file = "pki/ca.crt"
[[connector.inbound]]
name = "from-lab"
client_networks = ["10.0.0.0/8"]
require_tls = true
"#;
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/x.toml");
        InboundConnectors::from_config(&Config::from_toml(&path, text, None).unwrap())
    }

    fn facts_with_cert(host: &str) -> TlsFacts {
        let pki = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pki");
        let key = crate::tls::load_certified_key(
            &pki.join(format!("{host}.crt")),
            &pki.join(format!("{host}.key")),
        )
        .unwrap();
        TlsFacts {
            peer_certificates: key.chain,
            ..TlsFacts::new("TLSv1.3", "TLS_AES_256_GCM_SHA384")
        }
    }

    #[test]
    fn partner_must_use_tls_and_the_right_certificate() {
        let c = connectors();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(c.wants_client_certificates());
        let e = c.check(ip, "alice@contoso.test", None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "530 5.7.0 Must issue a STARTTLS command first"
        );
        let bare = TlsFacts::new("TLSv1.3", "X");
        let e = c.check(ip, "alice@contoso.test", Some(&bare)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "550 5.7.1 Client certificate required by connector from-contoso: no client certificate presented"
        );
        let e = c
            .check(
                ip,
                "alice@contoso.test",
                Some(&facts_with_cert("mx.fabrikam.test")),
            )
            .unwrap_err();
        assert!(
            e.to_string().contains("does not name mx.contoso.test"),
            "{e}"
        );
        let ok = c
            .check(
                ip,
                "Alice@Contoso.TEST",
                Some(&facts_with_cert("mx.contoso.test")),
            )
            .unwrap()
            .unwrap();
        assert_eq!(ok.connector, "from-contoso");
        assert_eq!(
            ok.detail,
            "client certificate verified mx.contoso.test via ca.crt"
        );
        // Other senders from elsewhere are not concerned.
        assert_eq!(c.check(ip, "x@other.test", None).unwrap(), None);
        // A network-matched connector applies whatever the sender.
        let lab: IpAddr = "10.1.2.3".parse().unwrap();
        assert!(c.check(lab, "", None).is_err());
    }
}

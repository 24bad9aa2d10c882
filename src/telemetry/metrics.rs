//! Prometheus metrics of one server (OpenMetrics text, served on `[admin] listen` at /metrics).
//!
//! Each server owns its registry, so several servers in one process (the demo, the tests) count
//! apart. Counters are labelled with short, bounded values: listener protocol, connector name,
//! TLS version, failure class, rule name, action kind.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Where a TLS handshake happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// The result of one delivery attempt for one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryResult {
    Delivered,
    Deferred,
    Bounced,
}

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    sessions: Family<Labels, Counter>,
    sessions_active: Gauge,
    connections_refused: Family<Labels, Counter>,
    received: Family<Labels, Counter>,
    delivered: Family<Labels, Counter>,
    deferred: Family<Labels, Counter>,
    bounced: Family<Labels, Counter>,
    tls_handshakes: Family<Labels, Counter>,
    tls_failures: Family<Labels, Counter>,
    rule_matches: Family<Labels, Counter>,
    encryption: Family<Labels, Counter>,
    smime_signing: Family<Labels, Counter>,
    sender_auth: Family<Labels, Counter>,
    dkim_signed: Family<Labels, Counter>,
    store_ops: Family<Labels, Counter>,
    notifications: Family<Labels, Counter>,
    queue: Family<Labels, Gauge>,
    reloads: Family<Labels, Counter>,
    retransmissions: Counter,
    queue_fsyncs: Counter,
    queue_claims: Family<Labels, Counter>,
    tls_policies: Family<Labels, Counter>,
    imap_sessions: Family<Labels, Counter>,
    imap_logins: Family<Labels, Counter>,
    imap_bytes: Counter,
    imap_streamed: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("sealpost");
        let m = Metrics {
            sessions: Family::default(),
            sessions_active: Gauge::default(),
            connections_refused: Family::default(),
            received: Family::default(),
            delivered: Family::default(),
            deferred: Family::default(),
            bounced: Family::default(),
            tls_handshakes: Family::default(),
            tls_failures: Family::default(),
            rule_matches: Family::default(),
            encryption: Family::default(),
            smime_signing: Family::default(),
            sender_auth: Family::default(),
            dkim_signed: Family::default(),
            store_ops: Family::default(),
            notifications: Family::default(),
            queue: Family::default(),
            reloads: Family::default(),
            retransmissions: Counter::default(),
            queue_fsyncs: Counter::default(),
            queue_claims: Family::default(),
            tls_policies: Family::default(),
            imap_sessions: Family::default(),
            imap_logins: Family::default(),
            imap_bytes: Counter::default(),
            imap_streamed: Counter::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "smtp_sessions",
            "SMTP sessions accepted, by listener protocol",
            m.sessions.clone(),
        );
        r.register(
            "smtp_sessions_active",
            "SMTP sessions open now",
            m.sessions_active.clone(),
        );
        r.register(
            "smtp_connections_refused",
            "Connections answered 421 at connect, by limit",
            m.connections_refused.clone(),
        );
        r.register(
            "messages_received",
            "Messages queued after DATA (one per queued copy), by inbound connector",
            m.received.clone(),
        );
        r.register(
            "messages_delivered",
            "Recipients delivered, by outbound connector (\"local\" for mailboxes)",
            m.delivered.clone(),
        );
        r.register(
            "messages_deferred",
            "Recipient delivery attempts that failed temporarily, by outbound connector",
            m.deferred.clone(),
        );
        r.register(
            "messages_bounced",
            "Recipients that failed permanently (bounced), by outbound connector",
            m.bounced.clone(),
        );
        r.register(
            "tls_handshakes",
            "TLS handshakes completed, by direction and protocol version",
            m.tls_handshakes.clone(),
        );
        r.register(
            "tls_failures",
            "TLS handshakes or TLS policies that failed, by direction and reason",
            m.tls_failures.clone(),
        );
        r.register(
            "rule_matches",
            "Transport rule actions applied, by rule and action",
            m.rule_matches.clone(),
        );
        r.register(
            "sender_auth_results",
            "Checks of mail from outside, by method (spf, dkim, arc, dmarc) and result",
            m.sender_auth.clone(),
        );
        r.register(
            "dkim_signatures",
            "Outbound messages DKIM-signed, by signing domain and result (signed, failed)",
            m.dkim_signed.clone(),
        );
        r.register(
            "encryption_operations",
            "Messages encrypted by a transport rule, by kind (smime, rms)",
            m.encryption.clone(),
        );
        r.register(
            "smime_signing",
            "S/MIME signing by transport rule, by outcome (signed, unsigned: no usable signing \
             key and the rule delivers unsigned, already-signed)",
            m.smime_signing.clone(),
        );
        r.register(
            "store_operations",
            "Mailbox store operations, by operation and result",
            m.store_ops.clone(),
        );
        r.register(
            "notifications",
            "Delivery status notifications queued, by kind",
            m.notifications.clone(),
        );
        r.register(
            "queue_messages",
            "Messages in the queue, by state",
            m.queue.clone(),
        );
        r.register(
            "config_reloads",
            "Configuration reloads, by result",
            m.reloads.clone(),
        );
        r.register(
            "queue_fsyncs",
            "Directory fsyncs that made queue changes durable; concurrent transactions share \
             them, so under load there are fewer than messages",
            m.queue_fsyncs.clone(),
        );
        r.register(
            "queue_claims",
            "Messages taken from the queue for a delivery attempt, by when: on arrival (claimed \
             as the cleanup stage queued them, a delivery slot being free) or by the runner",
            m.queue_claims.clone(),
        );
        r.register(
            "retransmissions",
            "Messages received again from a client that missed our 250, acknowledged without a second copy",
            m.retransmissions.clone(),
        );
        r.register(
            "outbound_tls_policies",
            "Outbound TLS policies chosen before connecting, by source (mta-sts, connector, opportunistic) and outcome",
            m.tls_policies.clone(),
        );
        r.register(
            "imap_sessions",
            "IMAP sessions accepted, by listener protocol (imap, imaps)",
            m.imap_sessions.clone(),
        );
        r.register(
            "imap_logins",
            "IMAP logins, by result (ok, failed)",
            m.imap_logins.clone(),
        );
        r.register(
            "imap_bytes_served",
            "Bytes written to IMAP clients",
            m.imap_bytes.clone(),
        );
        r.register(
            "imap_streamed_messages",
            "Large messages sent to IMAP clients piece by piece from the store",
            m.imap_streamed.clone(),
        );
        Metrics { registry, ..m }
    }

    pub fn session_opened(&self, listener: &str) {
        self.sessions
            .get_or_create(&vec![("listener", listener.to_string())])
            .inc();
        self.sessions_active.inc();
    }

    pub fn imap_session(&self, listener: &str) {
        self.imap_sessions
            .get_or_create(&vec![("listener", listener.to_string())])
            .inc();
    }

    pub fn imap_login(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.imap_logins
            .get_or_create(&vec![("result", result.to_string())])
            .inc();
    }

    pub fn imap_bytes(&self, n: usize) {
        self.imap_bytes.inc_by(n as u64);
    }

    pub fn imap_streamed(&self) {
        self.imap_streamed.inc();
    }

    pub fn session_closed(&self) {
        self.sessions_active.dec();
    }

    pub fn connection_refused(&self, reason: &str) {
        self.connections_refused
            .get_or_create(&vec![("reason", reason.to_string())])
            .inc();
    }

    pub fn received(&self, connector: Option<&str>) {
        self.received
            .get_or_create(&connector_label(connector))
            .inc();
    }

    pub fn delivery(&self, connector: Option<&str>, result: DeliveryResult) {
        let family = match result {
            DeliveryResult::Delivered => &self.delivered,
            DeliveryResult::Deferred => &self.deferred,
            DeliveryResult::Bounced => &self.bounced,
        };
        family.get_or_create(&connector_label(connector)).inc();
    }

    pub fn tls_handshake(&self, direction: Direction, version: &str) {
        self.tls_handshakes
            .get_or_create(&vec![
                ("direction", direction.as_str().to_string()),
                ("version", version.to_string()),
            ])
            .inc();
    }

    /// Counts a failed handshake or unmet TLS policy under the failure's bounded class.
    pub fn tls_failure(&self, direction: Direction, failure: &crate::tls::policy::TlsFailure) {
        self.tls_failures
            .get_or_create(&vec![
                ("direction", direction.as_str().to_string()),
                ("reason", failure.metric_class().to_string()),
            ])
            .inc();
    }

    /// Counts the TLS policy chosen for one delivery attempt: `source` is "mta-sts",
    /// "connector" or "opportunistic"; `outcome` a short word ("enforce", "testing",
    /// "absent", "mx-mismatch", "missing-policy", ...).
    pub fn tls_policy(&self, source: &'static str, outcome: &'static str) {
        self.tls_policies
            .get_or_create(&vec![
                ("source", source.to_string()),
                ("outcome", outcome.to_string()),
            ])
            .inc();
    }

    pub fn rule_match(&self, rule: &str, action: &str) {
        self.rule_matches
            .get_or_create(&vec![
                ("rule", rule.to_string()),
                ("action", action.to_string()),
            ])
            .inc();
    }

    /// One check's result (`sealpost_sender_auth_results_total{method="dmarc",result="fail"}`).
    pub fn sender_auth(&self, method: &str, result: &str) {
        self.sender_auth
            .get_or_create(&vec![
                ("method", method.to_string()),
                ("result", result.to_string()),
            ])
            .inc();
    }

    pub fn dkim_signed(&self, domain: &str, result: &str) {
        self.dkim_signed
            .get_or_create(&vec![
                ("domain", domain.to_string()),
                ("result", result.to_string()),
            ])
            .inc();
    }

    pub fn encryption(&self, kind: &str) {
        self.encryption
            .get_or_create(&vec![("kind", kind.to_string())])
            .inc();
    }

    pub fn smime_signing(&self, outcome: &str) {
        self.smime_signing
            .get_or_create(&vec![("outcome", outcome.to_string())])
            .inc();
    }

    pub fn store_op(&self, operation: &str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.store_ops
            .get_or_create(&vec![
                ("operation", operation.to_string()),
                ("result", result.to_string()),
            ])
            .inc();
    }

    pub fn notification(&self, kind: &str) {
        self.notifications
            .get_or_create(&vec![("kind", kind.to_string())])
            .inc();
    }

    pub fn reload(&self, ok: bool) {
        let result = if ok { "applied" } else { "refused" };
        self.reloads
            .get_or_create(&vec![("result", result.to_string())])
            .inc();
    }

    pub fn retransmission(&self) {
        self.retransmissions.inc();
    }

    /// A message was claimed for a delivery attempt: `at` is "arrival" or "runner".
    pub fn queue_claim(&self, at: &'static str) {
        self.queue_claims
            .get_or_create(&vec![("at", at.to_string())])
            .inc();
    }

    /// Sets the queue gauge of one state (read from the spool just before rendering).
    pub fn set_queue(&self, state: &str, count: usize) {
        self.queue
            .get_or_create(&vec![("state", state.to_string())])
            .set(count as i64);
    }

    /// Sets the queue's directory fsync count (read from the queue just before rendering; it
    /// only grows).
    pub fn set_queue_fsyncs(&self, total: u64) {
        self.queue_fsyncs
            .inner()
            .fetch_max(total, std::sync::atomic::Ordering::Relaxed);
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

fn connector_label(connector: Option<&str>) -> Labels {
    vec![("connector", connector.unwrap_or("none").to_string())]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_in_openmetrics_text() {
        let m = Metrics::new();
        m.session_opened("smtp");
        m.received(Some("partner"));
        m.delivery(Some("to-fabrikam"), DeliveryResult::Delivered);
        m.delivery(None, DeliveryResult::Bounced);
        m.tls_handshake(Direction::Inbound, "TLSv1.3");
        m.set_queue("deferred", 3);
        let text = m.render();
        assert!(
            text.contains("sealpost_smtp_sessions_total{listener=\"smtp\"} 1"),
            "{text}"
        );
        assert!(text.contains("sealpost_smtp_sessions_active 1"), "{text}");
        assert!(text.contains("sealpost_messages_received_total{connector=\"partner\"} 1"));
        assert!(text.contains("sealpost_messages_delivered_total{connector=\"to-fabrikam\"} 1"));
        assert!(text.contains("sealpost_messages_bounced_total{connector=\"none\"} 1"));
        assert!(text.contains(
            "sealpost_tls_handshakes_total{direction=\"inbound\",version=\"TLSv1.3\"} 1"
        ));
        assert!(text.contains("sealpost_queue_messages{state=\"deferred\"} 3"));
        assert!(text.ends_with("# EOF\n"));
        m.session_closed();
        assert!(m.render().contains("sealpost_smtp_sessions_active 0"));
    }
}

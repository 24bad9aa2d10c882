//! The queued message's envelope: sender, recipients with per-recipient status, retry bookkeeping.

use serde::{Deserialize, Serialize};

use crate::mail::dsn::{MailDsn, Notify, Orcpt, RcptDsn, Ret, TransactionDsn};

/// The envelope schema version written by this build; files with another version are refused.
pub const ENVELOPE_VERSION: u32 = 1;

/// Everything about a queued message except its bytes. Stored as JSON inside the queue file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// Schema version, [`ENVELOPE_VERSION`].
    pub version: u32,
    /// The queue id; also the queue file's name.
    pub id: String,
    /// When the message was accepted, unix seconds.
    pub received_at: i64,
    /// The reverse-path without angle brackets; empty for the null sender `<>`.
    pub mail_from: String,
    /// The name the client gave in HELO/EHLO.
    pub helo: String,
    /// The peer as "ip:port".
    pub client: String,
    /// Forward-paths in the order accepted, each with its delivery status.
    pub recipients: Vec<Recipient>,
    /// Delivery attempts of the message so far.
    pub attempts: u32,
    /// When the next attempt is due, unix seconds.
    pub next_attempt: i64,
    /// The most recent error that deferred the message.
    pub last_error: Option<String>,
    /// A transport rule demanded that the message leave only over TLS.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_tls: bool,
    /// REQUIRETLS (RFC 8689): the sender asked that the message travel only over TLS verified
    /// by DANE, MTA-STS or a verifying connector, to next hops that offer REQUIRETLS; else it
    /// bounces with 5.7.x. Its notices are sent the same way.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub requiretls: bool,
    /// The message carries `TLS-Required: No` (RFC 8689 §5) and was not sent with REQUIRETLS:
    /// recipient-side TLS policies (DANE, MTA-STS) may be ignored when they fail, so that it is
    /// delivered, in clear if need be. It never relaxes an outbound connector's TLS level or a
    /// transport rule's `require_tls`. See [`Envelope::tls_demand`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls_required_no: bool,
    /// A transport rule routes the message through this outbound connector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_via: Option<String>,
    /// A delay notice has been sent to the sender.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delay_notified: bool,
    /// RET (RFC 3461): what a failure notice returns of the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ret: Option<Ret>,
    /// ENVID (RFC 3461), decoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envid: Option<String>,
    /// The transmission's fingerprint (see `queue::retransmit`), to recognise the same message
    /// sent again by a client that did not see our 250.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transmission: Option<String>,
    /// When the message was last released from hold (`sealpost queue release`), unix seconds:
    /// its queue lifetime counts from then (see [`Envelope::lifetime_start`]), so that time on
    /// hold never makes it expire before it was tried again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_at: Option<i64>,
}

/// What a queued message demands of the TLS of its outbound connections, beyond the
/// destination's own policy (the connector's level, or the opportunistic default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsDemand {
    /// A transport rule said `require_tls`: at least `required`.
    pub rule_requires_tls: bool,
    /// REQUIRETLS (RFC 8689): only over a connection whose permit is verified
    /// (`DeliveryPermit::verified`) to a peer that offers REQUIRETLS, with REQUIRETLS on MAIL.
    pub requiretls: bool,
    /// `TLS-Required: No` without REQUIRETLS (RFC 8689 §5): a failure of a recipient-side
    /// policy (DANE, MTA-STS) may be ignored and the message delivered anyway. Administrators'
    /// demands (connectors, transport rules) stay as they are.
    pub relax_recipient_policies: bool,
}

/// One forward-path and what has happened to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipient {
    pub address: String,
    pub status: RecipientStatus,
    /// The last reply (or local error) seen for this recipient.
    pub last_reply: Option<String>,
    /// Delivery attempts made for this recipient.
    pub attempts: u32,
    /// NOTIFY (RFC 3461); None: the default, notices on failure and delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
    /// ORCPT (RFC 3461), decoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orcpt: Option<Orcpt>,
    /// A notice about this recipient is owed to the sender and not yet durably queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice_due: Option<NoticeAction>,
}

/// What a notice owed for a recipient reports (RFC 3464 `Action:`). Serialized lowercase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoticeAction {
    /// The recipient failed for good.
    Failed,
    /// Stored in a local mailbox (NOTIFY=SUCCESS).
    Delivered,
    /// Handed to a next hop that does not offer DSN (NOTIFY=SUCCESS).
    Relayed,
}

/// Where a recipient stands. Serialized lowercase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecipientStatus {
    /// Not yet delivered; will be tried (again).
    Pending,
    /// Accepted by the next hop or the local store.
    Delivered,
    /// Permanently failed or expired; a DSN is due.
    Failed,
}

impl Recipient {
    /// A recipient not yet tried.
    pub fn new(address: impl Into<String>) -> Self {
        Recipient {
            address: address.into(),
            status: RecipientStatus::Pending,
            last_reply: None,
            attempts: 0,
            notify: None,
            orcpt: None,
            notice_due: None,
        }
    }

    /// Whether the sender asked for a notice of this kind (RFC 3461 §4.1): without NOTIFY,
    /// on failure and delay; NOTIFY=NEVER never.
    pub fn wants(&self, action: NoticeAction) -> bool {
        match (self.notify, action) {
            (None, NoticeAction::Failed) => true,
            (None, _) => false,
            (Some(n), NoticeAction::Failed) => n.failure,
            (Some(n), NoticeAction::Delivered | NoticeAction::Relayed) => n.success,
        }
    }

    /// Whether the sender wants a delay notice for this recipient.
    pub fn wants_delay(&self) -> bool {
        self.notify.is_none_or(|n| n.delay)
    }

    /// Records that this recipient reached `action`: a notice is owed if the sender asked for
    /// one, and never to the null sender (no notice about a notice).
    pub fn reached(&mut self, action: NoticeAction, null_sender: bool) {
        if !null_sender && self.wants(action) {
            self.notice_due = Some(action);
        }
    }
}

impl Envelope {
    /// A fresh envelope for a message received at `now`: all recipients pending, due at once.
    pub fn new(
        id: impl Into<String>,
        mail_from: impl Into<String>,
        recipients: Vec<String>,
        helo: impl Into<String>,
        client: impl Into<String>,
        now: i64,
    ) -> Self {
        Envelope {
            version: ENVELOPE_VERSION,
            id: id.into(),
            received_at: now,
            mail_from: mail_from.into(),
            helo: helo.into(),
            client: client.into(),
            recipients: recipients.into_iter().map(Recipient::new).collect(),
            attempts: 0,
            next_attempt: now,
            last_error: None,
            require_tls: false,
            requiretls: false,
            tls_required_no: false,
            route_via: None,
            delay_notified: false,
            ret: None,
            envid: None,
            transmission: None,
            released_at: None,
        }
    }

    /// Where the queue lifetime starts: the arrival, or the last release from hold if later.
    pub fn lifetime_start(&self) -> i64 {
        self.released_at
            .map_or(self.received_at, |r| r.max(self.received_at))
    }

    /// Marks the message released from hold at `now`: its lifetime starts again.
    pub fn released(&mut self, now: i64) {
        self.released_at = Some(now);
    }

    /// Recipients still waiting for delivery.
    pub fn pending(&self) -> impl Iterator<Item = &Recipient> {
        self.recipients
            .iter()
            .filter(|r| r.status == RecipientStatus::Pending)
    }

    /// Recipients still waiting for delivery, for updating in place.
    pub fn pending_mut(&mut self) -> impl Iterator<Item = &mut Recipient> {
        self.recipients
            .iter_mut()
            .filter(|r| r.status == RecipientStatus::Pending)
    }

    /// Recipients that failed for good (the DSN's subject matter).
    pub fn failed(&self) -> impl Iterator<Item = &Recipient> {
        self.recipients
            .iter()
            .filter(|r| r.status == RecipientStatus::Failed)
    }

    /// True when no recipient is pending: nothing is left to deliver.
    pub fn is_finished(&self) -> bool {
        self.pending().next().is_none()
    }

    /// The DSN parameters to pass on for the recipients at `indexes`.
    pub fn transaction_dsn(&self, indexes: &[usize]) -> TransactionDsn {
        TransactionDsn {
            mail: MailDsn {
                ret: self.ret,
                envid: self.envid.clone(),
            },
            rcpts: indexes
                .iter()
                .filter_map(|&i| self.recipients.get(i))
                .map(|r| RcptDsn {
                    notify: r.notify,
                    orcpt: r.orcpt.clone(),
                })
                .collect(),
        }
    }

    /// What the message itself asks of the TLS of its next hops.
    pub fn tls_demand(&self) -> TlsDemand {
        TlsDemand {
            rule_requires_tls: self.require_tls,
            requiretls: self.requiretls,
            relax_recipient_policies: self.tls_required_no && !self.requiretls,
        }
    }

    /// True when some notice is owed to the sender and not yet queued.
    pub fn notices_due(&self) -> bool {
        self.recipients.iter().any(|r| r.notice_due.is_some())
    }

    /// True for the null reverse-path `<>` (bounces); such messages never get a DSN themselves.
    pub fn is_null_sender(&self) -> bool {
        self.mail_from.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        Envelope::new(
            "0000000000000A000001",
            "bob@fabrikam.test",
            vec!["alice@contoso.test".into(), "carol@contoso.test".into()],
            "mx.fabrikam.test",
            "127.0.0.1:40000",
            1_700_000_000,
        )
    }

    #[test]
    fn new_envelope_is_pending_and_due_now() {
        let e = sample();
        assert_eq!(e.version, ENVELOPE_VERSION);
        assert_eq!(e.next_attempt, 1_700_000_000);
        assert_eq!(e.received_at, 1_700_000_000);
        assert_eq!(e.pending().count(), 2);
        assert!(!e.is_finished());
        assert!(!e.is_null_sender());
    }

    #[test]
    fn finished_when_no_recipient_is_pending() {
        let mut e = sample();
        e.recipients[0].status = RecipientStatus::Delivered;
        assert!(!e.is_finished());
        assert_eq!(
            e.pending().map(|r| r.address.as_str()).collect::<Vec<_>>(),
            ["carol@contoso.test"]
        );
        for r in e.pending_mut() {
            r.status = RecipientStatus::Failed;
        }
        assert!(e.is_finished());
        assert_eq!(e.failed().count(), 1);
    }

    #[test]
    fn status_serializes_lowercase_and_round_trips() {
        let mut e = sample();
        e.recipients[1].status = RecipientStatus::Delivered;
        e.last_error = Some("451 4.7.0 try later".into());
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains(r#""status":"pending""#), "{json}");
        assert!(json.contains(r#""status":"delivered""#), "{json}");
        let back: Envelope = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn dsn_fields_round_trip_and_are_left_out_when_unset() {
        let plain = serde_json::to_string(&sample()).unwrap();
        for key in ["ret", "envid", "notify", "orcpt", "notice_due"] {
            assert!(!plain.contains(&format!("\"{key}\"")), "{plain}");
        }
        let mut e = sample();
        e.ret = Some(Ret::Hdrs);
        e.envid = Some("QQ+1".into());
        e.recipients[0].notify = Notify::parse("SUCCESS,DELAY");
        e.recipients[0].orcpt = Orcpt::parse("rfc822;a@b.test");
        e.recipients[1].notice_due = Some(NoticeAction::Relayed);
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains(r#""ret":"HDRS""#), "{json}");
        assert!(json.contains(r#""notify":"SUCCESS,DELAY""#), "{json}");
        assert!(json.contains(r#""notice_due":"relayed""#), "{json}");
        assert_eq!(serde_json::from_str::<Envelope>(&json).unwrap(), e);
        assert!(e.notices_due());
    }

    #[test]
    fn an_envelope_written_before_dsn_parameters_still_reads() {
        let old = r#"{"version":1,"id":"0000000000000A000001","received_at":1700000000,
            "mail_from":"bob@fabrikam.test","helo":"mx.fabrikam.test","client":"127.0.0.1:40000",
            "recipients":[{"address":"alice@contoso.test","status":"failed",
            "last_reply":"550 5.1.1 unknown","attempts":1}],
            "attempts":1,"next_attempt":1700000000,"last_error":null,"delay_notified":true}"#;
        let e: Envelope = serde_json::from_str(old).unwrap();
        assert_eq!((e.ret, e.envid.as_deref()), (None, None));
        let r = &e.recipients[0];
        assert_eq!(
            (r.notify, r.orcpt.as_ref(), r.notice_due),
            (None, None, None)
        );
        assert!(
            !e.notices_due(),
            "an old failed recipient was already reported"
        );
        assert!(r.wants(NoticeAction::Failed) && r.wants_delay());
        assert!(!r.wants(NoticeAction::Delivered));
    }

    #[test]
    fn notify_decides_which_notices_are_wanted() {
        let mut r = Recipient::new("a@b.test");
        r.notify = Some(Notify::NEVER);
        assert!(!r.wants(NoticeAction::Failed) && !r.wants_delay());
        r.notify = Notify::parse("SUCCESS");
        assert!(r.wants(NoticeAction::Delivered) && r.wants(NoticeAction::Relayed));
        assert!(!r.wants(NoticeAction::Failed) && !r.wants_delay());
        r.notify = Notify::parse("FAILURE,DELAY");
        assert!(r.wants(NoticeAction::Failed) && r.wants_delay());
        assert!(!r.wants(NoticeAction::Delivered));
    }

    #[test]
    fn requiretls_flags_round_trip_and_are_left_out_when_unset() {
        let plain = serde_json::to_string(&sample()).unwrap();
        assert!(!plain.contains("requiretls") && !plain.contains("tls_required_no"));
        let mut e = sample();
        e.requiretls = true;
        e.tls_required_no = true;
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains(r#""requiretls":true"#), "{json}");
        assert!(json.contains(r#""tls_required_no":true"#), "{json}");
        assert_eq!(serde_json::from_str::<Envelope>(&json).unwrap(), e);
        assert!(
            !e.tls_demand().relax_recipient_policies,
            "REQUIRETLS wins over TLS-Required: No"
        );
        e.requiretls = false;
        assert_eq!(
            e.tls_demand(),
            TlsDemand {
                relax_recipient_policies: true,
                ..TlsDemand::default()
            }
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v["surprise"] = serde_json::json!(1);
        assert!(serde_json::from_value::<Envelope>(v).is_err());
    }
}

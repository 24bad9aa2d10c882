//! A finished inbound SMTP transaction, handed by the session to the cleanup stage.

use std::net::SocketAddr;

use crate::mail::dsn::{MailDsn, RcptDsn};
use crate::queue::Reservation;
use crate::tls::TlsFacts;

/// The protocol name written in the Received header (RFC 3848).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// HELO
    Smtp,
    /// EHLO
    Esmtp,
    /// EHLO over TLS
    Esmtps,
    /// EHLO, authenticated
    Esmtpa,
    /// EHLO over TLS, authenticated
    Esmtpsa,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Smtp => "SMTP",
            Protocol::Esmtp => "ESMTP",
            Protocol::Esmtps => "ESMTPS",
            Protocol::Esmtpa => "ESMTPA",
            Protocol::Esmtpsa => "ESMTPSA",
        }
    }
}

/// Which inbound connector a message arrived through and what it verified: decided once, at MAIL
/// FROM, by the session's policy, and carried with the transaction to the Received header, the
/// rules and the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundVerdict {
    pub connector: String,
    /// e.g. "client certificate verified mx.contoso.test via ca.crt", or "TLS".
    pub detail: String,
}

/// Everything the session learnt about one message: who sent it, for whom, over what. The bytes
/// went to the caller piece by piece (`Action::Data`) before it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    /// The name the client gave in HELO/EHLO.
    pub helo: String,
    pub protocol: Protocol,
    pub peer: SocketAddr,
    /// Set when the session runs over TLS.
    pub tls: Option<TlsFacts>,
    /// The reverse-path without angle brackets; empty for the null sender `<>`.
    pub mail_from: String,
    /// Forward-paths without angle brackets, in the order accepted.
    pub rcpt_to: Vec<String>,
    /// BODY=8BITMIME was given.
    pub eight_bit: bool,
    /// SMTPUTF8 was given.
    pub smtputf8: bool,
    /// RET and ENVID (RFC 3461).
    pub dsn: MailDsn,
    /// NOTIFY and ORCPT of each recipient: one entry per `rcpt_to`, in the same order.
    pub rcpt_dsn: Vec<RcptDsn>,
    /// REQUIRETLS was given with MAIL (RFC 8689; only accepted over TLS).
    pub requiretls: bool,
    /// The user who authenticated with AUTH, if any.
    pub authenticated: Option<String>,
    /// The inbound connector the sender matched at MAIL FROM, if any.
    pub inbound: Option<InboundVerdict>,
    /// Bytes of the message as received (dot-unstuffed, without the final `.` line).
    pub size: u64,
    /// It came in BDAT chunks (RFC 3030) rather than after DATA.
    pub chunking: bool,
    /// The message's share of the server's in-flight budget, held until it is queued.
    pub in_flight: Reservation,
}

impl Transaction {
    /// The DSN parameters given with `address` (the first RCPT naming it).
    pub fn rcpt_dsn(&self, address: &str) -> RcptDsn {
        self.rcpt_to
            .iter()
            .position(|r| r == address)
            .and_then(|i| self.rcpt_dsn.get(i).cloned())
            .unwrap_or_default()
    }
}

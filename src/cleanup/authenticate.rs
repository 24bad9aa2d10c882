//! Sender authentication in the cleanup stage: mail from outside is checked (SPF, DKIM, ARC,
//! DMARC) before the transport rules, so rules see the results and a DMARC reject is a 550
//! before any 250; our own outbound mail is DKIM-signed after the rules, as it will be sent.

use std::sync::Arc;

use ipnet::IpNet;

use super::message::Message;
use crate::mail::Reply;
use crate::sender_auth::dkim_sign::from_domain;
use crate::sender_auth::header::{is_forged, QUARANTINE_FIELD};
use crate::sender_auth::{AuthOutcome, Disposition, Inbound, Signer, Signers, Verifier};
use crate::smtp::server::Transaction;
use crate::telemetry::Telemetry;

/// What cleanup needs for sender authentication.
#[derive(Debug, Default)]
pub struct SenderAuth {
    /// Checks mail that did not authenticate (None: no checks).
    pub verifier: Option<Arc<Verifier>>,
    /// Signs mail whose From: domain has a `[[dkim]]` key.
    pub signers: Signers,
    /// Clients whose mail counts as ours (with authenticated ones) for signing.
    pub relay_networks: Vec<IpNet>,
    /// Our domains: mail from a relay network with one of them in From: is not checked.
    pub local_domains: crate::mail::DomainSet,
}

impl SenderAuth {
    /// Whether the message is checked: a verifier is configured, the client did not
    /// authenticate (submitted mail is trusted), and it is not our own mail from a relay
    /// network (From: one of our domains).
    fn checks(&self, tx: &Transaction, header: Option<&[u8]>) -> bool {
        if self.verifier.is_none() || tx.authenticated.is_some() {
            return false;
        }
        let own = || {
            header
                .and_then(from_domain)
                .is_some_and(|d| self.local_domains.contains(&d))
        };
        !(self.relay_client(tx) && own())
    }

    fn relay_client(&self, tx: &Transaction) -> bool {
        self.relay_networks
            .iter()
            .any(|n| n.contains(&tx.peer.ip()))
    }

    /// Whether the client may have its mail signed as ours.
    fn ours(&self, tx: &Transaction) -> bool {
        tx.authenticated.is_some() || self.relay_client(tx)
    }

    /// Whether the whole message must be in memory (checks or signing need its body hash).
    pub(super) fn needs_whole(&self, tx: &Transaction, header: Option<&[u8]>) -> bool {
        self.checks(tx, header)
            || (self.ours(tx)
                && match header {
                    Some(h) => self.signers.for_message(h).is_some(),
                    None => !self.signers.is_empty(),
                })
    }

    /// Runs the checks on the loaded message, refuses it when its DMARC policy says reject, and
    /// otherwise writes the Authentication-Results field (and a quarantine mark) after our
    /// Received header, dropping forged ones.
    pub(super) fn check(
        &self,
        hostname: &str,
        tx: &Transaction,
        message: &mut Message,
        telemetry: &Telemetry,
    ) -> Result<Option<AuthOutcome>, Reply> {
        let Some(arrived) = message.arrived() else {
            return Ok(None);
        };
        let (Some(verifier), true) = (&self.verifier, self.checks(tx, Some(arrived))) else {
            return Ok(None);
        };
        let outcome = verifier.verify_blocking(&Inbound {
            ip: tx.peer.ip(),
            helo: &tx.helo,
            mail_from: &tx.mail_from,
            message: arrived,
        });
        for (method, result) in [
            ("spf", outcome.spf),
            ("dkim", outcome.dkim),
            ("arc", outcome.arc),
            ("dmarc", outcome.dmarc),
        ] {
            telemetry.metrics.sender_auth(method, result.as_str());
        }
        tracing::info!(client = %tx.peer, from = %tx.mail_from, header_from = %outcome.from_domain,
            spf = %outcome.spf, dkim = %outcome.dkim, arc = %outcome.arc, dmarc = %outcome.dmarc,
            disposition = ?outcome.disposition, "sender checks");
        let mut fields = outcome.header.clone();
        match outcome.disposition {
            Disposition::Reject => {
                return Err(Reply::new(
                    550,
                    [5, 7, 1],
                    format!(
                        "Email rejected per DMARC policy for {}",
                        outcome.from_domain
                    ),
                ));
            }
            Disposition::Quarantine => fields.push_str(&format!(
                "{QUARANTINE_FIELD}: dmarc=fail header.from={}\r\n",
                outcome.from_domain
            )),
            Disposition::Accept => {}
        }
        message.restamp(&fields, |f| is_forged(f, hostname));
        Ok(Some(outcome))
    }

    /// The signer for this message: ours, with a `[[dkim]]` key for its From: domain.
    pub(super) fn signer(&self, tx: &Transaction, head: &[u8]) -> Option<&Signer> {
        if !self.ours(tx) {
            return None;
        }
        self.signers.for_message(head)
    }
}

/// The DKIM-Signature field for a copy's bytes; a failure is logged and the copy goes unsigned.
pub(super) fn sign(signer: &Signer, bytes: &[u8], telemetry: &Telemetry) -> Option<String> {
    match signer.sign(bytes) {
        Ok(field) => {
            telemetry.metrics.dkim_signed(&signer.domain, "signed");
            Some(field)
        }
        Err(e) => {
            telemetry.metrics.dkim_signed(&signer.domain, "failed");
            tracing::error!(domain = %signer.domain, selector = %signer.selector, error = %e,
                "DKIM signing failed; the message goes unsigned");
            None
        }
    }
}

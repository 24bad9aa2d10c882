//! Sender and recipient acceptance checks made during the SMTP dialogue (pure, no I/O).

use std::collections::HashSet;

use super::session::SessionFacts;
use crate::smtp::proto::address::domain_of;
use crate::smtp::proto::Reply;

/// Decides, while the client waits, whether a sender or recipient is accepted.
/// A rejection is the exact reply to send.
pub trait Policy: Send + Sync {
    /// Called for MAIL FROM (`sender` is empty for the null sender). Accepts everything by default.
    fn check_sender(&self, facts: &SessionFacts, sender: &str) -> Result<(), Reply> {
        let _ = (facts, sender);
        Ok(())
    }

    /// Called for each RCPT TO, after the syntax and recipient-count checks.
    fn check_recipient(&self, facts: &SessionFacts, sender: &str, rcpt: &str) -> Result<(), Reply>;
}

/// Accept mail for known mailboxes in local domains; relay elsewhere only for trusted clients.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalPolicy {
    /// Local domain names, lowercase.
    pub local_domains: HashSet<String>,
    /// Local mailbox addresses, lowercase.
    pub mailboxes: HashSet<String>,
}

impl LocalPolicy {
    /// Builds the policy, lowercasing the domains and mailboxes given.
    pub fn new<D, M>(local_domains: D, mailboxes: M) -> Self
    where
        D: IntoIterator,
        D::Item: AsRef<str>,
        M: IntoIterator,
        M::Item: AsRef<str>,
    {
        LocalPolicy {
            local_domains: local_domains
                .into_iter()
                .map(|d| d.as_ref().to_lowercase())
                .collect(),
            mailboxes: mailboxes
                .into_iter()
                .map(|m| m.as_ref().to_lowercase())
                .collect(),
        }
    }
}

impl Policy for LocalPolicy {
    fn check_recipient(
        &self,
        facts: &SessionFacts,
        _sender: &str,
        rcpt: &str,
    ) -> Result<(), Reply> {
        if self.local_domains.contains(&domain_of(rcpt).to_lowercase()) {
            if self.mailboxes.contains(&rcpt.to_lowercase()) {
                Ok(())
            } else {
                Err(Reply::new(
                    550,
                    [5, 1, 1],
                    format!("<{rcpt}>: Recipient address rejected: User unknown in local recipient table"),
                ))
            }
        } else if facts.relay_allowed {
            Ok(())
        } else {
            Err(Reply::new(
                554,
                [5, 7, 1],
                format!("<{rcpt}>: Relay access denied"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(relay_allowed: bool) -> SessionFacts {
        SessionFacts {
            peer: ([192, 0, 2, 1], 25).into(),
            relay_allowed,
            tls: None,
            helo: None,
        }
    }

    fn policy() -> LocalPolicy {
        LocalPolicy::new(["Contoso.Test"], ["Alice@Contoso.Test"])
    }

    #[test]
    fn local_mailboxes_match_case_insensitively() {
        let p = policy();
        assert_eq!(
            p.check_recipient(&facts(false), "", "alice@contoso.test"),
            Ok(())
        );
        assert_eq!(
            p.check_recipient(&facts(false), "", "ALICE@CONTOSO.TEST"),
            Ok(())
        );
        let unknown = p.check_recipient(&facts(true), "", "Bob@Contoso.test");
        assert_eq!(
            unknown.map_err(|r| r.to_string()),
            Err("550 5.1.1 <Bob@Contoso.test>: Recipient address rejected: User unknown in local recipient table".into())
        );
    }

    #[test]
    fn remote_domains_need_relay_permission() {
        let p = policy();
        let denied = p.check_recipient(&facts(false), "a@contoso.test", "carol@fabrikam.test");
        assert_eq!(
            denied.map_err(|r| r.to_string()),
            Err("554 5.7.1 <carol@fabrikam.test>: Relay access denied".into())
        );
        assert_eq!(
            p.check_recipient(&facts(true), "", "carol@fabrikam.test"),
            Ok(())
        );
        // A subdomain of a local domain is not local.
        assert!(p
            .check_recipient(&facts(false), "", "x@sub.contoso.test")
            .is_err());
    }

    #[test]
    fn senders_are_accepted_by_default() {
        assert_eq!(policy().check_sender(&facts(false), ""), Ok(()));
    }
}

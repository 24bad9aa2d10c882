//! Sender and recipient acceptance checks made during the SMTP dialogue (pure, no I/O).

use std::collections::HashSet;

use super::session::SessionFacts;
use super::transaction::InboundVerdict;
use crate::auth::SenderLogins;
use crate::mail::DomainSet;
use crate::mail::Reply;

/// Decides, while the client waits, whether a sender or recipient is accepted.
/// A rejection is the exact reply to send.
pub trait Policy: Send + Sync {
    /// Called for MAIL FROM (`sender` is empty for the null sender). Accepts everything by default.
    /// An accepted sender may come with the inbound connector it matched; the session carries
    /// that verdict with the transaction, so nothing downstream decides it again.
    fn check_sender(
        &self,
        facts: &SessionFacts,
        sender: &str,
    ) -> Result<Option<InboundVerdict>, Reply> {
        let _ = (facts, sender);
        Ok(None)
    }

    /// Called for each RCPT TO, after the syntax and recipient-count checks.
    fn check_recipient(&self, facts: &SessionFacts, sender: &str, rcpt: &str) -> Result<(), Reply>;
}

/// Accept mail for known mailboxes in local domains; relay elsewhere only for trusted clients;
/// authenticated users send only as the addresses they own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalPolicy {
    /// The local domains (the configuration's set: one answer to "is this domain local?").
    pub local_domains: DomainSet,
    /// Local mailbox addresses, ASCII-lowercase. Case is folded for ASCII only, as delivery
    /// does: Unicode folding would let `K` (U+212A KELVIN SIGN) match `k` here and not there.
    pub mailboxes: HashSet<String>,
    /// The senders each authenticated user may use.
    pub senders: SenderLogins,
}

impl LocalPolicy {
    /// Builds the policy, ASCII-lowercasing the domains and mailboxes given.
    pub fn new<D, M>(local_domains: D, mailboxes: M) -> Self
    where
        D: IntoIterator,
        D::Item: AsRef<str>,
        M: IntoIterator,
        M::Item: AsRef<str>,
    {
        LocalPolicy {
            local_domains: DomainSet::new(local_domains),
            mailboxes: mailboxes
                .into_iter()
                .map(|m| m.as_ref().to_ascii_lowercase())
                .collect(),
            senders: SenderLogins::default(),
        }
    }

    /// The same, with the senders authenticated users may use.
    pub fn with_senders(mut self, senders: SenderLogins) -> Self {
        self.senders = senders;
        self
    }
}

impl Policy for LocalPolicy {
    /// An authenticated user's sender must be one it owns (see [`SenderLogins`]); other
    /// sessions' senders are not checked here.
    fn check_sender(
        &self,
        facts: &SessionFacts,
        sender: &str,
    ) -> Result<Option<InboundVerdict>, Reply> {
        let Some(user) = &facts.authenticated else {
            return Ok(None);
        };
        self.senders.check(user, sender).inspect_err(|_| {
            tracing::warn!(client = %facts.peer, %user, %sender, "sender address rejected: not owned by the authenticated user");
        })?;
        Ok(None)
    }

    fn check_recipient(
        &self,
        facts: &SessionFacts,
        _sender: &str,
        rcpt: &str,
    ) -> Result<(), Reply> {
        if self.local_domains.contains_address(rcpt) {
            if self.mailboxes.contains(&rcpt.to_ascii_lowercase()) {
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
            authenticated: None,
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
        assert_eq!(policy().check_sender(&facts(false), ""), Ok(None));
    }

    #[test]
    fn unicode_case_is_not_folded() {
        let p = LocalPolicy::new(["fabrikam.test"], ["kim@fabrikam.test"]);
        let check = |rcpt: &str| {
            p.check_recipient(&facts(false), "", rcpt)
                .map_err(|r| r.code)
        };
        assert_eq!(check("KIM@FABRIKAM.TEST"), Ok(()));
        // U+212A KELVIN SIGN lowercases to "k" in Unicode, but delivery folds ASCII only: folding
        // it here would accept a recipient that delivery then routes to another domain.
        assert_eq!(check("kim@fabri\u{212A}am.test"), Err(554));
        assert_eq!(check("\u{212A}im@fabrikam.test"), Err(550));
    }

    /// Classic open-relay tricks, each in its own session from a client outside relay_networks:
    /// (name, RCPT TO argument, MAIL FROM with SMTPUTF8, expected reply code).
    #[rustfmt::skip]
    const RELAY_TRICKS: &[(&str, &[u8], bool, u16)] = &[
        ("percent hack", b"<bob%fabrikam.test@contoso.test>", false, 550),
        ("percent hack to an IP literal", b"<bob%fabrikam.test@[127.0.0.1]>", false, 554),
        ("percent hack in the domain", b"<bob@fabrikam.test%contoso.test>", false, 501),
        ("source route", b"<@contoso.test:bob@fabrikam.test>", false, 554),
        ("source route list", b"<@contoso.test,@mx.contoso.test:bob@fabrikam.test>", false, 554),
        ("bang path", b"<fabrikam.test!bob@contoso.test>", false, 550),
        ("bang path out", b"<contoso.test!bob@fabrikam.test>", false, 554),
        ("quoted local part holding @", b"<\"bob@fabrikam.test\"@contoso.test>", false, 550),
        ("quoted local part holding %", b"<\"bob%fabrikam.test\"@contoso.test>", false, 550),
        ("quoted local mailbox, remote domain", b"<\"alice@contoso.test\"@fabrikam.test>", false, 554),
        ("escaped @ in local part", b"<bob\\@fabrikam.test@contoso.test>", false, 501),
        ("encoded-word local part", b"<=?utf-8?q?bob=40fabrikam.test?=@contoso.test>", false, 550),
        ("IPv4 literal", b"<bob@[127.0.0.1]>", false, 554),
        ("IPv6 literal", b"<bob@[IPv6:::1]>", false, 554),
        ("decimal IP as a domain", b"<bob@2130706433>", false, 554),
        ("localhost", b"<bob@localhost>", false, 554),
        ("trailing dot", b"<bob@fabrikam.test.>", false, 501),
        ("local domain with trailing dot", b"<alice@contoso.test.>", false, 501),
        ("empty label", b"<bob@contoso..test>", false, 501),
        ("leading dot", b"<bob@.contoso.test>", false, 501),
        ("local domain as a prefix", b"<bob@contoso.test.fabrikam.test>", false, 554),
        ("local domain as a suffix", b"<bob@fabrikamcontoso.test>", false, 554),
        ("subdomain of the local domain", b"<alice@sub.contoso.test>", false, 554),
        ("upper case prefix of another domain", b"<bob@CONTOSO.TEST.evil.test>", false, 554),
        ("upper case local domain, unknown user", b"<bob@CONTOSO.TEST>", false, 550),
        ("Greek omicron look-alike", "<bob@c\u{3bf}ntoso.test>".as_bytes(), true, 554),
        ("Cyrillic a look-alike user", "<\u{430}lice@contoso.test>".as_bytes(), true, 550),
        ("fullwidth letters", "<bob@\u{ff43}ontoso.test>".as_bytes(), true, 554),
        ("fullwidth dot", "<bob@contoso\u{ff0e}test>".as_bytes(), true, 554),
        ("look-alike without SMTPUTF8", "<bob@c\u{3bf}ntoso.test>".as_bytes(), false, 553),
        ("punycode look-alike", b"<bob@xn--cntoso-7ve.test>", false, 554),
        ("two @, remote first", b"<bob@fabrikam.test@contoso.test>", false, 501),
        ("two @, local first", b"<bob@contoso.test@fabrikam.test>", false, 501),
        ("trailing whitespace", b"<bob@fabrikam.test> \t ", false, 554),
        ("whitespace inside the path", b"<bob@fabrikam.test >", false, 501),
        ("unknown parameter", b"<bob@fabrikam.test> XFOO=1", false, 555),
        ("DSN parameter on a remote address", b"<bob@fabrikam.test> NOTIFY=NEVER", false, 554),
        ("ORCPT naming a remote address", b"<alice@contoso.test> ORCPT=rfc822;bob@fabrikam.test", false, 250),
        ("second path as a parameter", b"<alice@contoso.test> <bob@fabrikam.test>", false, 555),
        ("comma-separated list", b"<alice@contoso.test,bob@fabrikam.test>", false, 501),
        ("list without brackets", b"alice@contoso.test,bob@fabrikam.test", false, 501),
        ("no angle brackets", b"bob@fabrikam.test", false, 501),
        ("comment after the path", b"<bob@fabrikam.test>(contoso.test)", false, 501),
        ("port on the domain", b"<alice@contoso.test:25>", false, 501),
        ("NUL inside the path", b"<alice@contoso.test\x00@fabrikam.test>", false, 501),
        ("postmaster without a domain", b"<postmaster>", false, 501),
        // Accepted, but only ever for the local mailbox:
        ("source route ending in a local mailbox", b"<@fabrikam.test:alice@contoso.test>", false, 250),
        ("ASCII case variant of the local mailbox", b"<ALICE@Contoso.TEST>", false, 250),
    ];

    /// The local-domain config the battery checks delivery routing against.
    fn config() -> crate::config::Config {
        let text = "[server]\nhostname = \"mx.contoso.test\"\ndata_dir = \"d\"\n\
                    [[domain]]\nname = \"contoso.test\"\nencryption_policy = \"none\"\n\
                    [[mailbox]]\naddress = \"alice@contoso.test\"\n";
        crate::config::Config::from_toml(std::path::Path::new("c.toml"), text, None)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn open_relay_tricks_are_refused_or_stay_local() {
        use super::super::session::{Action, Session, SessionConfig};
        use crate::config::routing::{route, Route};
        use std::sync::Arc;

        let config = config();
        assert!(RELAY_TRICKS.len() >= 20);
        for &(name, rcpt, smtputf8, expected) in RELAY_TRICKS {
            let policy = LocalPolicy::new(["contoso.test"], ["alice@contoso.test"]);
            let mut session = Session::new(
                Arc::new(SessionConfig::default()),
                Arc::new(policy),
                ([203, 0, 113, 9], 40000).into(),
                false,
            );
            let utf8 = if smtputf8 { " SMTPUTF8" } else { "" };
            let mut input =
                format!("HELO x\r\nMAIL FROM:<carol@fabrikam.test>{utf8}\r\n").into_bytes();
            let rcpt_line = [&b"RCPT TO:"[..], rcpt, b"\r\n"].concat();
            input.extend_from_slice(&rcpt_line);
            input.extend_from_slice(b"DATA\r\nSubject: relay?\r\n\r\nhi\r\n.\r\n");
            let mut replies = Vec::new();
            let mut delivered = Vec::new();
            for action in session.feed(&input) {
                match action {
                    Action::Send(bytes) => replies.extend(
                        String::from_utf8_lossy(&bytes)
                            .lines()
                            .map(str::to_string)
                            .collect::<Vec<_>>(),
                    ),
                    Action::Deliver(tx) => delivered.push(tx),
                    _ => {}
                }
            }
            // Replies: HELO, MAIL, RCPT, then DATA's.
            let code = replies.get(2).and_then(|r| r.get(..3)?.parse::<u16>().ok());
            assert_eq!(code, Some(expected), "{name}: {replies:?}");
            assert_eq!(delivered.len(), usize::from(expected == 250), "{name}");
            for tx in &delivered {
                for accepted in &tx.rcpt_to {
                    assert!(
                        config.is_local_mailbox(accepted)
                            && route(&config, accepted) == Route::Local
                            && accepted.eq_ignore_ascii_case("alice@contoso.test"),
                        "{name}: accepted {accepted:?}"
                    );
                }
            }
        }
    }
}

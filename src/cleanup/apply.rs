//! Applies the transport rules' actions to a message, per recipient group, before it is queued.

use super::headers;
use crate::rules::{Action, Evaluation, OnMissingCertificate, RmsProtect, SmimeEncrypt};
use crate::smtp::proto::Reply;

/// One queue file to write: the (possibly changed) message for some recipients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    pub recipients: Vec<String>,
    pub message: Vec<u8>,
    /// The message leaves only over TLS.
    pub require_tls: bool,
    /// Send through this outbound connector.
    pub route_via: Option<String>,
}

/// Why S/MIME encryption did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmimeFailure {
    /// These recipients have no usable certificate (the others do).
    MissingCertificates(Vec<String>),
    /// The message is already S/MIME or PGP encrypted: it is left as it is.
    AlreadyEncrypted,
    /// Anything else; the message is deferred (451).
    Other(String),
}

/// RMS-style protection as the cleanup stage needs it.
pub trait Rms: Send + Sync {
    /// Protects `message` for `recipients` under the action's template and rights.
    fn protect(
        &self,
        message: &[u8],
        sender: &str,
        recipients: &[String],
        action: &RmsProtect,
    ) -> Result<Vec<u8>, String>;
}

/// What cleanup can call on: S/MIME and RMS, each where configured.
#[derive(Clone, Copy, Default)]
pub struct Protectors<'a> {
    pub smime: Option<&'a dyn Smime>,
    pub rms: Option<&'a dyn Rms>,
}

/// S/MIME encryption as the cleanup stage needs it.
pub trait Smime: Send + Sync {
    /// Encrypts `message` for all `recipients`, or says who lacks a certificate.
    fn encrypt(
        &self,
        message: &[u8],
        recipients: &[String],
        action: &SmimeEncrypt,
    ) -> Result<Vec<u8>, SmimeFailure>;
}

struct Work {
    copy: Copy,
    actions: Vec<Action>,
    next: usize,
}

/// Applies each group's actions. Any rejection (a `reject` action, a recipient without a
/// certificate under `on_missing_certificate = "reject"`, protection that is not configured)
/// refuses the whole message with that reply, so the sender learns of it at once.
pub fn apply(
    evaluation: &Evaluation,
    sender: &str,
    message: &[u8],
    protectors: Protectors,
) -> Result<Vec<Copy>, Reply> {
    let mut work: Vec<Work> = evaluation
        .groups
        .iter()
        .map(|g| Work {
            copy: Copy {
                recipients: g.recipients.clone(),
                message: message.to_vec(),
                require_tls: false,
                route_via: None,
            },
            actions: g.actions.iter().map(|a| a.action.clone()).collect(),
            next: 0,
        })
        .collect();
    let mut done = Vec::new();
    while let Some(mut w) = work.pop() {
        let Some(action) = w.actions.get(w.next).cloned() else {
            if !w.copy.recipients.is_empty() {
                done.push(w.copy);
            }
            continue;
        };
        w.next += 1;
        let c = &mut w.copy;
        match action {
            Action::AddHeader(h) => {
                c.message = headers::add(&c.message, h.name.as_str(), h.value.as_str())
            }
            Action::SetHeader(h) => {
                c.message = headers::set(&c.message, h.name.as_str(), h.value.as_str())
            }
            Action::PrependSubject(p) => {
                c.message = headers::prepend_subject(&c.message, p.text.as_str())
            }
            Action::RedirectTo(r) => {
                c.recipients = r.addresses.iter().map(|a| a.as_str().to_string()).collect()
            }
            Action::Reject(r) => return Err(r.reply()),
            Action::RouteVia(r) => c.route_via = Some(r.connector.as_str().to_string()),
            Action::RequireTls(_) => c.require_tls = true,
            Action::RmsProtect(rms) => {
                c.message = rms_protect(protectors.rms, &c.message, sender, &c.recipients, &rms)?
            }
            Action::SmimeEncrypt(opts) => {
                let Some(smime) = protectors.smime else {
                    return Err(Reply::new(
                        451,
                        [4, 7, 0],
                        "S/MIME encryption is not configured ([smime] certificate_dir)",
                    ));
                };
                match smime.encrypt(&c.message, &c.recipients, &opts) {
                    Ok(encrypted) => c.message = encrypted,
                    Err(SmimeFailure::AlreadyEncrypted) => {}
                    Err(SmimeFailure::Other(e)) => {
                        return Err(Reply::new(
                            451,
                            [4, 7, 0],
                            format!("S/MIME encryption failed: {e}"),
                        ));
                    }
                    Err(SmimeFailure::MissingCertificates(missing)) => {
                        match opts.on_missing_certificate {
                            OnMissingCertificate::Reject => {
                                return Err(Reply::new(
                                    550,
                                    [5, 7, 1],
                                    format!(
                                        "No usable S/MIME certificate for {}",
                                        missing.join(", ")
                                    ),
                                ));
                            }
                            OnMissingCertificate::RmsProtect
                            | OnMissingCertificate::DeliverUnencrypted => {}
                        }
                        // Those without a certificate go on unencrypted; the others are encrypted.
                        let (without, with): (Vec<String>, Vec<String>) = c
                            .recipients
                            .iter()
                            .cloned()
                            .partition(|r| missing.contains(r));
                        let mut plain = Work {
                            copy: Copy {
                                recipients: without,
                                ..c.clone()
                            },
                            actions: w.actions.clone(),
                            next: w.next,
                        };
                        if opts.on_missing_certificate == OnMissingCertificate::RmsProtect {
                            // Those without a certificate get the message RMS-protected instead.
                            let template = RmsProtect {
                                template: "encrypt-only".into(),
                                rights: Default::default(),
                                expires_after: None,
                            };
                            let p = &mut plain.copy;
                            p.message = rms_protect(
                                protectors.rms,
                                &p.message,
                                sender,
                                &p.recipients,
                                &template,
                            )?;
                        }
                        c.recipients = with;
                        if !c.recipients.is_empty() {
                            w.next -= 1; // run the encryption again for the rest
                        }
                        work.push(plain);
                    }
                }
            }
        }
        work.push(w);
    }
    done.reverse();
    Ok(done)
}

fn rms_protect(
    rms: Option<&dyn Rms>,
    message: &[u8],
    sender: &str,
    recipients: &[String],
    action: &RmsProtect,
) -> Result<Vec<u8>, Reply> {
    let Some(rms) = rms else {
        let text = "RMS-style protection is not configured on this server ([rms] tenant_key_dir)";
        return Err(Reply::new(554, [5, 7, 0], text));
    };
    rms.protect(message, sender, recipients, action)
        .map_err(|e| Reply::new(451, [4, 7, 0], format!("RMS protection failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{evaluate, parse_rule_file, MessageFacts, RuleSet};
    use std::collections::BTreeSet;
    use std::path::Path;

    fn rules(texts: &[&str]) -> RuleSet {
        RuleSet::new(
            texts
                .iter()
                .enumerate()
                .map(|(i, t)| parse_rule_file(Path::new(&format!("{i}.toml")), t).unwrap())
                .collect(),
        )
    }

    fn run(
        rule_texts: &[&str],
        rcpts: &[&str],
        smime: Option<&dyn Smime>,
    ) -> Result<Vec<Copy>, Reply> {
        run_with(rule_texts, rcpts, Protectors { smime, rms: None })
    }

    /// Evaluates the rules for a small "[secure]" message from a@contoso.test and applies them.
    fn run_with(
        rule_texts: &[&str],
        rcpts: &[&str],
        protectors: Protectors,
    ) -> Result<Vec<Copy>, Reply> {
        let message = b"From: a@contoso.test\r\nSubject: [secure] hi\r\n\r\nbody\r\n";
        let recipients: Vec<String> = rcpts.iter().map(|s| s.to_string()).collect();
        let local: BTreeSet<String> = ["contoso.test".to_string()].into();
        let facts = MessageFacts {
            mail_from: "a@contoso.test",
            recipients: &recipients,
            message,
            local_domains: &local,
            authenticated: false,
            inbound_connector: None,
        };
        apply(
            &evaluate(&rules(rule_texts), &facts),
            "a@contoso.test",
            message,
            protectors,
        )
    }

    const TAG_EXTERNAL: &str = "name = \"t\"\npriority = 1\n[conditions]\nrecipient_scope = \"external\"\n\
        [[actions]]\ntype = \"add_header\"\nname = \"X-External\"\nvalue = \"yes\"\n\
        [[actions]]\ntype = \"prepend_subject\"\ntext = \"[EXT]\"\n[[actions]]\ntype = \"require_tls\"\n";

    #[test]
    fn groups_become_copies_with_their_own_changes() {
        let copies = run(
            &[TAG_EXTERNAL],
            &["b@fabrikam.test", "c@contoso.test"],
            None,
        )
        .unwrap();
        assert_eq!(copies.len(), 2);
        let ext = copies
            .iter()
            .find(|c| c.recipients == ["b@fabrikam.test"])
            .unwrap();
        assert!(ext.require_tls);
        assert_eq!(ext.message, b"From: a@contoso.test\r\nSubject: [EXT] [secure] hi\r\nX-External: yes\r\n\r\nbody\r\n");
        let int = copies
            .iter()
            .find(|c| c.recipients == ["c@contoso.test"])
            .unwrap();
        assert!(!int.require_tls);
        assert_eq!(
            int.message,
            b"From: a@contoso.test\r\nSubject: [secure] hi\r\n\r\nbody\r\n"
        );
    }

    #[test]
    fn reject_and_rms_refuse_the_whole_message() {
        let reject = "name = \"r\"\npriority = 1\n[conditions]\nsubject_contains = \"secure\"\n\
            [[actions]]\ntype = \"reject\"\ncode = 550\ntext = \"no secrets\"\n";
        let e = run(&[reject], &["b@fabrikam.test"], None).unwrap_err();
        assert_eq!(e.to_string(), "550 5.7.1 no secrets");
        let rms = "name = \"p\"\npriority = 1\n[[actions]]\ntype = \"rms_protect\"\ntemplate = \"do-not-forward\"\n";
        assert_eq!(
            run(&[rms], &["b@fabrikam.test"], None).unwrap_err().code,
            554
        );
    }

    struct FakeSmime;
    impl Smime for FakeSmime {
        fn encrypt(
            &self,
            message: &[u8],
            recipients: &[String],
            _: &SmimeEncrypt,
        ) -> Result<Vec<u8>, SmimeFailure> {
            let missing: Vec<String> = recipients
                .iter()
                .filter(|r| r.starts_with("nocert"))
                .cloned()
                .collect();
            if missing.is_empty() {
                Ok([b"ENCRYPTED:".as_slice(), message].concat())
            } else {
                Err(SmimeFailure::MissingCertificates(missing))
            }
        }
    }

    #[test]
    fn missing_certificates_follow_the_rule() {
        let rule = |on_missing: &str| {
            format!(
                "name = \"s\"\npriority = 1\n[[actions]]\ntype = \"smime_encrypt\"\non_missing_certificate = \"{on_missing}\"\n"
            )
        };
        let copies = run(
            &[&rule("deliver-unencrypted")],
            &["bob@f.test", "nocert@f.test"],
            Some(&FakeSmime),
        )
        .unwrap();
        assert_eq!(copies.len(), 2);
        let enc = copies
            .iter()
            .find(|c| c.recipients == ["bob@f.test"])
            .unwrap();
        assert!(enc.message.starts_with(b"ENCRYPTED:"));
        let plain = copies
            .iter()
            .find(|c| c.recipients == ["nocert@f.test"])
            .unwrap();
        assert!(plain.message.starts_with(b"From:"));
        let e = run(
            &[&rule("reject")],
            &["bob@f.test", "nocert@f.test"],
            Some(&FakeSmime),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "550 5.7.1 No usable S/MIME certificate for nocert@f.test"
        );
        assert_eq!(
            run(&[&rule("reject")], &["bob@f.test"], None)
                .unwrap_err()
                .code,
            451
        );
    }

    struct FakeRms;
    impl Rms for FakeRms {
        fn protect(
            &self,
            message: &[u8],
            _: &str,
            recipients: &[String],
            action: &RmsProtect,
        ) -> Result<Vec<u8>, String> {
            Ok([
                format!("RMS[{}:{}]:", action.template, recipients.join(",")).as_bytes(),
                message,
            ]
            .concat())
        }
    }

    #[test]
    fn recipients_without_certificates_can_get_rms_instead() {
        let rule = "name = \"s\"\npriority = 1\n[[actions]]\ntype = \"smime_encrypt\"\non_missing_certificate = \"rms-protect\"\n";
        let rcpts = ["bob@f.test", "nocert@f.test"];
        let both = Protectors {
            smime: Some(&FakeSmime),
            rms: Some(&FakeRms),
        };
        let copies = run_with(&[rule], &rcpts, both).unwrap();
        assert_eq!(copies.len(), 2);
        let enc = copies
            .iter()
            .find(|c| c.recipients == ["bob@f.test"])
            .unwrap();
        assert!(enc.message.starts_with(b"ENCRYPTED:"));
        let rms = copies
            .iter()
            .find(|c| c.recipients == ["nocert@f.test"])
            .unwrap();
        let prefix = b"RMS[encrypt-only:nocert@f.test]:";
        assert!(
            rms.message.starts_with(prefix),
            "{}",
            String::from_utf8_lossy(&rms.message)
        );
        // Without an RMS protector the fallback refuses clearly.
        let smime_only = Protectors {
            smime: Some(&FakeSmime),
            rms: None,
        };
        assert_eq!(run_with(&[rule], &rcpts, smime_only).unwrap_err().code, 554);
    }
}

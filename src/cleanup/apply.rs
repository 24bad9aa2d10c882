//! Applies the transport rules' actions to a message, per recipient group, before it is queued.

use std::borrow::Cow;

use super::headers;
use crate::mail::Reply;
use crate::rules::{Action, Evaluation, OnMissingCertificate, RmsProtect, SmimeEncrypt, SmimeSign};

/// The message as it arrived (with our Received header in front).
#[derive(Clone, Copy, Debug)]
pub struct Original<'a> {
    /// Its header section, with the empty line after it.
    pub head: &'a [u8],
    /// The whole message, when it is in memory (it must be, for the actions that encrypt);
    /// it starts with `head`.
    pub whole: Option<&'a [u8]>,
}

/// A copy's message, told relative to the original so that header changes never copy the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// The original, unchanged.
    Original,
    /// A new header section (with its empty line), followed by the original's body.
    Head(Vec<u8>),
    /// A message of its own (encrypted).
    Whole(Vec<u8>),
}

/// One queue file to write: the (possibly changed) message for some recipients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    pub recipients: Vec<String>,
    pub content: Content,
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

/// What cleanup can call on: S/MIME encryption and signing, and RMS, each where configured.
#[derive(Clone, Copy, Default)]
pub struct Protectors<'a> {
    pub smime: Option<&'a dyn Smime>,
    pub rms: Option<&'a dyn Rms>,
    pub signer: Option<&'a dyn Signer>,
}

/// S/MIME signing as the cleanup stage needs it.
pub trait Signer: Send + Sync {
    /// Signs `message` as its author (`sender` when it has no From). `None`: left as it is
    /// (already signed or encrypted, or no key and the action delivers unsigned); an error
    /// refuses the message with that reply (no key under `reject` or `defer`).
    fn sign(
        &self,
        message: &[u8],
        sender: &str,
        action: &SmimeSign,
    ) -> Result<Option<Vec<u8>>, Reply>;
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

impl Content {
    /// Applies a change of the header section.
    fn edit_header(&mut self, original: &Original, edit: impl Fn(&[u8]) -> Vec<u8>) {
        match self {
            Content::Original => *self = Content::Head(edit(original.head)),
            Content::Head(head) | Content::Whole(head) => *head = edit(head),
        }
    }

    /// The whole message, for actions that work on all of it.
    pub fn bytes<'a>(&'a self, original: &Original<'a>) -> Result<Cow<'a, [u8]>, Reply> {
        let whole = || {
            original
                .whole
                .ok_or_else(|| Reply::new(451, [4, 3, 0], "Error: internal error"))
        };
        Ok(match self {
            Content::Original => Cow::Borrowed(whole()?),
            Content::Head(head) => {
                let body = whole()?.get(original.head.len()..).unwrap_or_default();
                Cow::Owned([head.as_slice(), body].concat())
            }
            Content::Whole(bytes) => Cow::Borrowed(bytes),
        })
    }

    /// The first bytes of the message: its header section, or the start of a whole one.
    pub fn head<'a>(&'a self, original: &Original<'a>) -> &'a [u8] {
        match self {
            Content::Original => original.head,
            Content::Head(head) => head,
            Content::Whole(bytes) => &bytes[..bytes.len().min(64 * 1024)],
        }
    }

    /// Bytes of the message, given the original's length.
    pub fn len(&self, head_len: u64, original_len: u64) -> u64 {
        match self {
            Content::Original => original_len,
            Content::Head(head) => original_len - head_len + head.len() as u64,
            Content::Whole(bytes) => bytes.len() as u64,
        }
    }

    /// Whether encrypting actions need the whole message in memory.
    pub fn needed_by(evaluation: &Evaluation) -> bool {
        evaluation.groups.iter().any(|g| {
            g.actions.iter().any(|a| {
                matches!(
                    a.action,
                    Action::SmimeEncrypt(_) | Action::RmsProtect(_) | Action::SmimeSign(_)
                )
            })
        })
    }
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
    original: &Original,
    protectors: Protectors,
) -> Result<Vec<Copy>, Reply> {
    let mut work: Vec<Work> = evaluation
        .groups
        .iter()
        .map(|g| Work {
            copy: Copy {
                recipients: g.recipients.clone(),
                content: Content::Original,
                require_tls: false,
                route_via: None,
            },
            actions: sign_first(g.actions.iter().map(|a| a.action.clone()).collect()),
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
            Action::AddHeader(h) => c.content.edit_header(original, |m| {
                headers::add(m, h.name.as_str(), h.value.as_str())
            }),
            Action::SetHeader(h) => c.content.edit_header(original, |m| {
                headers::set(m, h.name.as_str(), h.value.as_str())
            }),
            Action::PrependSubject(p) => c
                .content
                .edit_header(original, |m| headers::prepend_subject(m, p.text.as_str())),
            Action::RedirectTo(r) => {
                c.recipients = r.addresses.iter().map(|a| a.as_str().to_string()).collect()
            }
            Action::Reject(r) => return Err(r.reply()),
            Action::RouteVia(r) => c.route_via = Some(r.connector.as_str().to_string()),
            Action::RequireTls(_) => c.require_tls = true,
            Action::SmimeSign(sign) => {
                let Some(signer) = protectors.signer else {
                    let text = "S/MIME signing is not configured ([smime] signing_dir)";
                    return Err(Reply::new(451, [4, 7, 0], text));
                };
                if let Some(signed) = signer.sign(&c.content.bytes(original)?, sender, &sign)? {
                    c.content = Content::Whole(signed);
                }
            }
            Action::RmsProtect(rms) => {
                let message = c.content.bytes(original)?;
                let protected = rms_protect(protectors.rms, &message, sender, &c.recipients, &rms)?;
                c.content = Content::Whole(protected);
            }
            Action::SmimeEncrypt(opts) => {
                let Some(smime) = protectors.smime else {
                    return Err(Reply::new(
                        451,
                        [4, 7, 0],
                        "S/MIME encryption is not configured ([smime] certificate_dir)",
                    ));
                };
                let encrypted = smime.encrypt(&c.content.bytes(original)?, &c.recipients, &opts);
                match encrypted {
                    Ok(encrypted) => c.content = Content::Whole(encrypted),
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
                            let protected = rms_protect(
                                protectors.rms,
                                &p.content.bytes(original)?,
                                sender,
                                &p.recipients,
                                &template,
                            )?;
                            p.content = Content::Whole(protected);
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

/// The actions with every `smime_sign` moved before the first encrypting action: a message is
/// signed, then the signed message encrypted (RFC 8551 §3.7), whatever order the rules gave.
fn sign_first(mut actions: Vec<Action>) -> Vec<Action> {
    let encrypts = |a: &Action| matches!(a, Action::SmimeEncrypt(_) | Action::RmsProtect(_));
    if let Some(first) = actions.iter().position(encrypts) {
        let mut at = first;
        for i in first + 1..actions.len() {
            if matches!(actions[i], Action::SmimeSign(_)) {
                let sign = actions.remove(i);
                actions.insert(at, sign);
                at += 1;
            }
        }
    }
    actions
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

    /// A copy with its message spelt out.
    #[derive(Debug)]
    struct Made {
        recipients: Vec<String>,
        message: Vec<u8>,
        require_tls: bool,
    }

    const MESSAGE: &[u8] = b"From: a@contoso.test\r\nSubject: [secure] hi\r\n\r\nbody\r\n";

    fn run(
        rule_texts: &[&str],
        rcpts: &[&str],
        smime: Option<&dyn Smime>,
    ) -> Result<Vec<Made>, Reply> {
        run_with(
            rule_texts,
            rcpts,
            Protectors {
                smime,
                ..Default::default()
            },
        )
    }

    /// Evaluates the rules for a small "[secure]" message from a@contoso.test and applies them.
    fn run_with(
        rule_texts: &[&str],
        rcpts: &[&str],
        protectors: Protectors,
    ) -> Result<Vec<Made>, Reply> {
        let original = Original {
            head: &MESSAGE[..MESSAGE.len() - 6],
            whole: Some(MESSAGE),
        };
        let copies = apply_to(rule_texts, rcpts, protectors, &original)?;
        Ok(copies
            .into_iter()
            .map(|c| Made {
                message: c.content.bytes(&original).unwrap().to_vec(),
                recipients: c.recipients,
                require_tls: c.require_tls,
            })
            .collect())
    }

    fn apply_to(
        rule_texts: &[&str],
        rcpts: &[&str],
        protectors: Protectors,
        original: &Original,
    ) -> Result<Vec<Copy>, Reply> {
        let recipients: Vec<String> = rcpts.iter().map(|s| s.to_string()).collect();
        let local = crate::mail::DomainSet::new(["contoso.test"]);
        let facts = MessageFacts {
            mail_from: "a@contoso.test",
            recipients: &recipients,
            message: MESSAGE,
            size: MESSAGE.len() as u64,
            local_domains: &local,
            authenticated: false,
            inbound_connector: None,
            sender_auth: None,
        };
        let evaluation = evaluate(&rules(rule_texts), &facts);
        apply(&evaluation, "a@contoso.test", original, protectors)
    }

    #[test]
    fn header_changes_need_only_the_header_section() {
        let head = &MESSAGE[..MESSAGE.len() - 6];
        let header_only = Original { head, whole: None };
        let rcpts = ["b@fabrikam.test", "c@contoso.test"];
        let copies =
            apply_to(&[TAG_EXTERNAL], &rcpts, Protectors::default(), &header_only).unwrap();
        let of = |r: &str| &copies.iter().find(|c| c.recipients == [r]).unwrap().content;
        assert_eq!(of("c@contoso.test"), &Content::Original);
        let Content::Head(new) = of("b@fabrikam.test") else {
            panic!("{:?}", of("b@fabrikam.test"));
        };
        assert!(new.ends_with(b"X-External: yes\r\n\r\n"), "{new:?}");
        let len = of("b@fabrikam.test").len(head.len() as u64, MESSAGE.len() as u64);
        assert_eq!(len, new.len() as u64 + 6);
        // An encrypting action without the whole message in memory is an internal error, not a
        // message without its body.
        let rule = "name = \"s\"\npriority = 1\n[[actions]]\ntype = \"smime_encrypt\"\n";
        let smime = Protectors {
            smime: Some(&FakeSmime),
            ..Default::default()
        };
        let e = apply_to(&[rule], &rcpts, smime, &header_only).unwrap_err();
        assert_eq!(e.code, 451);
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
            signer: None,
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
            ..Default::default()
        };
        assert_eq!(run_with(&[rule], &rcpts, smime_only).unwrap_err().code, 554);
    }
}

//! The rule model: a rule, its conditions, and the ordered rule set.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

use super::action::Action;
use super::matchers::{DomainPattern, Glob};
use super::values::{Address, ConnectorName, HeaderName, Needle};
use crate::sender_auth::AuthResult;

/// One transport rule, read from one file.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub description: Option<String>,
    /// Lower runs first; ties are ordered by file name.
    pub priority: u32,
    pub enabled: bool,
    /// All must hold (an empty list always holds).
    pub conditions: Vec<Condition>,
    /// Any one that holds cancels the rule.
    pub exceptions: Vec<Condition>,
    pub actions: Vec<Action>,
    /// When the rule matches a recipient, no later rule runs for that recipient.
    pub stop: bool,
    /// The file the rule came from.
    pub file: PathBuf,
}

impl Rule {
    /// The file name (without directory), used to order rules of equal priority.
    pub fn file_name(&self) -> &str {
        self.file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
    }
}

/// The loaded rules in evaluation order. Cloning is cheap (the rules are shared).
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    rules: Arc<Vec<Rule>>,
}

impl RuleSet {
    /// Orders the rules by priority, then file name, then name.
    pub fn new(mut rules: Vec<Rule>) -> RuleSet {
        rules.sort_by(|a, b| {
            (a.priority, a.file_name(), &a.name).cmp(&(b.priority, b.file_name(), &b.name))
        });
        RuleSet {
            rules: Arc::new(rules),
        }
    }

    /// The rules in evaluation order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }

    /// Whether evaluating needs the message's body, not only its header section: an enabled
    /// rule asks about the body text or the attachments.
    pub fn needs_body(&self) -> bool {
        self.rules.iter().filter(|r| r.enabled).any(|r| {
            r.conditions.iter().chain(&r.exceptions).any(|c| {
                matches!(
                    c,
                    Condition::BodyContains(_)
                        | Condition::HasAttachment(_)
                        | Condition::AttachmentNameMatches(_)
                )
            })
        })
    }

    /// Connector names the rules refer to (`route_via`, `inbound_connector`), so the
    /// configuration can check that they exist.
    pub fn connectors(&self) -> BTreeSet<&str> {
        let mut out = BTreeSet::new();
        for rule in self.rules.iter() {
            for c in rule.conditions.iter().chain(&rule.exceptions) {
                if let Condition::InboundConnector(names) = c {
                    out.extend(names.iter().map(ConnectorName::as_str));
                }
            }
            for a in &rule.actions {
                if let Action::RouteVia(r) = a {
                    out.insert(r.connector.as_str());
                }
            }
        }
        out
    }
}

/// Whether a recipient's domain is one of the local domains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Internal,
    External,
}

/// `header_matches = { name = "X-Priority", pattern = "1*" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    pub name: HeaderName,
    pub pattern: Glob,
}

/// One condition (or exception). Lists hold when any of their values matches.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Sender(Vec<Address>),
    Recipient(Vec<Address>),
    SenderDomain(Vec<DomainPattern>),
    RecipientDomain(Vec<DomainPattern>),
    SenderPattern(Vec<Glob>),
    RecipientPattern(Vec<Glob>),
    RecipientScope(Scope),
    SubjectContains(Vec<Needle>),
    BodyContains(Vec<Needle>),
    HeaderMatches(HeaderMatch),
    /// The message is larger than this many bytes.
    SizeOver(u64),
    HasAttachment(bool),
    AttachmentNameMatches(Vec<Glob>),
    SenderAuthenticated(bool),
    InboundConnector(Vec<ConnectorName>),
    /// The SPF result of a checked message (RFC 8601 names).
    Spf(Vec<AuthResult>),
    /// The DKIM result (pass when any signature passes).
    Dkim(Vec<AuthResult>),
    /// The DMARC result.
    Dmarc(Vec<AuthResult>),
}

impl Condition {
    /// The key that names this condition in a rule file.
    pub fn key(&self) -> &'static str {
        match self {
            Condition::Sender(_) => "sender",
            Condition::Recipient(_) => "recipient",
            Condition::SenderDomain(_) => "sender_domain",
            Condition::RecipientDomain(_) => "recipient_domain",
            Condition::SenderPattern(_) => "sender_pattern",
            Condition::RecipientPattern(_) => "recipient_pattern",
            Condition::RecipientScope(_) => "recipient_scope",
            Condition::SubjectContains(_) => "subject_contains",
            Condition::BodyContains(_) => "body_contains",
            Condition::HeaderMatches(_) => "header_matches",
            Condition::SizeOver(_) => "size_over",
            Condition::HasAttachment(_) => "has_attachment",
            Condition::AttachmentNameMatches(_) => "attachment_name_matches",
            Condition::SenderAuthenticated(_) => "sender_authenticated",
            Condition::InboundConnector(_) => "inbound_connector",
            Condition::Spf(_) => "spf",
            Condition::Dkim(_) => "dkim",
            Condition::Dmarc(_) => "dmarc",
        }
    }

    /// True for conditions about one recipient; the others are about the whole message.
    pub fn is_per_recipient(&self) -> bool {
        matches!(
            self,
            Condition::Recipient(_)
                | Condition::RecipientDomain(_)
                | Condition::RecipientPattern(_)
                | Condition::RecipientScope(_)
        )
    }
}

fn write_list<T: fmt::Display>(f: &mut fmt::Formatter<'_>, items: &[T]) -> fmt::Result {
    if let [one] = items {
        return write!(f, "{:?}", one.to_string());
    }
    f.write_str("[")?;
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{:?}", item.to_string())?;
    }
    f.write_str("]")
}

impl fmt::Display for Condition {
    /// As it would be written in a rule file, e.g. `recipient_domain = "fabrikam.test"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = ", self.key())?;
        match self {
            Condition::Sender(v) | Condition::Recipient(v) => write_list(f, v),
            Condition::SenderDomain(v) | Condition::RecipientDomain(v) => write_list(f, v),
            Condition::SenderPattern(v)
            | Condition::RecipientPattern(v)
            | Condition::AttachmentNameMatches(v) => write_list(f, v),
            Condition::RecipientScope(Scope::Internal) => f.write_str("\"internal\""),
            Condition::RecipientScope(Scope::External) => f.write_str("\"external\""),
            Condition::SubjectContains(v) | Condition::BodyContains(v) => write_list(f, v),
            Condition::HeaderMatches(h) => write!(
                f,
                "{{ name = {:?}, pattern = {:?} }}",
                h.name.as_str(),
                h.pattern.as_str()
            ),
            Condition::SizeOver(n) => write!(f, "{n}"),
            Condition::HasAttachment(b) | Condition::SenderAuthenticated(b) => write!(f, "{b}"),
            Condition::InboundConnector(v) => write_list(f, v),
            Condition::Spf(v) | Condition::Dkim(v) | Condition::Dmarc(v) => write_list(f, v),
        }
    }
}

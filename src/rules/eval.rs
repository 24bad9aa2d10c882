//! Pure rule evaluation: message, envelope and session facts in, actions per recipient out.
//! No I/O, no clock; the message is parsed at most once per evaluation, and only when a rule
//! asks about its content.

use std::cell::OnceCell;

use mail_parser::{Message, MessageParser, MimeHeaders, PartType};

use super::action::Action;
use super::model::{Condition, RuleSet, Scope};
use super::values::normalize_text;
use crate::mail::{domain_of, DomainSet};

/// How deep attachment names are looked for inside attached messages.
const MAX_NESTING: usize = 8;

/// Everything a rule may look at.
#[derive(Debug, Clone, Copy)]
pub struct MessageFacts<'a> {
    /// The envelope sender (empty for the null sender `<>`).
    pub mail_from: &'a str,
    pub recipients: &'a [String],
    /// The RFC 5322 message: all of it, or only its header section when no rule looks further
    /// (see [`RuleSet::needs_body`]).
    pub message: &'a [u8],
    /// Bytes of the whole message.
    pub size: u64,
    /// Lowercase local domains (`recipient_scope = "internal"`).
    pub local_domains: &'a DomainSet,
    /// The client authenticated (SMTP AUTH) before sending.
    pub authenticated: bool,
    /// The inbound connector the message arrived through, if any.
    pub inbound_connector: Option<&'a str>,
    /// The sender checks of a message from outside (None: not checked, e.g. submitted mail;
    /// then no `spf`, `dkim` or `dmarc` condition holds).
    pub sender_auth: Option<&'a crate::sender_auth::AuthOutcome>,
}

/// An action and the rule that asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub rule: String,
    pub action: Action,
}

/// Recipients that share the same list of actions (in first-seen order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub recipients: Vec<String>,
    /// In rule order; empty when no rule matched these recipients.
    pub actions: Vec<Applied>,
}

/// The outcome of evaluating the rules for one message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Evaluation {
    /// Every recipient is in exactly one group; groups are in the order of their first recipient.
    pub groups: Vec<Group>,
    /// Names of the rules that matched any recipient, in evaluation order.
    pub matched: Vec<String>,
}

impl Evaluation {
    /// The actions for one recipient (exact address as given in the facts).
    pub fn actions_for(&self, recipient: &str) -> Option<&[Applied]> {
        self.groups
            .iter()
            .find(|g| g.recipients.iter().any(|r| r == recipient))
            .map(|g| g.actions.as_slice())
    }

    /// True when no rule asked for anything.
    pub fn is_unchanged(&self) -> bool {
        self.groups.iter().all(|g| g.actions.is_empty())
    }
}

/// Evaluates the rules for a message: which actions apply to which recipients.
pub fn evaluate(rules: &RuleSet, facts: &MessageFacts) -> Evaluation {
    let trace = trace(rules, facts);
    let mut groups: Vec<Group> = Vec::new();
    for (r, recipient) in facts.recipients.iter().enumerate() {
        let mut actions = Vec::new();
        for (rule, verdicts) in rules.rules().iter().zip(&trace) {
            if verdicts[r] == Verdict::Matched {
                actions.extend(rule.actions.iter().map(|a| Applied {
                    rule: rule.name.clone(),
                    action: a.clone(),
                }));
            }
        }
        match groups.iter_mut().find(|g| g.actions == actions) {
            Some(g) => g.recipients.push(recipient.clone()),
            None => groups.push(Group {
                recipients: vec![recipient.clone()],
                actions,
            }),
        }
    }
    let matched = rules
        .rules()
        .iter()
        .zip(&trace)
        .filter(|(_, v)| v.contains(&Verdict::Matched))
        .map(|(rule, _)| rule.name.clone())
        .collect();
    Evaluation { groups, matched }
}

/// What happened to one rule for one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Matched,
    Disabled,
    /// An earlier rule (index into the rule set) with `stop = true` matched this recipient.
    Stopped(usize),
    /// This condition (index into `rule.conditions`) does not hold.
    Failed(usize),
    /// This exception (index into `rule.exceptions`) holds.
    Excepted(usize),
}

/// `[rule][recipient]` verdicts, in rule order.
pub(crate) fn trace(rules: &RuleSet, facts: &MessageFacts) -> Vec<Vec<Verdict>> {
    let ctx = Context::new(facts);
    let recipients: Vec<Recipient> = facts
        .recipients
        .iter()
        .map(|r| Recipient::new(r, facts.local_domains))
        .collect();
    let mut stopped_by: Vec<Option<usize>> = vec![None; recipients.len()];
    let mut out = Vec::with_capacity(rules.len());
    for (index, rule) in rules.rules().iter().enumerate() {
        if !rule.enabled {
            out.push(vec![Verdict::Disabled; recipients.len()]);
            continue;
        }
        // Message-level results are computed once per rule, on first use.
        let mut cond_cache = vec![None; rule.conditions.len()];
        let mut exc_cache = vec![None; rule.exceptions.len()];
        let mut verdicts = Vec::with_capacity(recipients.len());
        for (r, rcpt) in recipients.iter().enumerate() {
            let verdict = if let Some(by) = stopped_by[r] {
                Verdict::Stopped(by)
            } else if let Some(i) = first_index(&rule.conditions, &mut cond_cache, |c, cache| {
                !ctx.holds(c, rcpt, cache)
            }) {
                Verdict::Failed(i)
            } else if let Some(i) = first_index(&rule.exceptions, &mut exc_cache, |c, cache| {
                ctx.holds(c, rcpt, cache)
            }) {
                Verdict::Excepted(i)
            } else {
                if rule.stop {
                    stopped_by[r] = Some(index);
                }
                Verdict::Matched
            };
            verdicts.push(verdict);
        }
        out.push(verdicts);
    }
    out
}

/// Index of the first condition for which `test` is true; `cache` keeps message-level results.
fn first_index(
    conditions: &[Condition],
    cache: &mut [Option<bool>],
    test: impl Fn(&Condition, &mut Option<bool>) -> bool,
) -> Option<usize> {
    conditions
        .iter()
        .zip(cache.iter_mut())
        .position(|(c, slot)| test(c, slot))
}

/// One recipient, lowercased once.
struct Recipient {
    lower: String,
    domain: Option<String>,
    internal: bool,
}

impl Recipient {
    fn new(address: &str, local_domains: &DomainSet) -> Recipient {
        let lower = address.to_lowercase();
        let domain = domain_in(&lower).map(str::to_string);
        let internal = local_domains.contains_address(address);
        Recipient {
            lower,
            domain,
            internal,
        }
    }
}

/// The facts of one evaluation, with the parsed message and derived texts computed lazily.
struct Context<'a> {
    facts: &'a MessageFacts<'a>,
    sender: String,
    sender_domain: Option<String>,
    parsed: OnceCell<Option<Message<'a>>>,
    subject: OnceCell<String>,
    body: OnceCell<String>,
    attachment_names: OnceCell<Vec<String>>,
}

impl<'a> Context<'a> {
    fn new(facts: &'a MessageFacts<'a>) -> Context<'a> {
        let sender = facts.mail_from.to_lowercase();
        let sender_domain = domain_in(&sender).map(str::to_string);
        Context {
            facts,
            sender,
            sender_domain,
            parsed: OnceCell::new(),
            subject: OnceCell::new(),
            body: OnceCell::new(),
            attachment_names: OnceCell::new(),
        }
    }

    /// Whether a condition holds for a recipient. Message-level results go through `cache`.
    fn holds(&self, c: &Condition, rcpt: &Recipient, cache: &mut Option<bool>) -> bool {
        if c.is_per_recipient() {
            return self.holds_for_recipient(c, rcpt);
        }
        *cache.get_or_insert_with(|| self.holds_for_message(c))
    }

    fn holds_for_recipient(&self, c: &Condition, rcpt: &Recipient) -> bool {
        match c {
            Condition::Recipient(list) => list.iter().any(|a| a.lower() == rcpt.lower),
            Condition::RecipientDomain(list) => rcpt
                .domain
                .as_deref()
                .is_some_and(|d| list.iter().any(|p| p.matches(d))),
            Condition::RecipientPattern(list) => list.iter().any(|g| g.matches_lower(&rcpt.lower)),
            Condition::RecipientScope(Scope::Internal) => rcpt.internal,
            Condition::RecipientScope(Scope::External) => !rcpt.internal,
            _ => false,
        }
    }

    fn holds_for_message(&self, c: &Condition) -> bool {
        match c {
            Condition::Sender(list) => {
                !self.sender.is_empty() && list.iter().any(|a| a.lower() == self.sender)
            }
            Condition::SenderDomain(list) => self
                .sender_domain
                .as_deref()
                .is_some_and(|d| list.iter().any(|p| p.matches(d))),
            Condition::SenderPattern(list) => list.iter().any(|g| g.matches_lower(&self.sender)),
            Condition::SenderAuthenticated(want) => self.facts.authenticated == *want,
            Condition::InboundConnector(list) => self
                .facts
                .inbound_connector
                .is_some_and(|name| list.iter().any(|c| c.as_str() == name)),
            Condition::Spf(want) => self
                .facts
                .sender_auth
                .is_some_and(|a| want.contains(&a.spf)),
            Condition::Dkim(want) => self
                .facts
                .sender_auth
                .is_some_and(|a| want.contains(&a.dkim)),
            Condition::Dmarc(want) => self
                .facts
                .sender_auth
                .is_some_and(|a| want.contains(&a.dmarc)),
            Condition::SizeOver(limit) => self.facts.size > *limit,
            Condition::SubjectContains(needles) => {
                let subject = self.subject();
                needles.iter().any(|n| subject.contains(n.as_str()))
            }
            Condition::BodyContains(needles) => {
                let body = self.body();
                needles.iter().any(|n| body.contains(n.as_str()))
            }
            Condition::HeaderMatches(h) => self
                .header_values(h.name.as_str())
                .iter()
                .any(|v| h.pattern.matches_lower(&v.to_lowercase())),
            Condition::HasAttachment(want) => {
                let has = self.message().is_some_and(|m| m.attachment_count() > 0);
                has == *want
            }
            Condition::AttachmentNameMatches(globs) => self
                .attachment_names()
                .iter()
                .any(|name| globs.iter().any(|g| g.matches_lower(name))),
            Condition::Recipient(_)
            | Condition::RecipientDomain(_)
            | Condition::RecipientPattern(_)
            | Condition::RecipientScope(_) => false,
        }
    }

    fn message(&self) -> Option<&Message<'a>> {
        self.parsed
            .get_or_init(|| MessageParser::default().parse(self.facts.message))
            .as_ref()
    }

    /// The decoded subject, normalised like search texts.
    fn subject(&self) -> &str {
        self.subject.get_or_init(|| {
            self.message()
                .and_then(Message::subject)
                .map(normalize_text)
                .unwrap_or_default()
        })
    }

    /// The decoded text and HTML body parts (HTML as text), normalised, joined by NUL.
    fn body(&self) -> &str {
        self.body.get_or_init(|| {
            let Some(m) = self.message() else {
                return String::new();
            };
            let mut ids: Vec<u32> = m.text_body.iter().chain(&m.html_body).copied().collect();
            ids.sort_unstable();
            ids.dedup();
            let mut out = String::new();
            for part in ids.iter().filter_map(|&id| m.part(id)) {
                let text = match &part.body {
                    PartType::Text(t) => normalize_text(t),
                    PartType::Html(h) => {
                        normalize_text(&mail_parser::decoders::html::html_to_text(h))
                    }
                    _ => continue,
                };
                out.push_str(&text);
                out.push('\0');
            }
            out
        })
    }

    /// Lowercase file names of every part that has one, also inside attached messages.
    fn attachment_names(&self) -> &[String] {
        self.attachment_names.get_or_init(|| {
            let mut out = Vec::new();
            if let Some(m) = self.message() {
                collect_names(m, 0, &mut out);
            }
            out
        })
    }

    /// Every value of a top-level header field, unfolded; decoded text too where it differs.
    fn header_values(&self, name: &str) -> Vec<String> {
        let Some(m) = self.message() else {
            return Vec::new();
        };
        let raw = m.raw_message();
        let mut out = Vec::new();
        for h in m.headers() {
            if !h.name().eq_ignore_ascii_case(name) {
                continue;
            }
            let bytes = raw
                .get(h.offset_start() as usize..h.offset_end() as usize)
                .unwrap_or_default();
            let unfolded = unfold(&String::from_utf8_lossy(bytes));
            if let Some(text) = h.value().as_text() {
                let text = text.trim();
                if text != unfolded {
                    out.push(text.to_string());
                }
            }
            out.push(unfolded);
        }
        out
    }
}

fn collect_names(m: &Message, depth: usize, out: &mut Vec<String>) {
    for part in &m.parts {
        if let Some(name) = part.attachment_name() {
            out.push(name.to_lowercase());
        }
        if let PartType::Message(inner) = &part.body {
            if depth < MAX_NESTING {
                collect_names(inner, depth + 1, out);
            }
        }
    }
}

/// A raw header value on one line: folding line breaks removed, ends trimmed.
fn unfold(raw: &str) -> String {
    raw.replace("\r\n", "").replace('\n', "").trim().to_string()
}

/// The domain of an address (see [`domain_of`]), if it has a non-empty one.
fn domain_in(address: &str) -> Option<&str> {
    Some(domain_of(address)).filter(|d| !d.is_empty())
}

#[cfg(test)]
mod tests;

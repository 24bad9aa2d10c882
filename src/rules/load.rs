//! Reads rules from a directory of TOML files (one rule per file), naming file, line and
//! problem on any error.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::action::Action;
use super::matchers::{DomainPattern, Glob};
use super::model::{Condition, HeaderMatch, Rule, RuleSet, Scope};
use super::values::{Address, ConnectorName, List, Needle, Size};

/// A rule file problem: `file:line: problem` (the line when it is known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub problem: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file.display(), line, self.problem),
            None => write!(f, "{}: {}", self.file.display(), self.problem),
        }
    }
}

impl std::error::Error for RuleError {}

/// Loads every `*.toml` file of `dir` (not hidden files, not subdirectories; other files are
/// ignored) and returns the rules in evaluation order. Rule names must be unique.
pub fn load_dir(dir: &Path) -> Result<RuleSet, RuleError> {
    let dir_error = |problem: String| RuleError {
        file: dir.to_path_buf(),
        line: None,
        problem,
    };
    let entries =
        std::fs::read_dir(dir).map_err(|e| dir_error(format!("cannot read directory: {e}")))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| dir_error(format!("cannot read directory: {e}")))?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        if path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    let mut rules = Vec::with_capacity(files.len());
    let mut seen: BTreeMap<String, PathBuf> = BTreeMap::new();
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(|e| RuleError {
            file: path.clone(),
            line: None,
            problem: format!("cannot read: {e}"),
        })?;
        let (rule, name_line) = parse_rule(&path, &text)?;
        if let Some(first) = seen.get(&rule.name) {
            return Err(RuleError {
                file: path.clone(),
                line: Some(name_line),
                problem: format!(
                    "duplicate rule name {:?} (also in {})",
                    rule.name,
                    first.display()
                ),
            });
        }
        seen.insert(rule.name.clone(), path.clone());
        rules.push(rule);
    }
    Ok(RuleSet::new(rules))
}

/// Parses one rule file's text as if it had been read from `path`.
pub fn parse_rule_file(path: &Path, text: &str) -> Result<Rule, RuleError> {
    parse_rule(path, text).map(|(rule, _)| rule)
}

/// The rule, and the line of its `name` key (for duplicate-name errors).
fn parse_rule(path: &Path, text: &str) -> Result<(Rule, usize), RuleError> {
    let at = |span: Option<std::ops::Range<usize>>, problem: String| RuleError {
        file: path.to_path_buf(),
        line: span.map(|s| line_of(text, s.start)),
        problem,
    };
    let raw: RawRule = toml::from_str(text).map_err(|e| {
        let message = e.message().trim().replace('\n', " ");
        at(e.span(), with_hint(message))
    })?;
    let name_line = line_of(text, raw.name.span().start);
    let name = raw.name.get_ref().trim().to_string();
    if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
        return Err(at(
            Some(raw.name.span()),
            format!(
                "a rule name must be 1 to 100 printable characters: {:?}",
                raw.name.get_ref()
            ),
        ));
    }
    let (actions, actions_span) = match raw.actions {
        Some(a) => {
            let span = a.span();
            (a.into_inner(), span)
        }
        None => (Vec::new(), raw.name.span()),
    };
    if actions.is_empty() && !raw.stop {
        return Err(at(
            Some(actions_span),
            "a rule needs at least one action (or stop = true, to exempt what it matches \
             from later rules)"
                .into(),
        ));
    }
    let rule = Rule {
        name,
        description: raw.description,
        priority: raw.priority,
        enabled: raw.enabled,
        conditions: raw.conditions.into_conditions(),
        exceptions: raw.exceptions.into_conditions(),
        actions,
        stop: raw.stop,
        file: path.to_path_buf(),
    };
    Ok((rule, name_line))
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// TOML puts keys written after a `[table]` header into that table; say so when a top-level
/// key turns up as an unknown field.
fn with_hint(message: String) -> String {
    for key in ["stop", "enabled", "priority", "name", "description"] {
        if message.contains(&format!("unknown field `{key}`")) {
            return format!(
                "{message} (top-level keys such as `{key}` must come before the first [table] \
                 or [[actions]])"
            );
        }
    }
    message
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Spanned<String>,
    description: Option<String>,
    priority: u32,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    stop: bool,
    #[serde(default)]
    conditions: RawConditions,
    #[serde(default)]
    exceptions: RawConditions,
    actions: Option<Spanned<Vec<Action>>>,
}

/// `[conditions]` and `[exceptions]` share these keys.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConditions {
    sender: Option<List<Address>>,
    recipient: Option<List<Address>>,
    sender_domain: Option<List<DomainPattern>>,
    recipient_domain: Option<List<DomainPattern>>,
    sender_pattern: Option<List<Glob>>,
    recipient_pattern: Option<List<Glob>>,
    recipient_scope: Option<Scope>,
    subject_contains: Option<List<Needle>>,
    body_contains: Option<List<Needle>>,
    header_matches: Option<HeaderMatch>,
    size_over: Option<Size>,
    has_attachment: Option<bool>,
    attachment_name_matches: Option<List<Glob>>,
    sender_authenticated: Option<bool>,
    inbound_connector: Option<List<ConnectorName>>,
    spf: Option<List<crate::sender_auth::AuthResult>>,
    dkim: Option<List<crate::sender_auth::AuthResult>>,
    dmarc: Option<List<crate::sender_auth::AuthResult>>,
}

impl RawConditions {
    /// In a fixed order: envelope and session facts first, then the message's content.
    fn into_conditions(self) -> Vec<Condition> {
        let all = [
            self.sender.map(|l| Condition::Sender(l.0)),
            self.sender_domain.map(|l| Condition::SenderDomain(l.0)),
            self.sender_pattern.map(|l| Condition::SenderPattern(l.0)),
            self.sender_authenticated
                .map(Condition::SenderAuthenticated),
            self.inbound_connector
                .map(|l| Condition::InboundConnector(l.0)),
            self.spf.map(|l| Condition::Spf(l.0)),
            self.dkim.map(|l| Condition::Dkim(l.0)),
            self.dmarc.map(|l| Condition::Dmarc(l.0)),
            self.recipient.map(|l| Condition::Recipient(l.0)),
            self.recipient_domain
                .map(|l| Condition::RecipientDomain(l.0)),
            self.recipient_pattern
                .map(|l| Condition::RecipientPattern(l.0)),
            self.recipient_scope.map(Condition::RecipientScope),
            self.size_over.map(|s| Condition::SizeOver(s.0)),
            self.subject_contains
                .map(|l| Condition::SubjectContains(l.0)),
            self.header_matches.map(Condition::HeaderMatches),
            self.has_attachment.map(Condition::HasAttachment),
            self.attachment_name_matches
                .map(|l| Condition::AttachmentNameMatches(l.0)),
            self.body_contains.map(|l| Condition::BodyContains(l.0)),
        ];
        all.into_iter().flatten().collect()
    }
}

#[cfg(test)]
mod tests;

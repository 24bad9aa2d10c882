//! Why each rule did or did not match each recipient (for `sealpost rules test`).

use std::fmt;
use std::path::PathBuf;

use super::eval::{trace, MessageFacts, Verdict};
use super::model::RuleSet;

/// For every rule, in evaluation order, what happened for every recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub rules: Vec<RuleReport>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleReport {
    pub name: String,
    pub priority: u32,
    pub file: PathBuf,
    pub enabled: bool,
    pub stop: bool,
    pub recipients: Vec<RecipientReport>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientReport {
    pub recipient: String,
    pub outcome: Outcome,
}

/// Whether a rule matched a recipient, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Matched,
    /// `enabled = false`.
    Disabled,
    /// An earlier rule with `stop = true` (named) matched this recipient.
    Stopped {
        by: String,
    },
    /// The first condition that does not hold, as written (`recipient_domain = "a.test"`).
    ConditionFailed {
        condition: String,
    },
    /// The first exception that holds, as written.
    ExceptionApplied {
        exception: String,
    },
}

impl Outcome {
    pub fn is_match(&self) -> bool {
        *self == Outcome::Matched
    }
}

/// Evaluates the rules like `evaluate` and reports every rule × recipient outcome.
pub fn explain(rules: &RuleSet, facts: &MessageFacts) -> Explanation {
    let verdicts = trace(rules, facts);
    let list = rules.rules();
    let reports = list
        .iter()
        .zip(verdicts)
        .map(|(rule, per_rcpt)| RuleReport {
            name: rule.name.clone(),
            priority: rule.priority,
            file: rule.file.clone(),
            enabled: rule.enabled,
            stop: rule.stop,
            recipients: facts
                .recipients
                .iter()
                .zip(per_rcpt)
                .map(|(recipient, v)| RecipientReport {
                    recipient: recipient.clone(),
                    outcome: match v {
                        Verdict::Matched => Outcome::Matched,
                        Verdict::Disabled => Outcome::Disabled,
                        Verdict::Stopped(i) => Outcome::Stopped {
                            by: list.get(i).map(|r| r.name.clone()).unwrap_or_default(),
                        },
                        Verdict::Failed(i) => Outcome::ConditionFailed {
                            condition: rule
                                .conditions
                                .get(i)
                                .map(ToString::to_string)
                                .unwrap_or_default(),
                        },
                        Verdict::Excepted(i) => Outcome::ExceptionApplied {
                            exception: rule
                                .exceptions
                                .get(i)
                                .map(ToString::to_string)
                                .unwrap_or_default(),
                        },
                    },
                })
                .collect(),
        })
        .collect();
    Explanation { rules: reports }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Matched => f.write_str("matched"),
            Outcome::Disabled => f.write_str("skipped: rule is disabled"),
            Outcome::Stopped { by } => {
                write!(f, "skipped: rule {by:?} matched earlier with stop = true")
            }
            Outcome::ConditionFailed { condition } => {
                write!(f, "no match: condition {condition} does not hold")
            }
            Outcome::ExceptionApplied { exception } => {
                write!(f, "no match: exception {exception} applies")
            }
        }
    }
}

impl fmt::Display for Explanation {
    /// One block per rule: a heading line, then one line per recipient.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.rules.is_empty() {
            return writeln!(f, "(no rules)");
        }
        let width = self
            .rules
            .iter()
            .flat_map(|r| r.recipients.iter().map(|x| x.recipient.len()))
            .max()
            .unwrap_or(0);
        for rule in &self.rules {
            let file = rule
                .file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            write!(
                f,
                "rule {:?} (priority {}, {file}",
                rule.name, rule.priority
            )?;
            if !rule.enabled {
                f.write_str(", disabled")?;
            }
            if rule.stop {
                f.write_str(", stop")?;
            }
            writeln!(f, ")")?;
            for r in &rule.recipients {
                writeln!(f, "  {:width$}  {}", r.recipient, r.outcome)?;
            }
        }
        Ok(())
    }
}

//! `sealpost rules`: list the configured transport rules, or show what they would do to a
//! message without sending it.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use super::ConfigArgs;
use crate::config::Config;
use crate::rules::{evaluate, explain, Evaluation, MessageFacts, Rule};
use crate::sender_auth::{AuthOutcome, AuthResult, Disposition};

#[derive(Args, Debug)]
pub struct RulesArgs {
    #[command(subcommand)]
    command: RulesCommand,
}

#[derive(Subcommand, Debug)]
enum RulesCommand {
    /// Load the configuration's [rules] dir and print every rule in evaluation order.
    ///
    /// A bad rule file is reported as `FILE:LINE: problem` and the exit code is 2.
    Check {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Show which rules match a message and what they would do for each recipient.
    ///
    /// Nothing is sent or queued: the message file is read, the rules are evaluated as the
    /// cleanup stage would, and every rule's outcome per recipient is printed with the reason
    /// when it did not match.
    Test(TestArgs),
}

#[derive(Args, Debug)]
struct TestArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The message: an RFC 5322 file such as fixtures/eml/secure.eml.
    #[arg(long, value_name = "FILE")]
    eml: PathBuf,
    /// The envelope sender (MAIL FROM); an empty string is the null sender.
    #[arg(long, value_name = "ADDR")]
    from: String,
    /// An envelope recipient (RCPT TO); repeat for several.
    #[arg(long = "to", value_name = "ADDR", required = true)]
    to: Vec<String>,
    /// Evaluate as if the client had authenticated.
    #[arg(long)]
    authenticated: bool,
    /// Evaluate as if the message had arrived through this inbound connector.
    #[arg(long, value_name = "NAME")]
    connector: Option<String>,
    /// Evaluate as if the sender checks had given these results (any one given makes the
    /// message a checked one; the others are "none"): pass, fail, softfail, neutral, none,
    /// temperror, permerror.
    #[arg(long, value_name = "RESULT", value_parser = auth_result)]
    spf: Option<AuthResult>,
    #[arg(long, value_name = "RESULT", value_parser = auth_result)]
    dkim: Option<AuthResult>,
    #[arg(long, value_name = "RESULT", value_parser = auth_result)]
    dmarc: Option<AuthResult>,
}

fn auth_result(text: &str) -> Result<AuthResult, String> {
    AuthResult::parse(text).ok_or_else(|| {
        let all: Vec<&str> = AuthResult::ALL.iter().map(|r| r.as_str()).collect();
        format!("expected one of {}", all.join(", "))
    })
}

impl TestArgs {
    /// The sender checks' outcome the options describe, if any was given.
    fn sender_auth(&self) -> Option<AuthOutcome> {
        if self.spf.is_none() && self.dkim.is_none() && self.dmarc.is_none() {
            return None;
        }
        let or_none = |r: Option<AuthResult>| r.unwrap_or(AuthResult::None);
        Some(AuthOutcome {
            spf: or_none(self.spf),
            dkim: or_none(self.dkim),
            arc: AuthResult::None,
            dmarc: or_none(self.dmarc),
            from_domain: String::new(),
            header: String::new(),
            disposition: Disposition::Accept,
        })
    }
}

pub fn run(args: RulesArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        RulesCommand::Check { config } => check(&config),
        RulesCommand::Test(args) => test(&args),
    }
}

fn check(args: &ConfigArgs) -> anyhow::Result<ExitCode> {
    let config = match args.load() {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    out!("{}", heading(&config));
    for rule in config.rules.rules() {
        out!("{}", describe(rule));
    }
    Ok(ExitCode::SUCCESS)
}

fn heading(config: &Config) -> String {
    match &config.rules_dir {
        Some(dir) => format!("{}: {} rule(s)\n", dir.display(), config.rules.len()),
        None => format!(
            "{}: no [rules] dir configured, no transport rules\n",
            config.path.display()
        ),
    }
}

/// One rule, as a short block: heading, description, conditions, exceptions, actions.
fn describe(rule: &Rule) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "\n{:>4}  {}  ({}",
        rule.priority,
        rule.name,
        rule.file_name()
    );
    if !rule.enabled {
        out.push_str(", disabled");
    }
    out.push_str(")\n");
    if let Some(d) = &rule.description {
        let _ = writeln!(out, "      # {d}");
    }
    if rule.conditions.is_empty() {
        out.push_str("      when    (every message)\n");
    }
    for c in &rule.conditions {
        let _ = writeln!(out, "      when    {c}");
    }
    for e in &rule.exceptions {
        let _ = writeln!(out, "      unless  {e}");
    }
    for a in &rule.actions {
        let _ = writeln!(out, "      do      {a}");
    }
    if rule.stop {
        out.push_str("      then    stop (no later rule for these recipients)\n");
    }
    out
}

fn test(args: &TestArgs) -> anyhow::Result<ExitCode> {
    let config = match args.config.load() {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let message =
        std::fs::read(&args.eml).with_context(|| format!("cannot read {}", args.eml.display()))?;
    let checked = args.sender_auth();
    let facts = MessageFacts {
        mail_from: &args.from,
        recipients: &args.to,
        message: &message,
        size: message.len() as u64,
        local_domains: &config.local_domains,
        authenticated: args.authenticated,
        inbound_connector: args.connector.as_deref(),
        sender_auth: checked.as_ref(),
    };
    let explanation = explain(&config.rules, &facts);
    let evaluation = evaluate(&config.rules, &facts);
    outln!(
        "message {}: {} bytes, from <{}>, {}, {}",
        args.eml.display(),
        message.len(),
        args.from,
        if args.authenticated {
            "authenticated"
        } else {
            "not authenticated"
        },
        match &args.connector {
            Some(c) => format!("inbound connector {c}"),
            None => "no inbound connector".to_string(),
        }
    );
    out!("{}", heading(&config));
    outln!();
    out!("{explanation}");
    outln!();
    out!("{}", outcome(&evaluation));
    Ok(ExitCode::SUCCESS)
}

/// What would happen, per group of recipients sharing the same actions.
fn outcome(evaluation: &Evaluation) -> String {
    let mut out = String::new();
    if evaluation.matched.is_empty() {
        out.push_str("matched rules: none\n");
    } else {
        let _ = writeln!(out, "matched rules: {}", evaluation.matched.join(", "));
    }
    out.push_str("would do (nothing was sent):\n");
    for group in &evaluation.groups {
        let _ = writeln!(out, "  {}:", group.recipients.join(", "));
        if group.actions.is_empty() {
            out.push_str("    deliver unchanged\n");
        }
        for applied in &group.actions {
            let _ = writeln!(out, "    {}   [rule {}]", applied.action, applied.rule);
        }
    }
    out
}

//! `sealpost tls-report`: the TLS-RPT (RFC 8460) sessions not reported yet, and sending their
//! reports now rather than at the end of the day.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::ConfigArgs;
use crate::report::tlsrpt::build::{self, Pending};
use crate::report::tlsrpt::send::{submitter, Outcome, Sender};

#[derive(Args, Debug)]
pub struct TlsReportArgs {
    #[command(subcommand)]
    command: TlsReportCommand,
}

#[derive(Subcommand, Debug)]
enum TlsReportCommand {
    /// Show the sessions not reported yet, per recipient domain and policy (DANE `tlsa`,
    /// MTA-STS `sts`, `no-policy-found`): successes, and failures by result type and MX host.
    Show {
        #[command(flatten)]
        config: ConfigArgs,
        /// Each domain's report as it would be sent (RFC 8460 JSON), one per line.
        #[arg(long)]
        json: bool,
    },
    /// Send the reports of every session until now (a running server sends them once a day),
    /// to the `mailto:` addresses of each domain's `_smtp._tls` record. Reports are queued;
    /// a running server delivers them. Exit status 1 when a domain's report had to be kept
    /// for later (DNS or queue failure).
    Send {
        #[command(flatten)]
        config: ConfigArgs,
    },
}

pub fn run(args: TlsReportArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        TlsReportCommand::Show { config, json } => {
            let config = match config.load() {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            // This node's files, or the sessions of every node sharing the database.
            let journal = crate::app::open_tls_journal(&config)?;
            let until = chrono::Utc::now().timestamp() + 1;
            let pending = journal.pending(until)?;
            if json {
                let submitter = submitter(&config);
                for p in pending.values() {
                    let report = build::report(p, &submitter, "pending");
                    outln!("{}", build::json(&report));
                }
            } else if pending.is_empty() {
                outln!("No TLS-RPT sessions waiting to be reported.");
            } else {
                for p in pending.values() {
                    out!("{}", describe(p));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        TlsReportCommand::Send { config } => {
            let config = match config.load_existing(super::DataPart::Queue) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let queue = match super::queue::open_loaded(&config) {
                Ok(q) => q,
                Err(code) => return Ok(code),
            };
            let journal = crate::app::open_tls_journal(&config)?;
            let resolver = crate::dns::Resolver::new(&config.nameservers).ok();
            // A margin: a session a running server (any node) is recording right now goes in
            // the next report rather than being missed by this one.
            let until = chrono::Utc::now().timestamp() - journal.lag();
            let sender = Sender {
                journal,
                submitter: submitter(&config),
                queue,
                resolver: resolver.as_ref(),
            };
            let outcomes = super::runtime()?.block_on(sender.run(until, false))?;
            let mut kept = false;
            if outcomes.is_empty() {
                outln!("No TLS-RPT sessions waiting to be reported.");
            }
            for o in outcomes {
                match o {
                    Outcome::Sent {
                        domain,
                        report_id,
                        queue_id,
                        to,
                        sessions: (ok, failed),
                    } => outln!(
                        "{domain}: report {report_id} queued as {queue_id} to {} ({ok} successful, {failed} failed sessions)",
                        to.join(", ")
                    ),
                    Outcome::NotWanted { domain, why } => {
                        outln!("{domain}: no report ({why})")
                    }
                    Outcome::Kept { domain, why } => {
                        kept = true;
                        outln!("{domain}: kept for later ({why})")
                    }
                }
            }
            Ok(if kept {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

/// One domain's pending sessions, as text.
fn describe(p: &Pending) -> String {
    let range = |t: i64| {
        chrono::DateTime::from_timestamp(t, 0)
            .map(|d| d.format("%Y-%m-%d %H:%M:%SZ").to_string())
            .unwrap_or_default()
    };
    let (ok, failed) = p.sessions();
    let mut out = format!(
        "{} (from {} to {}): {ok} successful, {failed} failed sessions\n",
        p.domain,
        range(p.start),
        range(p.end)
    );
    for (policy, counts) in &p.policies {
        let mx = if policy.mx.is_empty() {
            String::new()
        } else {
            format!(" [{}]", policy.mx.join(", "))
        };
        out.push_str(&format!(
            "  {}{mx}: {} successful, {} failed\n",
            policy.kind.as_str(),
            counts.success,
            counts.failed()
        ));
        for (f, n) in &counts.failures {
            let at = match (&f.mx, f.ip) {
                (Some(mx), Some(ip)) => format!(" at {mx} [{ip}]"),
                (Some(mx), None) => format!(" at {mx}"),
                _ => String::new(),
            };
            out.push_str(&format!("    {n} × {}{at}", f.result));
            if let Some(info) = &f.info {
                out.push_str(&format!(": {info}"));
            }
            out.push('\n');
        }
    }
    out
}

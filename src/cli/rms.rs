//! `sealpost rms`: revoke protected messages at the licensing service (and take it back), list
//! what is revoked, and show the service's access log. The service of the same data directory sees a change from its next
//! request on, without a restart; use licenses already handed out keep working offline until
//! their valid-until, as in Azure Information Protection.

use std::process::ExitCode;
use std::time::SystemTime;

use clap::{Args, Subcommand};

use super::ConfigArgs;
use crate::crypto::rms::format_expiry;
use crate::licensing::revocations::RevocationStore;

#[derive(Args, Debug)]
pub struct RmsArgs {
    #[command(subcommand)]
    command: RmsCommand,
}

#[derive(Subcommand, Debug)]
enum RmsCommand {
    /// Revoke a protected message: the licensing service refuses every use license for it
    /// from now on ("revoked on ..."). `--unrevoke` takes a revocation back.
    Revoke {
        #[command(flatten)]
        config: ConfigArgs,
        /// The message's Message-ID, as in its header (angle brackets included).
        #[arg(long, value_name = "ID")]
        message_id: String,
        /// Take the revocation back.
        #[arg(long)]
        unrevoke: bool,
    },
    /// List the revoked messages and since when.
    Revocations {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Show the licensing service's access log: every request, granted or refused, with the
    /// reader, the message (its Message-ID hashed), the client and the reason. The log is part
    /// of the store's audit log: `sealpost store audit verify` detects an edit.
    AccessLog {
        #[command(flatten)]
        config: ConfigArgs,
        /// Only the requests about this message (its Message-ID, as in its header).
        #[arg(long, value_name = "ID")]
        message_id: Option<String>,
        /// One JSON object per request instead of the table.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: RmsArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        RmsCommand::Revoke {
            config,
            message_id,
            unrevoke,
        } => {
            let config = match config.load() {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let id = message_id.trim();
            if id.is_empty() || id.contains(char::is_whitespace) {
                eprintln!("sealpost: --message-id: not a Message-ID: {message_id:?}");
                return Ok(ExitCode::from(2));
            }
            let store = RevocationStore::open(&config.data_dir);
            if unrevoke {
                if store.unrevoke(id)? {
                    outln!("{id}: revocation taken back");
                } else {
                    outln!("{id}: was not revoked");
                }
            } else {
                let now = SystemTime::now();
                store.revoke(id, now)?;
                outln!("{id}: revoked on {}", format_expiry(now));
            }
            Ok(ExitCode::SUCCESS)
        }
        RmsCommand::AccessLog {
            config,
            message_id,
            json,
        } => {
            let config = match config.load() {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            access_log(&config, message_id.as_deref(), json)
        }
        RmsCommand::Revocations { config } => {
            let config = match config.load() {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let list = RevocationStore::open(&config.data_dir).current();
            for (id, at) in list.messages() {
                outln!("{}  {id}", format_expiry(at));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Prints the `rms-access` records of the audit log, oldest first.
fn access_log(
    config: &crate::config::Config,
    message_id: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    use crate::licensing::access::{message_hash, Access, EVENT};
    use crate::store::audit::AuditRecord;
    let log = crate::store::backend::open_audit(config)?;
    let where_ = log.location();
    let wanted = message_id.map(message_hash);
    for (n, line) in log.lines()? {
        let record: AuditRecord = serde_json::from_str(&line).map_err(|e| {
            anyhow::anyhow!(
                "{where_}: line {n}: not an audit record ({e}); `sealpost store audit verify` checks the log",
            )
        })?;
        if record.event != EVENT {
            continue;
        }
        let Ok(access) = serde_json::from_str::<Access>(&record.reason) else {
            anyhow::bail!("{where_}: line {n}: not an access record");
        };
        if wanted.as_ref().is_some_and(|w| *w != access.message) {
            continue;
        }
        if json {
            let mut object = serde_json::to_value(&access)?;
            object["time"] = record.time.into();
            outln!("{object}");
        } else {
            let who = if access.principal.is_empty() {
                "-"
            } else {
                &access.principal
            };
            let code = if access.code.is_empty() {
                ""
            } else {
                &access.code
            };
            outln!(
                "{}  {:<7} {:<15} {who}  from {}  message {}  {}",
                record.time,
                access.outcome,
                code,
                access.client,
                access.message.get(..16).unwrap_or("-"),
                access.detail
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

//! `sealpost rms`: revoke protected messages at the licensing service (and take it back), and
//! list what is revoked. The service of the same data directory sees a change from its next
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

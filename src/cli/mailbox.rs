//! `sealpost mailbox`: list and read the messages of a local mailbox.

use std::io::Write;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::ConfigArgs;
use crate::store::{MailStore, PlainMaildirStore};

#[derive(Args, Debug)]
pub struct MailboxArgs {
    #[command(subcommand)]
    command: MailboxCommand,
}

#[derive(Subcommand, Debug)]
enum MailboxCommand {
    /// One line per message: id, date, from, subject, size.
    List {
        #[command(flatten)]
        config: ConfigArgs,
        /// The mailbox address, e.g. bob@fabrikam.test.
        #[arg(long, value_name = "ADDR")]
        mailbox: String,
    },
    /// Print one message (RFC 5322, exactly as stored) on standard output.
    Read {
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long, value_name = "ADDR")]
        mailbox: String,
        /// The message id from `mailbox list`.
        #[arg(long, value_name = "ID")]
        id: String,
    },
}

fn open(config: &ConfigArgs, mailbox: &str) -> Result<PlainMaildirStore, ExitCode> {
    let config = config.load()?;
    if !config.is_local_mailbox(mailbox) {
        eprintln!(
            "sealpost: {mailbox} is not a mailbox of {}",
            config.path.display()
        );
        return Err(ExitCode::from(2));
    }
    Ok(PlainMaildirStore::new(&config.data_dir))
}

pub fn run(args: MailboxArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        MailboxCommand::List { config, mailbox } => {
            let store = match open(&config, &mailbox) {
                Ok(s) => s,
                Err(code) => return Ok(code),
            };
            for m in store.list(&mailbox)? {
                println!(
                    "{}  {}  {}  {}  {}",
                    m.id, m.date, m.from, m.subject, m.size
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        MailboxCommand::Read {
            config,
            mailbox,
            id,
        } => {
            let store = match open(&config, &mailbox) {
                Ok(s) => s,
                Err(code) => return Ok(code),
            };
            let bytes = store.read(&mailbox, &id)?;
            std::io::stdout().write_all(&bytes)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

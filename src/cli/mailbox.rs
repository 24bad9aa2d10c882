//! `sealpost mailbox`: list, read and export the messages of a local mailbox (through the
//! encrypted store, decrypting under the mailbox's policy).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::store::Bar;
use super::ConfigArgs;
use crate::store::ops;
use crate::store::{EncryptedStore, MailStore};

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
        /// Print a JSON array (id, date, from, subject, size) instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Print one message (RFC 5322, exactly as received) on standard output.
    ///
    /// Fails with an integrity error when the stored message was altered, and names the policy
    /// and the keys tried when its keys are unavailable.
    Read {
        #[command(flatten)]
        config: ConfigArgs,
        /// The mailbox address, e.g. bob@fabrikam.test.
        #[arg(long, value_name = "ADDR")]
        mailbox: String,
        /// The message id from `mailbox list`.
        #[arg(long, value_name = "ID")]
        id: String,
    },
    /// Write every message of a mailbox, decrypted, into a standard Maildir (tmp/ new/ cur/)
    /// that mutt or any Maildir reader opens. Messages that fail to read are reported.
    Export {
        #[command(flatten)]
        config: ConfigArgs,
        /// The mailbox address, e.g. bob@fabrikam.test.
        #[arg(long, value_name = "ADDR")]
        mailbox: String,
        /// The Maildir to write (created if missing).
        #[arg(long, value_name = "DIR")]
        maildir: PathBuf,
    },
}

fn open(config: &ConfigArgs, mailbox: &str, actor: &str) -> Result<EncryptedStore, ExitCode> {
    let config = config.load_existing(super::DataPart::Store)?;
    if !config.is_local_mailbox(mailbox) {
        eprintln!(
            "sealpost: {mailbox} is not a mailbox of {}",
            config.path.display()
        );
        return Err(ExitCode::from(2));
    }
    EncryptedStore::open(&config, actor).map_err(|e| {
        eprintln!("sealpost: {e}");
        ExitCode::FAILURE
    })
}

pub fn run(args: MailboxArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        MailboxCommand::List {
            config,
            mailbox,
            json,
        } => {
            let store = match open(&config, &mailbox, "mailbox list") {
                Ok(s) => s,
                Err(code) => return Ok(code),
            };
            let list = store.list(&mailbox)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(ExitCode::SUCCESS);
            }
            for m in list {
                outln!(
                    "{}  {}  {}  {}  {}",
                    m.id,
                    m.date,
                    m.from,
                    m.subject,
                    m.size
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        MailboxCommand::Read {
            config,
            mailbox,
            id,
        } => {
            let store = match open(&config, &mailbox, "mailbox read") {
                Ok(s) => s,
                Err(code) => return Ok(code),
            };
            let bytes = store.read(&mailbox, &id)?;
            std::io::stdout().write_all(&bytes)?;
            Ok(ExitCode::SUCCESS)
        }
        MailboxCommand::Export {
            config,
            mailbox,
            maildir,
        } => {
            let store = match open(&config, &mailbox, "mailbox export") {
                Ok(s) => s,
                Err(code) => return Ok(code),
            };
            let done = ops::export(&store, &mailbox, &maildir, &Bar::new())?;
            for p in &done.problems {
                eprintln!("sealpost: not exported: {p}");
            }
            outln!(
                "{} message(s) of {mailbox} written to {} ({} already there)",
                done.written,
                maildir.display(),
                done.present
            );
            Ok(if done.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

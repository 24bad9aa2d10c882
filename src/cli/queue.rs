//! `sealpost queue`: list, flush, delete, hold and release queued messages (mailq,
//! postqueue -f, postsuper -d, -h and -H).

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::ConfigArgs;
use crate::queue::{QueueEntry, QueueError, QueueState, QueueStore, RecipientStatus};

#[derive(Args, Debug)]
pub struct QueueArgs {
    #[command(subcommand)]
    command: QueueCommand,
}

#[derive(Subcommand, Debug)]
enum QueueCommand {
    /// List queued messages with their recipients and the last error of each (like mailq).
    List {
        #[command(flatten)]
        config: ConfigArgs,
        /// One JSON object per message instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Make every deferred message due now (like postqueue -f); a running server delivers them
    /// within a second.
    Flush {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Delete one message from the queue without delivering it (like postsuper -d).
    Delete {
        #[command(flatten)]
        config: ConfigArgs,
        /// The queue id, as shown by `queue list`.
        id: String,
    },
    /// Put waiting messages on hold (like postsuper -h): a held message stays in the queue and
    /// is never delivered, by any node, until released. A message being delivered cannot be
    /// held until its attempt ends.
    Hold {
        #[command(flatten)]
        config: ConfigArgs,
        /// Queue ids, as shown by `queue list`; ALL holds every waiting message.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Release held messages (like postsuper -H): each becomes due at once, a running server
    /// delivers it within a couple of seconds, and its queue lifetime starts again.
    Release {
        #[command(flatten)]
        config: ConfigArgs,
        /// Queue ids, as shown by `queue list`; ALL releases every held message.
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

/// The queue with the service key, as the server opens it (listing, flush and delete never
/// decrypt, but anything this process writes is sealed like the server's files).
fn open(config: &ConfigArgs) -> Result<std::sync::Arc<dyn QueueStore>, ExitCode> {
    open_loaded(&config.load_existing(super::DataPart::Queue)?)
}

/// The queue of a configuration already loaded, as [`open`] opens it.
pub(super) fn open_loaded(
    config: &crate::config::Config,
) -> Result<std::sync::Arc<dyn QueueStore>, ExitCode> {
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("sealpost: {e}");
        ExitCode::FAILURE
    };
    let key = crate::app::service_key(config).map_err(|e| fail(&format!("{e:#}")))?;
    match crate::app::open_queue(config, key) {
        Ok(queue) => Ok(queue),
        Err(e) => Err(fail(&format!("{e:#}"))),
    }
}

pub fn run(args: QueueArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        QueueCommand::List { config, json } => {
            let queue = match open(&config) {
                Ok(q) => q,
                Err(code) => return Ok(code),
            };
            let listing = queue.scan()?;
            if json {
                for e in &listing.entries {
                    let value = serde_json::json!({ "state": e.state.as_str(), "size": e.size, "envelope": e.envelope });
                    outln!("{value}");
                }
            } else {
                out!("{}", format_list(&listing.entries));
            }
            for u in &listing.unreadable {
                eprintln!("sealpost: {} ({}): {}", u.id, u.state.as_str(), u.error);
            }
            Ok(ExitCode::SUCCESS)
        }
        QueueCommand::Flush { config } => {
            let queue = match open(&config) {
                Ok(q) => q,
                Err(code) => return Ok(code),
            };
            let n = queue.flush()?;
            outln!("{n} deferred message(s) made due");
            Ok(ExitCode::SUCCESS)
        }
        QueueCommand::Delete { config, id } => {
            let queue = match open(&config) {
                Ok(q) => q,
                Err(code) => return Ok(code),
            };
            if queue.delete(&id)? {
                outln!("{id}: deleted");
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("sealpost: {id}: no such message in the queue");
                Ok(ExitCode::FAILURE)
            }
        }
        QueueCommand::Hold { config, ids } => {
            let queue = match open(&config) {
                Ok(q) => q,
                Err(code) => return Ok(code),
            };
            let change = Change {
                done: "held",
                missing: "no waiting message with this id in the queue",
                from: &[QueueState::Incoming, QueueState::Deferred],
                apply: &|id| queue.hold(id),
            };
            change.run(&*queue, &ids)
        }
        QueueCommand::Release { config, ids } => {
            let queue = match open(&config) {
                Ok(q) => q,
                Err(code) => return Ok(code),
            };
            let change = Change {
                done: "released",
                missing: "no held message with this id in the queue",
                from: &[QueueState::Hold],
                apply: &|id| queue.release(id),
            };
            change.run(&*queue, &ids)
        }
    }
}

/// `queue hold` or `queue release` of the ids named (or, for `ALL`, of every message in the
/// states `from`): one line per message changed, one error per id that could not be.
struct Change<'a> {
    done: &'static str,
    missing: &'static str,
    from: &'a [QueueState],
    apply: &'a dyn Fn(&str) -> Result<bool, QueueError>,
}

impl Change<'_> {
    fn run(&self, queue: &dyn QueueStore, ids: &[String]) -> anyhow::Result<ExitCode> {
        if ids.iter().any(|id| id == "ALL") {
            // Each message as listed; one that moved on meanwhile (claimed, deleted) is skipped.
            let mut n = 0;
            for entry in queue.list()? {
                let id = &entry.envelope.id;
                if self.from.contains(&entry.state) && matches!((self.apply)(id), Ok(true)) {
                    outln!("{id}: {}", self.done);
                    n += 1;
                }
            }
            outln!("{n} message(s) {}", self.done);
            return Ok(ExitCode::SUCCESS);
        }
        let mut code = ExitCode::SUCCESS;
        for id in ids {
            match (self.apply)(id) {
                Ok(true) => outln!("{id}: {}", self.done),
                Ok(false) => {
                    eprintln!("sealpost: {id}: {}", self.missing);
                    code = ExitCode::FAILURE;
                }
                Err(e) => {
                    eprintln!("sealpost: {id}: {e}");
                    code = ExitCode::FAILURE;
                }
            }
        }
        Ok(code)
    }
}

/// The mailq-style table: id, state, size, arrival, sender; then each recipient not yet delivered,
/// with the reason of its last failure in parentheses.
pub fn format_list(entries: &[QueueEntry]) -> String {
    if entries.is_empty() {
        return "Mail queue is empty\n".to_string();
    }
    let mut out = String::from(
        "-Queue ID-------- -State--- --Size-- ----Arrival Time---- -Sender/Recipient-------\n",
    );
    let mut total = 0u64;
    for e in entries {
        total += e.size;
        let arrival = chrono::DateTime::from_timestamp(e.envelope.received_at, 0)
            .map(|t| t.format("%a %b %e %H:%M:%S").to_string())
            .unwrap_or_default();
        let sender = if e.envelope.mail_from.is_empty() {
            "<>"
        } else {
            &e.envelope.mail_from
        };
        out.push_str(&format!(
            "{:<17} {:<9} {:>8} {:<20} {}\n",
            e.envelope.id,
            e.state.as_str(),
            e.size,
            arrival,
            sender
        ));
        for r in &e.envelope.recipients {
            let status = match r.status {
                RecipientStatus::Pending => "",
                RecipientStatus::Delivered => " [delivered]",
                RecipientStatus::Failed => " [failed]",
            };
            if let Some(reason) = &r.last_reply {
                if r.status != RecipientStatus::Delivered {
                    out.push_str(&format!("{:58}({reason})\n", ""));
                }
            }
            out.push_str(&format!("{:58}{}{status}\n", "", r.address));
        }
        out.push('\n');
    }
    out.push_str(&format!(
        "-- {} Kbytes in {} Request(s).\n",
        total.div_ceil(1024),
        entries.len()
    ));
    out
}

//! `sealpost storage migrate`: moves a node's queue from its spool into the PostgreSQL database
//! of its `[storage]` section, with its recent transmission fingerprints, its TLS-RPT sessions
//! not reported yet and its mailbox store.

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Subcommand, ValueEnum};

use super::ConfigArgs;
use crate::config::StorageSettings;
use crate::pg::Database;
use crate::queue::{PgQueue, Spool};

#[derive(Args, Debug)]
pub struct StorageArgs {
    #[command(subcommand)]
    command: StorageCommand,
}

#[derive(Subcommand, Debug)]
enum StorageCommand {
    /// Move this node's queue from its spool under data_dir into the database of its [storage]
    /// section (backend = "postgres").
    ///
    /// Each queue file is copied as it is (sealed: nothing is decrypted on the way) and removed
    /// from the spool once the row holding it has committed; waiting and active messages arrive
    /// as incoming, deferred ones keep their next attempt. The fingerprints of transmissions of
    /// the last 24 hours and the TLS-RPT sessions not reported yet (with how far each domain
    /// was reported) go too, and the mailbox store. Stop the node first. Running it again
    /// copies what is left; nothing already in the database is copied twice.
    Migrate {
        #[command(flatten)]
        config: ConfigArgs,
        /// Where the data is now.
        #[arg(long, value_enum, default_value = "local")]
        from: Source,
        /// Where it goes.
        #[arg(long, value_enum, default_value = "postgres")]
        to: Target,
        /// Leave the spool files in place after copying them.
        #[arg(long)]
        keep: bool,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Source {
    /// The spool under data_dir.
    Local,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Target {
    /// The database of the [storage] section.
    Postgres,
}

pub fn run(args: StorageArgs) -> anyhow::Result<ExitCode> {
    let StorageCommand::Migrate {
        config,
        keep,
        from,
        to,
        ..
    } = args.command;
    let (Source::Local, Target::Postgres) = (from, to);
    let cfg = match config.load() {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let StorageSettings::Postgres(pg) = &cfg.storage else {
        eprintln!(
            "sealpost: {}: storage.backend: is \"embedded\"; set backend = \"postgres\" and its \
             url first: that is where the queue goes",
            cfg.path.display()
        );
        return Ok(ExitCode::from(2));
    };
    let spool_dir = cfg.data_dir.join("queue");
    if !spool_dir.is_dir() {
        eprintln!(
            "sealpost: {} holds no queue ({} is missing): nothing to migrate",
            cfg.data_dir.display(),
            spool_dir.display()
        );
        return Ok(ExitCode::from(2));
    }
    let key = crate::app::service_key(&cfg)?;
    let spool = Spool::open(&cfg.data_dir, key.clone())?;
    let service = key.clone();
    let db = Database::open(pg).map_err(|e| {
        anyhow::anyhow!(
            "{}: [storage]: cannot use the database {}: {e}",
            cfg.path.display(),
            pg.location()
        )
    })?;
    let node = pg
        .node_id
        .clone()
        .unwrap_or_else(|| "storage-migrate".into());
    let staging = Spool::open(&cfg.data_dir, key.clone())?;
    let queue = PgQueue::new(db.clone(), staging, key, &node, pg.lease);
    let done = queue.import_spool(&spool, keep)?;
    println!(
        "queue: {} messages copied to {} ({} incoming, {} deferred, {} held){}",
        done.incoming + done.deferred + done.held,
        pg.location(),
        done.incoming,
        done.deferred,
        done.held,
        if keep {
            "; the spool files were kept"
        } else {
            "; their spool files were removed"
        }
    );
    if done.present > 0 {
        println!(
            "queue: {} messages were in the database already (left in the spool)",
            done.present
        );
    }
    for u in &done.unreadable {
        println!("queue: not copied, unreadable: {u}");
    }
    let transmissions_ok = copy_transmissions(&spool, &queue, pg);
    // The sessions go under the id the node will record its own under once it runs here.
    let reports_ok = match crate::store::backend::node_id(&cfg, pg) {
        Ok(id) => copy_tls_reports(&cfg, pg, &db, &id),
        Err(e) => {
            println!("tls-rpt: not copied: {e}");
            false
        }
    };
    let mailboxes_ok = copy_mailboxes(&cfg, pg, &db);
    let audit_ok = copy_audit(&cfg, pg, &db, &service);
    Ok(
        if done.unreadable.is_empty() && transmissions_ok && reports_ok && mailboxes_ok && audit_ok
        {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        },
    )
}

/// Copies the fingerprints of the transmissions accepted in the last 24 hours from the spool's
/// `transmissions.log` (those of messages that left the queue; the queued ones came with their
/// messages), so that a client sending one again after the move is still recognised; says what
/// it did, false when it failed.
fn copy_transmissions(spool: &Spool, queue: &PgQueue, pg: &crate::pg::PgSettings) -> bool {
    use crate::queue::schedule::{Clock, SystemClock};
    let copied = crate::queue::retransmit::recent_in_log(spool, SystemClock.now())
        .and_then(|recent| queue.transmissions().import(&recent));
    match copied {
        Ok((copied, present)) => {
            println!(
                "transmissions: {copied} fingerprint(s) of the last 24 hours copied to {} ({present} \
                 there already)",
                pg.location()
            );
            true
        }
        Err(e) => {
            println!("transmissions: not copied: {e}");
            false
        }
    }
}

/// Copies the TLS-RPT sessions under `<data_dir>/tls-rpt` not reported yet, and how far each
/// domain was reported; says what it did, false when it failed. The files are left as they were.
fn copy_tls_reports(
    cfg: &crate::config::Config,
    pg: &crate::pg::PgSettings,
    db: &Arc<Database>,
    node: &str,
) -> bool {
    let dir = cfg.data_dir.join(crate::report::tlsrpt::journal::DIR);
    if !dir.is_dir() {
        println!("tls-rpt: no sessions under {}", dir.display());
        return true;
    }
    match crate::report::tlsrpt::pg::import_files(db, &dir, node) {
        Ok(done) => {
            println!(
                "tls-rpt: {} session(s) not reported yet copied to {} ({} reported or there \
                 already), with the report state of {} domain(s); the files under {} were left \
                 as they were",
                done.copied,
                pg.location(),
                done.skipped,
                done.domains,
                dir.display()
            );
            if done.unreadable > 0 {
                println!(
                    "tls-rpt: {} journal line(s) could not be read and were not copied",
                    done.unreadable
                );
            }
            true
        }
        Err(e) => {
            println!("tls-rpt: not copied: {e:#}");
            false
        }
    }
}

/// Copies the mailbox store under `<data_dir>/store` into the database (ciphertext as it is);
/// says what it did, false when it failed.
fn copy_mailboxes(
    cfg: &crate::config::Config,
    pg: &crate::pg::PgSettings,
    db: &Arc<Database>,
) -> bool {
    let dir = cfg.data_dir.join("store");
    if !dir.join("index.sqlite").exists() {
        println!("mailboxes: none under {}", dir.display());
        return true;
    }
    let copied = crate::store::backend::node_id(cfg, pg)
        .and_then(|node| crate::store::backend::pg_copy::copy_to_postgres(&dir, db, &node));
    match copied {
        Ok(c) => {
            println!(
                "mailboxes: {} message(s) of {} mailbox(es) copied to {} ({} mailbox key(s), {} \
                 policy key generation(s)); the store under {} was left as it was",
                c.messages,
                c.mailboxes,
                pg.location(),
                c.mailbox_keys,
                c.policy_keys,
                dir.display()
            );
            true
        }
        // Copied by an earlier run, or another node's store: left as they are, said so.
        Err(e) if e.index_kind() == Some(crate::store::IndexErrorKind::Conflict) => {
            println!("mailboxes: not copied: {e}");
            true
        }
        Err(e) => {
            println!("mailboxes: not copied: {e}");
            false
        }
    }
}

/// Starts the database's audit chain with this node's audit log file (re-MACed, the file left as
/// it is) when the chain is empty; says what it did, false when it failed.
fn copy_audit(
    cfg: &crate::config::Config,
    pg: &crate::pg::PgSettings,
    db: &Arc<Database>,
    key: &crate::crypto::keyfile::ServiceKey,
) -> bool {
    use crate::store::backend::pg_copy::{copy_audit_log, CopiedAudit};
    let keystore = &cfg.store.keystore_dir;
    let copied = crate::store::backend::node_id(cfg, pg).and_then(|node| {
        let chain = crate::store::audit::pg::PgLog::new(db.clone(), &node, key, keystore);
        copy_audit_log(&cfg.data_dir.join("store"), keystore, &chain)
    });
    let file = keystore.join("audit.log");
    match copied {
        Ok(CopiedAudit::NoFile) => {
            println!("audit: no audit log at {}", file.display());
            true
        }
        Ok(CopiedAudit::Copied { lines }) => {
            println!(
                "audit: {lines} line(s) of {} copied into the audit chain in {} (the file was \
                 left as it was)",
                file.display(),
                pg.location()
            );
            true
        }
        // Another node's lines, or an earlier run's: this node's file stays its own record,
        // which `store audit verify` still checks against its anchor.
        Err(e) if e.index_kind() == Some(crate::store::IndexErrorKind::Conflict) => {
            println!(
                "audit: not copied: {e}; {} stays this node's record of what came before",
                file.display()
            );
            true
        }
        Err(e) => {
            println!("audit: not copied: {e}");
            false
        }
    }
}

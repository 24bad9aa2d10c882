//! `sealpost storage migrate`: moves a node's queue from its spool into the PostgreSQL database
//! of its `[storage]` section.

use std::process::ExitCode;

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
    /// as incoming, deferred ones keep their next attempt. Stop the node first. Running it again
    /// copies what is left; a message already in the database is not copied twice.
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
    let queue = PgQueue::new(db, staging, key, &node, pg.lease);
    let done = queue.import_spool(&spool, keep)?;
    println!(
        "queue: {} messages copied to {} ({} incoming, {} deferred){}",
        done.incoming + done.deferred,
        pg.location(),
        done.incoming,
        done.deferred,
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
    println!(
        "mailboxes: not moved (the mailbox store under {} is not copied; with backend = \"postgres\" the mailboxes in the database are read instead)",
        cfg.data_dir.join("store").display()
    );
    Ok(if done.unreadable.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

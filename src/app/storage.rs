//! Opens the queue and the TLS-RPT journal the configuration names (`[storage] backend`): the
//! spool and journal files under `data_dir`, or PostgreSQL. The one place that looks at the
//! backend; everything else sees a `QueueStore` and a `SessionJournal`.

use std::sync::Arc;

use anyhow::Context;

use crate::config::{Config, StorageSettings};
use crate::crypto::keyfile::ServiceKey;
use crate::pg::{node_id_file, Database};
use crate::queue::retransmit::SharedTransmissions;
use crate::queue::{PgQueue, QueueStore, Spool};
use crate::report::tlsrpt::pg::PgJournal;
use crate::report::tlsrpt::{Recorder, SessionJournal};

/// The queue of `config`, sealing with `key`. For PostgreSQL this connects, applies the schema
/// migrations, and refuses a database whose schema is newer than this program knows.
pub fn open_queue(config: &Config, key: Arc<ServiceKey>) -> anyhow::Result<Arc<dyn QueueStore>> {
    let spool = Spool::open(&config.data_dir, key.clone())?;
    match &config.storage {
        StorageSettings::Embedded => Ok(Arc::new(spool)),
        StorageSettings::Postgres(pg) => {
            let node = node_id(config, pg)?;
            let db = open_database(config, pg)?;
            Ok(Arc::new(PgQueue::new(db, spool, key, &node, pg.lease)))
        }
    }
}

/// A queue, and where the fingerprints of its accepted transmissions are shared by the nodes
/// (`None` for a spool, whose fingerprints are in its own files).
pub type SharedQueue = (Arc<dyn QueueStore>, Option<Arc<dyn SharedTransmissions>>);

/// What a serving node opens: the queue as [`open_queue`] does, where its transmissions'
/// fingerprints are shared, and the TLS-RPT journal as [`open_tls_journal`] does, on one
/// connection pool when they are in PostgreSQL.
pub fn open_queue_and_journal(
    config: &Config,
    key: Arc<ServiceKey>,
) -> anyhow::Result<(SharedQueue, Arc<dyn SessionJournal>)> {
    // The spool's tmp/ also stages incoming content for a database queue.
    let spool = Spool::open(&config.data_dir, key.clone())?;
    match &config.storage {
        StorageSettings::Embedded => Ok((
            (Arc::new(spool), None),
            Arc::new(Recorder::new(&config.data_dir)),
        )),
        StorageSettings::Postgres(pg) => {
            let node = node_id(config, pg)?;
            let db = open_database(config, pg)?;
            tracing::info!(database = %pg.location(), node, "queue and TLS-RPT journal in PostgreSQL");
            let journal: Arc<dyn SessionJournal> = Arc::new(PgJournal::new(db.clone(), &node));
            let queue = PgQueue::new(db, spool, key, &node, pg.lease);
            let transmissions: Arc<dyn SharedTransmissions> = Arc::new(queue.transmissions());
            Ok(((Arc::new(queue), Some(transmissions)), journal))
        }
    }
}

/// The TLS-RPT journal of `config`: the files under `<data_dir>/tls-rpt` of this node, or the
/// tables in PostgreSQL that every node shares (connected, its schema migrated).
pub fn open_tls_journal(config: &Config) -> anyhow::Result<Arc<dyn SessionJournal>> {
    match &config.storage {
        StorageSettings::Embedded => Ok(Arc::new(Recorder::new(&config.data_dir))),
        StorageSettings::Postgres(pg) => {
            let node = node_id(config, pg)?;
            let db = open_database(config, pg)?;
            Ok(Arc::new(PgJournal::new(db, &node)))
        }
    }
}

/// This node's id: `[storage] node_id`, or the one kept in `<data_dir>/node-id`.
fn node_id(config: &Config, pg: &crate::pg::PgSettings) -> anyhow::Result<String> {
    match &pg.node_id {
        Some(node) => Ok(node.clone()),
        None => {
            let path = config.data_dir.join("node-id");
            node_id_file(&path).with_context(|| format!("node id file {}", path.display()))
        }
    }
}

fn open_database(config: &Config, pg: &crate::pg::PgSettings) -> anyhow::Result<Arc<Database>> {
    Database::open(pg).with_context(|| {
        format!(
            "{}: [storage]: cannot use the database {}",
            config.path.display(),
            pg.location()
        )
    })
}

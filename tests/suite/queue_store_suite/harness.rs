//! How the suite opens each backend: [`Harness`] opens, reopens, damages and inspects one. The
//! only backend-specific code of the suite lives here.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sealpost::crypto::keyfile::ServiceKey;
use sealpost::pg::Database;
use sealpost::queue::{PgQueue, QueueState, QueueStore, Spool};
use tempfile::TempDir;

use crate::queue_store_suite::pg;

/// The backends this suite runs against.
#[derive(Clone, Copy, Debug)]
pub enum Backend {
    /// The filesystem spool under a temporary directory.
    Spool,
    /// PostgreSQL: a new database in the test binary's cluster (`tests/support/postgres.rs`),
    /// staging under a temporary directory.
    Postgres,
}

/// One queue under test and the storage behind it.
pub struct Harness {
    pub queue: Arc<dyn QueueStore>,
    storage: Storage,
    /// Where staged content goes (for the spool: everything).
    data: TempDir,
    key: Arc<ServiceKey>,
    _keystore: TempDir,
}

enum Storage {
    Spool,
    Postgres {
        cluster: &'static pg::Cluster,
        database: String,
        settings: sealpost::pg::PgSettings,
    },
}

/// The node id of [`Harness::queue`] and of [`Harness::reopen`]; other nodes get other ids.
const NODE: &str = "node-a";

impl Harness {
    /// A new, empty queue that encrypts, as the server opens it; `None` (after saying why) when
    /// the backend's server is not installed.
    pub fn open(backend: Backend) -> Option<Harness> {
        Harness::open_with_lease(backend, Duration::from_secs(60))
    }

    /// Like [`Harness::open`]; a backend with leases gives claims leases of `lease`.
    pub fn open_with_lease(backend: Backend, lease: Duration) -> Option<Harness> {
        let keystore = tempfile::tempdir().unwrap();
        let key = Arc::new(ServiceKey::load_or_create(keystore.path()).unwrap());
        let data = tempfile::tempdir().unwrap();
        let storage = match backend {
            Backend::Spool => Storage::Spool,
            Backend::Postgres => {
                let cluster = pg::shared()?;
                let database = cluster.create_database();
                let mut settings = cluster.settings(&database, &cluster.password_file(data.path()));
                settings.lease = lease;
                Storage::Postgres {
                    cluster,
                    database,
                    settings,
                }
            }
        };
        let mut harness = Harness {
            queue: Arc::new(Spool::open(data.path(), key.clone()).unwrap()),
            storage,
            data,
            key,
            _keystore: keystore,
        };
        harness.queue = harness.node(NODE);
        Some(harness)
    }

    /// Another instance on the same storage: a second process, or this one after a restart
    /// (for a backend with nodes: the same node).
    pub fn reopen(&self) -> Arc<dyn QueueStore> {
        self.node(NODE)
    }

    /// An instance as node `name` (a backend without nodes ignores the name).
    pub fn node(&self, name: &str) -> Arc<dyn QueueStore> {
        let spool = Spool::open(self.data.path(), self.key.clone()).unwrap();
        match &self.storage {
            Storage::Spool => Arc::new(spool),
            Storage::Postgres { settings, .. } => {
                let db = Database::open(settings).unwrap();
                Arc::new(PgQueue::new(
                    db,
                    spool,
                    self.key.clone(),
                    name,
                    settings.lease,
                ))
            }
        }
    }

    /// Alters the stored form of the waiting (incoming) message `id` so that it fails
    /// verification.
    pub fn damage(&self, id: &str) {
        match &self.storage {
            Storage::Spool => {
                let spool = Spool::open(self.data.path(), self.key.clone()).unwrap();
                let path = spool.path(QueueState::Incoming, id);
                let mut bytes = std::fs::read(&path).unwrap();
                let at = bytes.len() - 100;
                bytes[at] ^= 0x01;
                std::fs::write(&path, bytes).unwrap();
            }
            Storage::Postgres {
                cluster, database, ..
            } => {
                let changed = cluster.psql(
                    database,
                    &format!(
                        "UPDATE queue_message SET body = set_byte(body, length(body) - 100, \
                         get_byte(body, length(body) - 100) # 1) \
                         WHERE id = '{id}' AND state = 'incoming' RETURNING id"
                    ),
                );
                assert_eq!(changed.trim(), id);
            }
        }
    }

    /// Every file the backend keeps at rest right now, with its content: for PostgreSQL, the
    /// whole data directory of the server (tables, TOAST, WAL) and the staging directory.
    pub fn at_rest(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut files = Vec::new();
        walk(self.data.path(), &mut files);
        if let Storage::Postgres { cluster, .. } = &self.storage {
            files.extend(cluster.files_at_rest());
        }
        files
    }

    /// Checks that nothing staged or half written is left (after `recover`).
    pub fn assert_nothing_staged(&self) {
        let tmp = self.data.path().join("queue").join("tmp");
        let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
        assert!(left.is_empty(), "left in {}: {left:?}", tmp.display());
    }

    /// The database settings of a PostgreSQL harness.
    pub fn pg_settings(&self) -> &sealpost::pg::PgSettings {
        match &self.storage {
            Storage::Postgres { settings, .. } => settings,
            Storage::Spool => panic!("the spool has no database"),
        }
    }

    /// Runs SQL on the backend's database (PostgreSQL only).
    pub fn sql(&self, sql: &str) -> String {
        match &self.storage {
            Storage::Postgres {
                cluster, database, ..
            } => cluster.psql(database, sql),
            Storage::Spool => panic!("the spool has no database"),
        }
    }
}

fn walk(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, out);
        } else {
            let bytes = std::fs::read(&path).unwrap();
            out.push((path, bytes));
        }
    }
}

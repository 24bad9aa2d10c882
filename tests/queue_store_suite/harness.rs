//! How the suite opens each backend: `SEALPOST_QUEUE_BACKEND` picks one, and [`Harness`] opens,
//! reopens, damages and inspects it. The only backend-specific code of the suite lives here.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

use sealpost::crypto::keyfile::ServiceKey;
use sealpost::queue::{QueueState, QueueStore, Spool};
use tempfile::TempDir;

const BACKEND_VAR: &str = "SEALPOST_QUEUE_BACKEND";
const KNOWN_BACKENDS: &[&str] = &["spool"];
static ANNOUNCE: Once = Once::new();

/// The backends this suite can open.
enum Backend {
    Spool,
}

impl Backend {
    fn from_env() -> Backend {
        let name = std::env::var(BACKEND_VAR).unwrap_or_else(|_| "spool".to_string());
        let backend = match name.as_str() {
            "spool" => Backend::Spool,
            other => panic!(
                "{BACKEND_VAR}={other:?}: no such queue backend in this suite; known backends: {}",
                KNOWN_BACKENDS.join(", ")
            ),
        };
        // Straight to stderr, so that it shows even when the test output is captured.
        ANNOUNCE.call_once(|| {
            let _ = writeln!(std::io::stderr(), "queue store suite: backend {name}");
        });
        backend
    }
}

/// One queue under test and the storage behind it.
pub struct Harness {
    pub queue: Arc<dyn QueueStore>,
    storage: Storage,
}

enum Storage {
    Spool {
        data: TempDir,
        key: Arc<ServiceKey>,
        _keystore: TempDir,
    },
}

impl Harness {
    /// A new, empty queue that encrypts, as the server opens it.
    pub fn open() -> Harness {
        match Backend::from_env() {
            Backend::Spool => {
                let keystore = tempfile::tempdir().unwrap();
                let key = Arc::new(ServiceKey::load_or_create(keystore.path()).unwrap());
                let data = tempfile::tempdir().unwrap();
                let spool = Spool::open(data.path(), key.clone()).unwrap();
                Harness {
                    queue: Arc::new(spool),
                    storage: Storage::Spool {
                        data,
                        key,
                        _keystore: keystore,
                    },
                }
            }
        }
    }

    /// Another instance on the same storage: a second process, or this one after a restart.
    pub fn reopen(&self) -> Arc<dyn QueueStore> {
        match &self.storage {
            Storage::Spool { data, key, .. } => {
                Arc::new(Spool::open(data.path(), key.clone()).unwrap())
            }
        }
    }

    /// Alters the stored form of the waiting (incoming) message `id` so that it fails
    /// verification.
    pub fn damage(&self, id: &str) {
        match &self.storage {
            Storage::Spool { data, key, .. } => {
                let spool = Spool::open(data.path(), key.clone()).unwrap();
                let path = spool.path(QueueState::Incoming, id);
                let mut bytes = std::fs::read(&path).unwrap();
                let at = bytes.len() - 100;
                bytes[at] ^= 0x01;
                std::fs::write(&path, bytes).unwrap();
            }
        }
    }

    /// Every file the backend keeps at rest right now, with its content.
    pub fn at_rest(&self) -> Vec<(PathBuf, Vec<u8>)> {
        match &self.storage {
            Storage::Spool { data, .. } => {
                let mut files = Vec::new();
                walk(data.path(), &mut files);
                files
            }
        }
    }

    /// Checks that nothing staged or half written is left (after `recover`).
    pub fn assert_nothing_staged(&self) {
        match &self.storage {
            Storage::Spool { data, .. } => {
                let tmp = data.path().join("queue").join("tmp");
                let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
                assert!(left.is_empty(), "left in {}: {left:?}", tmp.display());
            }
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

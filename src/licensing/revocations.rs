//! Revocations that last: `sealpost rms revoke` writes them to a file under the data directory,
//! and the service reads that file again whenever it changed, so a revocation holds from the
//! next request on, without a restart, and across restarts.
//!
//! Format (`<data_dir>/rms/revocations`), one revoked message per line:
//! `<unix seconds revoked at> <Message-ID as in its header>`. Lines starting with `#` are
//! comments. The file is replaced atomically (written aside, fsynced, renamed).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::decision::RevocationList;

/// A file's modification time and length: when either changes, the file is read again.
type Stamp = Option<(SystemTime, u64)>;

/// The revocations the service decides with: in memory only, or backed by a file.
#[derive(Debug)]
pub struct RevocationStore {
    path: Option<PathBuf>,
    /// The list as last read, with the file's modification time and length then.
    cached: Mutex<(Stamp, Arc<RevocationList>)>,
}

impl RevocationStore {
    /// Revocations held in memory (tests, or a service without a data directory).
    pub fn in_memory() -> RevocationStore {
        RevocationStore {
            path: None,
            cached: Mutex::new((None, Arc::default())),
        }
    }

    /// The revocations of the data directory `data_dir`.
    pub fn open(data_dir: &Path) -> RevocationStore {
        RevocationStore {
            path: Some(data_dir.join("rms").join("revocations")),
            cached: Mutex::new((None, Arc::default())),
        }
    }

    /// The revocations now: the file is read again when it changed since the last read. A file
    /// that cannot be read keeps the last list in force (and says so in the log).
    pub fn current(&self) -> Arc<RevocationList> {
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        let Some(path) = &self.path else {
            return cached.1.clone();
        };
        let stamp = std::fs::metadata(path)
            .ok()
            .map(|m| (m.modified().unwrap_or(UNIX_EPOCH), m.len()));
        if stamp != cached.0 {
            match read(path) {
                Ok(list) => *cached = (stamp, Arc::new(list)),
                Err(e) => tracing::error!(path = %path.display(), error = %e,
                    "revocations unreadable: the last list read stays in force"),
            }
        }
        cached.1.clone()
    }

    /// Revokes a message from `at`, durably before it returns.
    pub fn revoke(&self, message_id: &str, at: SystemTime) -> std::io::Result<()> {
        self.change(|list| {
            list.revoke_message(message_id, at);
            true
        })
        .map(drop)
    }

    /// Takes back a revocation, durably; false if the message was not revoked.
    pub fn unrevoke(&self, message_id: &str) -> std::io::Result<bool> {
        self.change(|list| list.unrevoke_message(message_id))
    }

    fn change(&self, edit: impl FnOnce(&mut RevocationList) -> bool) -> std::io::Result<bool> {
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        let mut list = match &self.path {
            Some(path) if path.exists() => read(path)?,
            Some(_) => RevocationList::default(),
            None => (*cached.1).clone(),
        };
        let changed = edit(&mut list);
        if changed {
            if let Some(path) = &self.path {
                write(path, &list)?;
            }
        }
        *cached = (None, Arc::new(list));
        Ok(changed)
    }
}

fn read(path: &Path) -> std::io::Result<RevocationList> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RevocationList::default()),
        Err(e) => return Err(e),
    };
    let mut list = RevocationList::default();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parsed = line
            .split_once(' ')
            .and_then(|(at, id)| Some((at.parse::<u64>().ok()?, id.trim())))
            .filter(|(_, id)| !id.is_empty());
        let Some((at, id)) = parsed else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{}: line {}: expected `<unix seconds> <Message-ID>`",
                    path.display(),
                    n + 1
                ),
            ));
        };
        list.revoke_message(id, UNIX_EPOCH + Duration::from_secs(at));
    }
    Ok(list)
}

fn write(path: &Path, list: &RevocationList) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut text = String::from("# revoked messages: <unix seconds> <Message-ID>\n");
    for (id, at) in list.messages() {
        let secs = at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        text.push_str(&format!("{secs} {id}\n"));
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocations_last_across_stores_and_are_seen_without_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let service = RevocationStore::open(dir.path());
        assert_eq!(service.current().messages().count(), 0);
        let admin = RevocationStore::open(dir.path());
        let at = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        admin.revoke("<m1@contoso.test>", at).unwrap();
        // Another process's change is seen by the next lookup (the file changed).
        let seen: Vec<(String, SystemTime)> = service
            .current()
            .messages()
            .map(|(i, t)| (i.to_string(), t))
            .collect();
        assert_eq!(seen, [("<m1@contoso.test>".to_string(), at)]);
        assert!(admin.unrevoke("<m1@contoso.test>").unwrap());
        assert!(!admin.unrevoke("<m1@contoso.test>").unwrap());
        assert_eq!(
            RevocationStore::open(dir.path())
                .current()
                .messages()
                .count(),
            0
        );
        let text = std::fs::read_to_string(dir.path().join("rms/revocations")).unwrap();
        assert!(text.starts_with("# revoked messages"), "{text}");
    }

    #[test]
    fn a_damaged_file_keeps_the_last_list_and_refuses_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = RevocationStore::open(dir.path());
        store.revoke("<a@x>", SystemTime::now()).unwrap();
        assert_eq!(store.current().messages().count(), 1);
        std::fs::write(
            dir.path().join("rms/revocations"),
            "garbage here and there\n",
        )
        .unwrap();
        assert_eq!(store.current().messages().count(), 1);
        let e = store.revoke("<b@x>", SystemTime::now()).unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
    }
}

//! Recipient certificates kept parsed between messages, checked against the files on each use.
//!
//! A certificate found in its address's own file (`<address>.crt`) is kept with the
//! modification time and length of that file and of the directory; it is used again while both
//! are unchanged (a file added, removed or renamed into place changes the directory's) and it is
//! still valid. Anything else, and every miss, is a fresh `find_certificate`. Parsing the
//! certificate again per message cost more than the RSA operation it serves, and a parsed key
//! keeps aws-lc's precomputed Montgomery values.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::{find_certificate_explained, RecipientCert, SmimeError};

/// A file's modification time and length.
type Stamp = (SystemTime, u64);

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

struct Entry {
    cert: Arc<RecipientCert>,
    file: PathBuf,
    file_stamp: Stamp,
    dir_stamp: Stamp,
}

/// `find_certificate` over one directory, remembering what it found.
pub struct CertificateCache {
    dir: PathBuf,
    entries: Mutex<HashMap<String, Entry>>,
}

impl CertificateCache {
    pub fn new(dir: PathBuf) -> Self {
        CertificateCache {
            dir,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// What `find_certificate(dir, address, now)` finds, from memory when the files did not
    /// change; skipped candidates are logged as there.
    pub fn find(
        &self,
        address: &str,
        now: SystemTime,
    ) -> Result<Option<Arc<RecipientCert>>, SmimeError> {
        let key = address.to_ascii_lowercase();
        // Taken before the directory is read: a change while it is read misses next time.
        let dir_stamp = stamp(&self.dir);
        {
            let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = entries.get(&key) {
                if Some(e.dir_stamp) == dir_stamp
                    && stamp(&e.file) == Some(e.file_stamp)
                    && e.cert.unusable_reason(now).is_none()
                {
                    return Ok(Some(e.cert.clone()));
                }
            }
        }
        let lookup = find_certificate_explained(&self.dir, address, now)?;
        for (path, reason) in &lookup.skipped {
            tracing::warn!(address, path = %path.display(), reason = %reason, "S/MIME certificate skipped");
        }
        let Some(cert) = lookup.found.map(Arc::new) else {
            return Ok(None);
        };
        let own_file = lookup.found_in.filter(|p| {
            p.file_stem()
                .and_then(|s| s.to_str())
                .is_some_and(|s| s.eq_ignore_ascii_case(address))
        });
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match (own_file, dir_stamp) {
            (Some(file), Some(dir_stamp)) => match stamp(&file) {
                Some(file_stamp) => {
                    entries.insert(
                        key,
                        Entry {
                            cert: cert.clone(),
                            file,
                            file_stamp,
                            dir_stamp,
                        },
                    );
                }
                None => {
                    entries.remove(&key);
                }
            },
            _ => {
                entries.remove(&key);
            }
        }
        Ok(Some(cert))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/pki/smime")
            .join(name)
    }

    #[test]
    fn a_replaced_or_removed_certificate_is_seen_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let bob = dir.path().join("bob@fabrikam.test.crt");
        std::fs::copy(fixture("bob@fabrikam.test.crt"), &bob).unwrap();
        let cache = CertificateCache::new(dir.path().to_path_buf());
        let now = SystemTime::now();
        let first = cache.find("bob@fabrikam.test", now).unwrap().unwrap();
        let again = cache.find("Bob@Fabrikam.test", now).unwrap().unwrap();
        assert!(Arc::ptr_eq(&first, &again), "kept while nothing changed");

        // Replaced in place by another certificate (a different length): read again.
        std::fs::copy(fixture("dave@fabrikam.test.crt"), &bob).unwrap();
        let replaced = cache.find("bob@fabrikam.test", now).unwrap();
        assert!(
            replaced.is_none(),
            "dave's certificate under bob's name is not bob's"
        );

        std::fs::copy(fixture("bob@fabrikam.test.crt"), &bob).unwrap();
        assert!(cache.find("bob@fabrikam.test", now).unwrap().is_some());
        std::fs::remove_file(&bob).unwrap();
        assert!(cache.find("bob@fabrikam.test", now).unwrap().is_none());
    }

    #[test]
    fn an_expired_certificate_is_not_served_from_memory() {
        let cache = CertificateCache::new(fixture(""));
        let now = SystemTime::now();
        assert!(cache.find("bob@fabrikam.test", now).unwrap().is_some());
        let far = now + std::time::Duration::from_secs(200 * 365 * 86400);
        assert!(cache.find("bob@fabrikam.test", far).unwrap().is_none());
    }
}

//! Recipient certificates kept parsed between messages, checked against the files at most once
//! a second.
//!
//! A certificate found in its address's own file (`<address>.crt`) is kept with the
//! modification time and length of that file and of the directory; it is used again while both
//! are unchanged (a file added, removed or renamed into place changes the directory's) and it is
//! still valid. The two files are looked at again once `recheck` has passed since they last were
//! (one second by default): in between, a certificate is served from memory without a system
//! call, so a replaced or removed file is seen within that time. Anything else, and every miss,
//! is a fresh `find_certificate`. Parsing the certificate again per message cost more than the
//! RSA operation it serves, and a parsed key keeps aws-lc's precomputed Montgomery values; the
//! two `stat` calls per message cost a tenth of the whole encryption.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

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
    /// When the stamps were last found unchanged.
    checked: Instant,
}

/// How long a kept certificate is served before its files are looked at again.
pub const RECHECK: Duration = Duration::from_secs(1);

/// `find_certificate` over one directory, remembering what it found.
pub struct CertificateCache {
    dir: PathBuf,
    recheck: Duration,
    entries: Mutex<HashMap<String, Entry>>,
}

impl CertificateCache {
    pub fn new(dir: PathBuf) -> Self {
        Self::with_recheck(dir, RECHECK)
    }

    /// A cache that looks at the files again once `recheck` has passed (zero: on every use).
    pub fn with_recheck(dir: PathBuf, recheck: Duration) -> Self {
        CertificateCache {
            dir,
            recheck,
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
        {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = entries.get_mut(&key) {
                if e.cert.unusable_reason(now).is_none() {
                    if e.checked.elapsed() < self.recheck {
                        return Ok(Some(e.cert.clone()));
                    }
                    let checked = Instant::now();
                    if stamp(&self.dir) == Some(e.dir_stamp) && stamp(&e.file) == Some(e.file_stamp)
                    {
                        e.checked = checked;
                        return Ok(Some(e.cert.clone()));
                    }
                }
            }
        }
        // Taken before the directory is read: a change while it is read misses next time.
        let checked = Instant::now();
        let dir_stamp = stamp(&self.dir);
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
                            checked,
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
        let cache = CertificateCache::with_recheck(dir.path().to_path_buf(), Duration::ZERO);
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
    fn files_are_looked_at_again_only_after_the_recheck_interval() {
        let dir = tempfile::tempdir().unwrap();
        let bob = dir.path().join("bob@fabrikam.test.crt");
        std::fs::copy(fixture("bob@fabrikam.test.crt"), &bob).unwrap();
        let recheck = Duration::from_millis(300);
        let cache = CertificateCache::with_recheck(dir.path().to_path_buf(), recheck);
        let now = SystemTime::now();
        let started = Instant::now();
        let first = cache.find("bob@fabrikam.test", now).unwrap().unwrap();
        std::fs::remove_file(&bob).unwrap();
        let again = cache.find("bob@fabrikam.test", now).unwrap();
        if started.elapsed() < recheck {
            let again = again.expect("served from memory within the interval");
            assert!(Arc::ptr_eq(&first, &again));
        }
        std::thread::sleep(recheck);
        assert!(
            cache.find("bob@fabrikam.test", now).unwrap().is_none(),
            "the removal is seen once the interval has passed"
        );
        // Put back: found again at once (a miss is never kept).
        std::fs::copy(fixture("bob@fabrikam.test.crt"), &bob).unwrap();
        assert!(cache.find("bob@fabrikam.test", now).unwrap().is_some());
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

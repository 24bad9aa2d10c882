//! The policy cache (RFC 8461 §5.1): per domain, the last valid policy, the TXT id it was
//! fetched under and when, kept in memory and written to a small JSON file so that a restart
//! does not forget a domain's `enforce` policy. A policy is used until `max_age` has passed
//! since it was fetched.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::policy::Policy;

/// Domains remembered at most; the oldest fetch is forgotten first.
const MAX_ENTRIES: usize = 10_000;

/// One cached policy, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// The TXT `id` the policy was fetched under.
    pub id: String,
    pub policy: Policy,
    /// Seconds since the Unix epoch.
    pub fetched: u64,
}

impl Stored {
    /// Whether `max_age` has not yet run out at `now`.
    pub fn is_fresh(&self, now: SystemTime) -> bool {
        let expires = UNIX_EPOCH
            + Duration::from_secs(self.fetched)
            + Duration::from_secs(u64::from(self.policy.max_age));
        now < expires
    }
}

/// The cache, shared by every delivery; `T` is what each entry carries besides what is stored
/// (the TLS policy built from it).
pub struct Cache<T> {
    entries: Mutex<HashMap<String, (Stored, Arc<T>)>>,
    file: Option<PathBuf>,
}

impl<T> Cache<T> {
    /// An empty cache, or the one saved in `file` (entries rebuilt with `build`; a missing,
    /// unreadable or damaged file starts empty and is logged).
    pub fn open(file: Option<PathBuf>, build: impl Fn(&str, &Stored) -> Option<T>) -> Cache<T> {
        let mut entries = HashMap::new();
        if let Some(path) = &file {
            match std::fs::read(path) {
                Ok(bytes) => match serde_json::from_slice::<HashMap<String, Stored>>(&bytes) {
                    Ok(saved) => {
                        let now = SystemTime::now();
                        for (domain, stored) in saved {
                            if !stored.is_fresh(now) {
                                continue;
                            }
                            if let Some(extra) = build(&domain, &stored) {
                                entries.insert(domain, (stored, Arc::new(extra)));
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(file = %path.display(), error = %e, "MTA-STS cache unreadable; starting empty")
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "MTA-STS cache unreadable; starting empty")
                }
            }
        }
        Cache {
            entries: Mutex::new(entries),
            file,
        }
    }

    /// The entry of `domain` while its policy is fresh.
    pub fn get(&self, domain: &str, now: SystemTime) -> Option<(Stored, Arc<T>)> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(domain)
            .filter(|(stored, _)| stored.is_fresh(now))
            .cloned()
    }

    /// Records a newly fetched policy, and saves the cache when it has a file.
    pub fn put(&self, domain: &str, stored: Stored, extra: Arc<T>) {
        let snapshot = {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            let now = SystemTime::now();
            entries.retain(|_, (s, _)| s.is_fresh(now));
            if entries.len() >= MAX_ENTRIES && !entries.contains_key(domain) {
                if let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, (s, _))| s.fetched)
                    .map(|(d, _)| d.clone())
                {
                    entries.remove(&oldest);
                }
            }
            entries.insert(domain.to_string(), (stored, extra));
            self.file.as_ref().map(|_| {
                entries
                    .iter()
                    .map(|(d, (s, _))| (d.clone(), s.clone()))
                    .collect::<HashMap<_, _>>()
            })
        };
        if let (Some(path), Some(snapshot)) = (&self.file, snapshot) {
            if let Err(e) = save(path, &snapshot) {
                tracing::warn!(file = %path.display(), error = %e, "cannot save the MTA-STS cache");
            }
        }
    }
}

/// Writes the whole cache to a temporary file and renames it over the old one.
fn save(path: &std::path::Path, entries: &HashMap<String, Stored>) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(entries).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Now, in whole seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::mta_sts::policy::parse_policy;

    fn stored(id: &str, max_age: u32, fetched: u64) -> Stored {
        let mut policy =
            parse_policy(b"version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: 1\n")
                .unwrap();
        policy.max_age = max_age;
        Stored {
            id: id.into(),
            policy,
            fetched,
        }
    }

    #[test]
    fn entries_expire_after_max_age_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mta-sts.json");
        let cache: Cache<()> = Cache::open(Some(file.clone()), |_, _| Some(()));
        let now = now_secs();
        cache.put("fresh.test", stored("a1", 3600, now), Arc::new(()));
        cache.put("stale.test", stored("b1", 10, now - 20), Arc::new(()));
        let t = SystemTime::now();
        assert_eq!(cache.get("fresh.test", t).unwrap().0.id, "a1");
        assert!(cache.get("stale.test", t).is_none(), "max_age has passed");
        let reopened: Cache<()> = Cache::open(Some(file.clone()), |_, _| Some(()));
        assert_eq!(reopened.get("fresh.test", t).unwrap().0.id, "a1");
        std::fs::write(&file, b"{ not json").unwrap();
        let damaged: Cache<()> = Cache::open(Some(file), |_, _| Some(()));
        assert!(damaged.get("fresh.test", t).is_none());
    }
}

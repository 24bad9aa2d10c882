//! The reader's use-license cache: one JSON file per (publishing license, reader), so a message
//! opened once opens again without the network while its use license is valid.
//!
//! Directory: `--license-cache DIR`, else `$XDG_CACHE_HOME/sealpost/licenses`, else
//! `$HOME/.cache/sealpost/licenses` (created with mode 0700). File name:
//! `<SHA-256 of the publishing license, hex>-<first 16 hex digits of SHA-256 of the principal>.json`,
//! mode 0600, written to a temporary file and renamed into place. Content:
//!
//! ```json
//! {"format": "sealpost-use-license-cache/1", "principal": "bob@fabrikam.test",
//!  "licensing_url": "https://...", "valid_until": "2026-...Z",
//!  "use_license": "<base64 of the use license>", "tenant_key": "<PEM public key>"}
//! ```
//!
//! Nothing in an entry is trusted: it is verified exactly as a fresh answer is (signature by the
//! tenant key the message names, principal, validity) and ignored when it does not verify.

use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};

/// The `format` value of an entry.
pub const FORMAT: &str = "sealpost-use-license-cache/1";
/// Entries larger than this are ignored.
const MAX_ENTRY: u64 = 64 * 1024;

/// One cached use license.
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub format: String,
    pub principal: String,
    pub licensing_url: String,
    pub valid_until: String,
    /// Base64 of the use license's wire form.
    pub use_license: String,
    /// The tenant public key, PEM.
    pub tenant_key: String,
}

impl Entry {
    pub fn new(
        principal: &str,
        licensing_url: &str,
        valid_until: &str,
        use_license: &[u8],
        tenant_key: &str,
    ) -> Entry {
        Entry {
            format: FORMAT.into(),
            principal: principal.into(),
            licensing_url: licensing_url.into(),
            valid_until: valid_until.into(),
            use_license: base64::engine::general_purpose::STANDARD.encode(use_license),
            tenant_key: tenant_key.into(),
        }
    }

    /// The use license bytes, if the base64 is valid.
    pub fn use_license_bytes(&self) -> Option<Vec<u8>> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.use_license)
            .ok()
    }
}

/// The default cache directory, from the environment (`None` without XDG_CACHE_HOME or HOME).
pub fn default_dir() -> Option<PathBuf> {
    let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    let base = std::env::var_os("XDG_CACHE_HOME")
        .and_then(absolute)
        .or_else(|| {
            std::env::var_os("HOME")
                .and_then(absolute)
                .map(|h| h.join(".cache"))
        })?;
    Some(base.join("sealpost").join("licenses"))
}

/// The file of the entry for `license_sha256` and `principal`.
pub fn entry_path(dir: &Path, license_sha256: &[u8; 32], principal: &str) -> PathBuf {
    let who = crate::crypto::rms::license_sha256(principal.as_bytes());
    dir.join(format!(
        "{}-{}.json",
        hex::encode(license_sha256),
        &hex::encode(who)[..16]
    ))
}

/// Reads an entry: `Ok(None)` when there is none, `Err` (a reason) when the file is unusable.
pub fn load(path: &Path) -> Result<Option<Entry>, String> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    if meta.len() > MAX_ENTRY {
        return Err("too large".into());
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let entry: Entry = serde_json::from_slice(&bytes).map_err(|e| format!("not an entry: {e}"))?;
    if entry.format != FORMAT {
        return Err(format!("unknown format {:?}", entry.format));
    }
    Ok(Some(entry))
}

/// Writes an entry (mode 0600, atomically), creating the directory with mode 0700.
pub fn store(path: &Path, entry: &Entry) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
    }
    let json = serde_json::to_vec_pretty(entry)?;
    super::write_atomically(path, &json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn entries_round_trip_privately() {
        let dir = tempfile::tempdir().unwrap();
        let path = entry_path(
            &dir.path().join("a/licenses"),
            &[7; 32],
            "bob@fabrikam.test",
        );
        assert!(load(&path).unwrap().is_none());
        let entry = Entry::new("bob@fabrikam.test", "https://x.test", "t", b"UL", "PEM");
        store(&path, &entry).unwrap();
        let back = load(&path).unwrap().unwrap();
        assert_eq!(back.use_license_bytes().unwrap(), b"UL");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        std::fs::write(&path, "{").unwrap();
        assert!(load(&path).is_err());
        assert_ne!(
            entry_path(dir.path(), &[7; 32], "bob@fabrikam.test"),
            entry_path(dir.path(), &[7; 32], "dave@fabrikam.test")
        );
    }
}

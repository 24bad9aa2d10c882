//! Key files (root, availability and service keys): a two-line text format written 0600, and the
//! service key that other parts (the queue) use to wrap their own per-file keys.
//!
//! Format, exactly:
//!
//! ```text
//! sealpost-key-v1
//! <64 lowercase hex digits: the 32-byte key>
//! ```
//!
//! A trailing newline after the hex line is allowed; nothing else is.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::sealing::{CryptoError, SecretKey};

/// The first line of every key file.
pub const KEY_FILE_HEADER: &str = "sealpost-key-v1";

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Missing, unreadable, permission denied: a *system* reason (see the unwrap order).
    #[error("unavailable: {0}")]
    Unavailable(std::io::Error),
    #[error("not a sealpost key file (expected a {KEY_FILE_HEADER} line and 64 hex digits)")]
    Malformed,
    #[error("cannot write: {0}")]
    Write(std::io::Error),
    #[error("{0}")]
    Crypto(#[from] CryptoError),
}

/// Reads a key file.
pub fn read_key_file(path: &Path) -> Result<SecretKey, KeyFileError> {
    let bytes = Zeroizing::new(std::fs::read(path).map_err(KeyFileError::Unavailable)?);
    parse_key(&bytes)
}

fn parse_key(bytes: &[u8]) -> Result<SecretKey, KeyFileError> {
    let text = std::str::from_utf8(bytes).map_err(|_| KeyFileError::Malformed)?;
    let body = text.strip_suffix('\n').unwrap_or(text);
    let (header, hex_line) = body.split_once('\n').ok_or(KeyFileError::Malformed)?;
    if header != KEY_FILE_HEADER
        || hex_line.len() != 64
        || !hex_line
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(KeyFileError::Malformed);
    }
    let raw = Zeroizing::new(hex::decode(hex_line).map_err(|_| KeyFileError::Malformed)?);
    SecretKey::from_bytes(&raw).ok_or(KeyFileError::Malformed)
}

/// Writes `key` to a new file with mode 0600 (refuses to overwrite), fsynced.
pub fn write_key_file(path: &Path, key: &SecretKey) -> Result<(), KeyFileError> {
    let text = Zeroizing::new(format!(
        "{KEY_FILE_HEADER}\n{}\n",
        hex::encode(key.as_bytes())
    ));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(KeyFileError::Write)?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(KeyFileError::Write)
}

/// Generates a fresh random key into a new 0600 file; returns the key id.
pub fn generate_key_file(path: &Path) -> Result<String, KeyFileError> {
    let key = SecretKey::generate()?;
    write_key_file(path, &key)?;
    Ok(key.id())
}

/// The service key: a key sealpost makes for itself in `keystore_dir/service.key` (never inside
/// data_dir) to wrap the per-file keys of data that belongs to no mailbox, such as queue files.
///
/// Used by the queue (`queue::format`): per file, `SecretKey::generate()` a content key, encrypt with
/// `crypto::seal_chunks(&key, queue_id, bytes, &mut out)`, store `service.wrap(&key)` (40 bytes)
/// in the file's header; to read, `service.unwrap(&wrapped)` then `crypto::open_chunks`.
#[derive(Debug)]
pub struct ServiceKey {
    key: SecretKey,
    path: PathBuf,
}

impl ServiceKey {
    /// Loads `keystore_dir/service.key`, creating it (and the 0700 directory) on first use.
    pub fn load_or_create(keystore_dir: &Path) -> Result<ServiceKey, KeyFileError> {
        use std::os::unix::fs::DirBuilderExt;
        let path = keystore_dir.join("service.key");
        match read_key_file(&path) {
            Ok(key) => return Ok(ServiceKey { key, path }),
            Err(KeyFileError::Unavailable(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(keystore_dir)
            .map_err(KeyFileError::Write)?;
        let key = SecretKey::generate()?;
        match write_key_file(&path, &key) {
            Ok(()) => Ok(ServiceKey { key, path }),
            // Another process created it first: use theirs.
            Err(KeyFileError::Write(e)) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Ok(ServiceKey {
                    key: read_key_file(&path)?,
                    path,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Wraps a per-file key (AES-KW, 40 bytes).
    pub fn wrap(&self, key: &SecretKey) -> Result<Vec<u8>, CryptoError> {
        self.key.wrap(key)
    }

    /// Unwraps what `wrap` made; fails on a wrong service key or an altered wrap.
    pub fn unwrap(&self, wrapped: &[u8]) -> Result<SecretKey, CryptoError> {
        self.key.unwrap_key(wrapped)
    }

    /// An HMAC-SHA256 key derived from the service key for `purpose`: fingerprints made with it
    /// cannot be computed, or confirmed for a guessed input, without the keystore.
    pub fn fingerprint_key(&self, purpose: &str) -> aws_lc_rs::hmac::Key {
        use aws_lc_rs::hmac;
        let derive = hmac::Key::new(hmac::HMAC_SHA256, self.key.as_bytes());
        let sub = hmac::sign(&derive, purpose.as_bytes());
        hmac::Key::new(hmac::HMAC_SHA256, sub.as_ref())
    }

    /// The public id of the service key (for logs and file headers).
    pub fn id(&self) -> String {
        self.key.id()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generated_files_are_0600_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.key");
        let id = generate_key_file(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_key_file(&path).unwrap().id(), id);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("sealpost-key-v1\n"), "{text}");
        assert_eq!(text.len(), 16 + 64 + 1);
        assert!(matches!(
            generate_key_file(&path),
            Err(KeyFileError::Write(_))
        ));
    }

    #[test]
    fn malformed_and_missing_files_are_told_apart() {
        let good = format!("{KEY_FILE_HEADER}\n{}", "ab".repeat(32));
        assert!(parse_key(good.as_bytes()).is_ok());
        for bad in [
            "".to_string(),
            "ab".repeat(32),
            format!("{KEY_FILE_HEADER}\n{}", "AB".repeat(32)),
            format!("{KEY_FILE_HEADER}\n{}", "ab".repeat(31)),
            format!("{KEY_FILE_HEADER}\n{}\n\n", "ab".repeat(32)),
            format!("sealpost-key-v2\n{}", "ab".repeat(32)),
        ] {
            assert!(
                matches!(parse_key(bad.as_bytes()), Err(KeyFileError::Malformed)),
                "{bad:?}"
            );
        }
        assert!(matches!(
            read_key_file(Path::new("/nonexistent/x.key")),
            Err(KeyFileError::Unavailable(_))
        ));
    }

    #[test]
    fn service_key_is_created_once_and_wraps() {
        let dir = tempfile::tempdir().unwrap();
        let ks = dir.path().join("keystore");
        let a = ServiceKey::load_or_create(&ks).unwrap();
        let b = ServiceKey::load_or_create(&ks).unwrap();
        assert_eq!(a.id(), b.id());
        let k = SecretKey::generate().unwrap();
        let w = a.wrap(&k).unwrap();
        assert_eq!(b.unwrap(&w).unwrap().as_bytes(), k.as_bytes());
        let mode = std::fs::metadata(&ks).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
}

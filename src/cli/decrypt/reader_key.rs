//! The key a reader who proves itself by password has its use licenses wrapped to: `--key KEY`,
//! or one kept beside the use-license cache, made on first use.
//!
//! File: `<cache dir>/keys/<first 16 hex digits of SHA-256 of the user name, lowercased>.key`,
//! an RSA-2048 private key (PKCS#8 PEM) with mode 0600 in a 0700 directory. The key never leaves
//! the machine: only its public half goes to the service. Losing it only means asking the
//! service again; a cached use license wrapped to a lost key is ignored and replaced.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use aws_lc_rs::encoding::AsDer;
use zeroize::Zeroizing;

/// Where the key of `user` is kept under the cache directory `dir`.
pub fn path(dir: &Path, user: &str) -> PathBuf {
    let who = crate::crypto::rms::license_sha256(user.trim().to_ascii_lowercase().as_bytes());
    dir.join("keys")
        .join(format!("{}.key", &hex::encode(who)[..16]))
}

/// The key at `path`, made first (RSA-2048) when there is none. Returns whether it was made.
pub fn load_or_create(path: &Path) -> anyhow::Result<bool> {
    if path.exists() {
        return Ok(false);
    }
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = path
        .parent()
        .context("the reader key has no directory")?
        .to_path_buf();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
        .map_err(|_| anyhow::anyhow!("cannot generate an RSA key"))?;
    let der = pair
        .as_der()
        .map_err(|_| anyhow::anyhow!("cannot encode the RSA key"))?;
    let pem = Zeroizing::new(
        der::pem::encode_string("PRIVATE KEY", der::pem::LineEnding::LF, der.as_ref())
            .map_err(|e| anyhow::anyhow!("cannot encode the RSA key: {e}"))?,
    );
    let tmp = dir.join(format!(".new-key.{}.tmp", std::process::id()));
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(pem.as_bytes())?;
        f.sync_all()?;
        // A link, not a rename: a key another run made meanwhile is kept, never replaced.
        match std::fs::hard_link(&tmp, path) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
            _ => Ok(()),
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    written.with_context(|| format!("writing {}", path.display()))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::crypto::keys::DecryptKey;

    #[test]
    fn a_key_is_made_once_privately_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let at = path(dir.path(), "Carol@Contoso.test");
        assert_eq!(at, path(dir.path(), "carol@contoso.test"));
        assert!(load_or_create(&at).unwrap());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&at), 0o600);
        assert_eq!(mode(at.parent().unwrap()), 0o700);
        let key = DecryptKey::from_pem(&at, None).unwrap();
        assert_eq!(key.bits(), 2048);
        let before = std::fs::read(&at).unwrap();
        assert!(!load_or_create(&at).unwrap());
        assert_eq!(std::fs::read(&at).unwrap(), before);
        assert!(key
            .public_key_pem()
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----"));
        assert_eq!(std::fs::read_dir(at.parent().unwrap()).unwrap().count(), 1);
    }
}

//! What makes the database's audit chain evident against whoever administers the database: a
//! MAC on every line under a key derived from the service key (which the nodes hold and the
//! database never does), and each node's record of the newest line it wrote, which shows lines
//! cut off the end of the chain.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use aws_lc_rs::hmac;

use crate::crypto::keyfile::ServiceKey;
use crate::store::StoreError;

/// What the MAC key is derived for, from the service key.
pub const PURPOSE: &str = "sealpost audit line mac v1";

/// HMAC-SHA256 of audit lines.
pub struct LineMac(hmac::Key);

impl LineMac {
    /// The key every node sharing the service key derives alike.
    pub fn new(service: &ServiceKey) -> LineMac {
        LineMac(service.fingerprint_key(PURPOSE))
    }

    /// A MAC key given as bytes (tests).
    pub fn from_bytes(key: &[u8]) -> LineMac {
        LineMac(hmac::Key::new(hmac::HMAC_SHA256, key))
    }

    /// Hex HMAC-SHA256 of a line's bytes.
    pub fn sign(&self, line: &[u8]) -> String {
        hex::encode(hmac::sign(&self.0, line).as_ref())
    }

    /// Whether `mac` (hex) is this key's MAC of `line`; compared in constant time.
    pub fn verify(&self, line: &[u8], mac: &str) -> bool {
        hex::decode(mac).is_ok_and(|m| hmac::verify(&self.0, line, &m).is_ok())
    }
}

/// The highest sequence number this node wrote into the database's chain, kept in the node's
/// keystore (`audit-chain.seq`). It is raised after every group the node commits, without an
/// fsync of its own: a crash of the node may lose its last raises (the mark then lags, which
/// weakens the check and never raises a false alarm), and the appends pay no extra fsync.
pub struct SeqMark {
    path: PathBuf,
}

/// The mark's file: the number in decimal, padded to a fixed width so that a raise overwrites it
/// in place.
const WIDTH: usize = 20;

impl SeqMark {
    pub fn new(keystore_dir: &Path) -> SeqMark {
        SeqMark {
            path: keystore_dir.join("audit-chain.seq"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The mark (0 when this node never wrote a line).
    pub fn read(&self) -> Result<u64, StoreError> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => parse(&self.path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(StoreError::io(&self.path, e)),
        }
    }

    /// Raises the mark to `seq` (never lowers it, whichever process of this node raised it
    /// last: the file is locked while read and written).
    pub fn raise(&self, seq: u64) -> Result<(), StoreError> {
        let io = |e| StoreError::io(&self.path, e);
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&self.path)
            .map_err(io)?;
        f.lock().map_err(io)?;
        let mut text = String::new();
        f.read_to_string(&mut text).map_err(io)?;
        let old = if text.is_empty() {
            0
        } else {
            parse(&self.path, &text)?
        };
        if seq > old {
            f.write_all_at(format!("{seq:0WIDTH$}\n").as_bytes(), 0)
                .map_err(io)?;
        }
        Ok(())
    }
}

fn parse(path: &Path, text: &str) -> Result<u64, StoreError> {
    text.trim().parse().map_err(|_| {
        StoreError::Audit(format!(
            "{}: not a sequence number ({:?}): the record of the newest audit line this node \
             wrote is damaged",
            path.display(),
            text.trim()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mac_verifies_only_its_line_under_its_key() {
        let mac = LineMac::from_bytes(b"key one");
        let line = br#"{"seq":1,"prev":"00"}"#;
        let m = mac.sign(line);
        assert_eq!(m.len(), 64);
        assert!(mac.verify(line, &m));
        assert!(!mac.verify(br#"{"seq":2,"prev":"00"}"#, &m), "other line");
        assert!(
            !LineMac::from_bytes(b"key two").verify(line, &m),
            "other key"
        );
        assert!(!mac.verify(line, &m[..62]), "shortened");
        assert!(!mac.verify(line, "zz"), "not hex");
        assert!(
            !mac.verify(line, &crate::store::audit::line_hash(line)),
            "a hash"
        );
    }

    #[test]
    fn the_mac_key_comes_from_the_service_key() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let ka = ServiceKey::load_or_create(a.path()).unwrap();
        let kb = ServiceKey::load_or_create(b.path()).unwrap();
        let line = b"a line";
        let m = LineMac::new(&ka).sign(line);
        assert!(LineMac::new(&ServiceKey::load_or_create(a.path()).unwrap()).verify(line, &m));
        assert!(!LineMac::new(&kb).verify(line, &m));
    }

    #[test]
    fn the_mark_only_rises() {
        let dir = tempfile::tempdir().unwrap();
        let mark = SeqMark::new(dir.path());
        assert_eq!(mark.read().unwrap(), 0);
        mark.raise(7).unwrap();
        mark.raise(3).unwrap();
        assert_eq!(mark.read().unwrap(), 7);
        mark.raise(12345).unwrap();
        assert_eq!(mark.read().unwrap(), 12345);
        std::fs::write(mark.path(), "x\n").unwrap();
        let e = mark.read().unwrap_err().to_string();
        assert!(e.contains("audit-chain.seq"), "{e}");
    }
}

//! The audit log: append-only JSON lines, each carrying the SHA-256 of the line before it, with the
//! newest line's hash anchored in the index so that editing, dropping or truncating is detected.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::StoreError;

/// `prev` of the first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// 1, 2, 3 … without gaps.
    pub seq: u64,
    /// RFC 3339, UTC.
    pub time: String,
    /// Hex SHA-256 of the previous line's bytes (without its newline), or `GENESIS`.
    pub prev: String,
    /// `policy-key-unwrap`, `policy-key-create`, `policy-rotate`, `root-rotate`, `set-policy`,
    /// `policy-revoke`, `reencrypt`.
    pub event: String,
    pub policy: String,
    /// Which key acted: `root <file> <key id>`, `availability <file> <key id>`, or empty.
    pub key: String,
    /// The command or process: `serve`, `mailbox read`, `store policy rotate` …
    pub actor: String,
    /// Why: the operation and its object.
    pub reason: String,
}

/// What an append left as the newest line: stored in the index as the log's anchor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    pub seq: u64,
    pub hash: String,
}

/// The result of `AuditLog::verify`.
#[derive(Debug, Default)]
pub struct AuditReport {
    pub lines: u64,
    /// Every problem found, with its line number.
    pub problems: Vec<String>,
}

pub struct AuditLog {
    path: PathBuf,
}

/// Hex SHA-256 of a line.
pub fn line_hash(line: &[u8]) -> String {
    hex::encode(Sha256::digest(line))
}

impl AuditLog {
    pub fn new(keystore_dir: &Path) -> AuditLog {
        AuditLog {
            path: keystore_dir.join("audit.log"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event under an exclusive lock, fsynced; returns the new anchor.
    pub fn append(
        &self,
        event: &str,
        policy: &str,
        key: &str,
        actor: &str,
        reason: &str,
    ) -> Result<Anchor, StoreError> {
        use std::os::unix::fs::DirBuilderExt;
        let io = |e| StoreError::io(&self.path, e);
        if let Some(dir) = self.path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| StoreError::io(dir, e))?;
        }
        let mut f = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(io)?;
        f.lock().map_err(io)?;
        let (seq, prev) = match last_line(&mut f).map_err(io)? {
            None => (0, GENESIS.to_string()),
            Some(line) => {
                let rec: AuditRecord = serde_json::from_slice(&line).map_err(|e| {
                    StoreError::Audit(format!(
                        "{}: last line unreadable: {e}",
                        self.path.display()
                    ))
                })?;
                (rec.seq, line_hash(&line))
            }
        };
        let rec = AuditRecord {
            seq: seq + 1,
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            prev,
            event: event.into(),
            policy: policy.into(),
            key: key.into(),
            actor: actor.into(),
            reason: reason.into(),
        };
        let line = serde_json::to_string(&rec)
            .map_err(|e| StoreError::Audit(format!("cannot encode audit record: {e}")))?;
        let mut buf = line.clone().into_bytes();
        buf.push(b'\n');
        f.write_all(&buf).and_then(|_| f.sync_all()).map_err(io)?;
        Ok(Anchor {
            seq: rec.seq,
            hash: line_hash(line.as_bytes()),
        })
    }

    /// Checks the whole chain, and that the newest line matches `anchor` (from the index).
    pub fn verify(&self, anchor: Option<&Anchor>) -> Result<AuditReport, StoreError> {
        let data = match std::fs::read(&self.path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(StoreError::io(&self.path, e)),
        };
        let mut report = AuditReport::default();
        if !data.is_empty() && !data.ends_with(b"\n") {
            report
                .problems
                .push("the last line is incomplete (no newline)".into());
        }
        let mut prev_hash = GENESIS.to_string();
        let mut hashes = Vec::new();
        let body = data.strip_suffix(b"\n").unwrap_or(&data);
        let lines = body.split(|&b| b == b'\n').filter(|_| !body.is_empty());
        for (i, line) in lines.enumerate() {
            let n = i as u64 + 1;
            match serde_json::from_slice::<AuditRecord>(line) {
                Err(e) => report.problems.push(format!("line {n}: not a record: {e}")),
                Ok(rec) => {
                    if rec.seq != n {
                        report.problems.push(format!(
                            "line {n}: sequence number {} (expected {n})",
                            rec.seq
                        ));
                    }
                    if rec.prev != prev_hash {
                        report.problems.push(format!(
                            "line {n}: does not carry the hash of line {} (that line was edited, \
                             removed or inserted)",
                            n - 1
                        ));
                    }
                }
            }
            prev_hash = line_hash(line);
            hashes.push(prev_hash.clone());
        }
        report.lines = hashes.len() as u64;
        if let Some(a) = anchor {
            match a.seq.checked_sub(1).and_then(|i| hashes.get(i as usize)) {
                None => report.problems.push(format!(
                    "the index records {} line(s) but the log has {}: it was truncated",
                    a.seq, report.lines
                )),
                Some(h) if *h != a.hash => report.problems.push(format!(
                    "line {}: does not match the hash recorded in the index (edited)",
                    a.seq
                )),
                Some(_) => {}
            }
        } else if report.lines > 0 {
            report
                .problems
                .push("the index records no audit anchor but the log has lines".into());
        }
        Ok(report)
    }
}

/// The last complete line of the file (without its newline), reading only its tail.
fn last_line(f: &mut File) -> std::io::Result<Option<Vec<u8>>> {
    let len = f.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok(None);
    }
    let mut window = 16 * 1024u64;
    loop {
        let start = len.saturating_sub(window);
        f.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        let body = buf.strip_suffix(b"\n").unwrap_or(&buf);
        match body.iter().rposition(|&b| b == b'\n') {
            Some(p) => return Ok(Some(body[p + 1..].to_vec())),
            None if start == 0 => return Ok(Some(body.to_vec())),
            None => window *= 4,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_with(n: usize) -> (tempfile::TempDir, AuditLog, Anchor) {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(&dir.path().join("ks"));
        let mut anchor = None;
        for i in 0..n {
            anchor = Some(
                log.append(
                    "policy-key-unwrap",
                    "p",
                    "root a.key 00",
                    "test",
                    &format!("read {i}"),
                )
                .unwrap(),
            );
        }
        (dir, log, anchor.unwrap())
    }

    #[test]
    fn a_clean_chain_verifies() {
        let (_d, log, anchor) = log_with(5);
        assert_eq!(anchor.seq, 5);
        let r = log.verify(Some(&anchor)).unwrap();
        assert_eq!(r.lines, 5);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
    }

    #[test]
    fn editing_dropping_or_truncating_is_detected() {
        let (_d, log, anchor) = log_with(4);
        let original = std::fs::read_to_string(log.path()).unwrap();
        let lines: Vec<&str> = original.lines().collect();

        let edited = original.replacen("read 1", "read 9", 1);
        std::fs::write(log.path(), &edited).unwrap();
        let r = log.verify(Some(&anchor)).unwrap();
        assert!(
            r.problems.iter().any(|p| p.starts_with("line 3:")),
            "{:?}",
            r.problems
        );

        let last_edited = original.replacen("read 3", "read 8", 1);
        std::fs::write(log.path(), &last_edited).unwrap();
        let r = log.verify(Some(&anchor)).unwrap();
        assert!(
            r.problems.iter().any(|p| p.contains("index")),
            "{:?}",
            r.problems
        );

        let dropped = format!("{}\n{}\n{}\n", lines[0], lines[2], lines[3]);
        std::fs::write(log.path(), dropped).unwrap();
        assert!(!log.verify(Some(&anchor)).unwrap().problems.is_empty());

        let truncated = format!("{}\n{}\n", lines[0], lines[1]);
        std::fs::write(log.path(), truncated).unwrap();
        let r = log.verify(Some(&anchor)).unwrap();
        assert!(
            r.problems.iter().any(|p| p.contains("truncated")),
            "{:?}",
            r.problems
        );

        std::fs::write(log.path(), &original).unwrap();
        assert!(log.verify(Some(&anchor)).unwrap().problems.is_empty());
    }
}

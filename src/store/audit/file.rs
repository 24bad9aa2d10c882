//! The audit log of one node as a file, `<keystore_dir>/audit.log` (the local store): its
//! newest line's hash is anchored in the index so that editing, dropping or truncating is
//! detected.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::group::{Committer, Pending};
use super::{line_hash, Anchor, AuditEvent, AuditRecord, AuditReport, GENESIS};
use crate::store::StoreError;

/// The audit log of one keystore directory.
///
/// Other processes appending to the same file are serialised by the file lock, and every group
/// chains onto the file's last line as it finds it.
pub struct FileLog {
    path: PathBuf,
    committer: Committer,
}

impl FileLog {
    pub fn new(keystore_dir: &Path) -> FileLog {
        FileLog {
            path: keystore_dir.join("audit.log"),
            committer: Committer::default(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event, fsynced (together with the events other threads append at the same
    /// time); returns the new anchor once the line is on disk.
    pub fn append(&self, event: &AuditEvent) -> Result<Anchor, StoreError> {
        self.committer
            .append(event, |batch| self.write_group(batch))
    }

    pub(super) fn committer(&self) -> &Committer {
        &self.committer
    }

    /// Every line with its line number, oldest first (none when the file does not exist).
    pub fn lines(&self) -> Result<Vec<(u64, String)>, StoreError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(StoreError::io(&self.path, e)),
        };
        Ok(text
            .lines()
            .enumerate()
            .map(|(i, l)| (i as u64 + 1, l.to_string()))
            .collect())
    }

    /// Chains `batch` onto the file's last line under an exclusive lock, writes it and fsyncs
    /// once; returns one anchor per event, in order.
    fn write_group(&self, batch: &[Pending]) -> Result<Vec<Anchor>, StoreError> {
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
        let (mut seq, mut prev) = match last_line(&mut f).map_err(io)? {
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
        let mut buf = Vec::new();
        let mut anchors = Vec::with_capacity(batch.len());
        for p in batch {
            seq += 1;
            let line = p.line(seq, prev, "")?;
            prev = line_hash(line.as_bytes());
            anchors.push(Anchor {
                seq,
                hash: prev.clone(),
            });
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'\n');
        }
        f.write_all(&buf).and_then(|_| f.sync_all()).map_err(io)?;
        Ok(anchors)
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

    fn log_with(n: usize) -> (tempfile::TempDir, FileLog, Anchor) {
        let dir = tempfile::tempdir().unwrap();
        let log = FileLog::new(&dir.path().join("ks"));
        let mut anchor = None;
        for i in 0..n {
            anchor = Some(
                log.append(&AuditEvent {
                    event: "policy-key-unwrap",
                    policy: "p",
                    key: "root a.key 00",
                    actor: "test",
                    reason: &format!("read {i}"),
                })
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

    /// What an append returned, checked in the appending thread right when it returned: the
    /// line is in the file with that hash, and this handle's fsyncs already cover it.
    fn append_checked(log: &FileLog, reason: &str) -> Anchor {
        let event = AuditEvent {
            event: "rms-access",
            policy: "",
            key: "",
            actor: "test",
            reason,
        };
        let anchor = log.append(&event).unwrap();
        assert!(
            log.committer.synced_seq() >= anchor.seq,
            "answered before its fsync"
        );
        let text = std::fs::read_to_string(log.path()).unwrap();
        let line = text.lines().nth(anchor.seq as usize - 1).unwrap();
        assert_eq!(line_hash(line.as_bytes()), anchor.hash);
        assert!(line.contains(reason));
        anchor
    }

    #[test]
    fn concurrent_appends_all_land_in_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let log = std::sync::Arc::new(FileLog::new(&dir.path().join("ks")));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    (0..25)
                        .map(|i| append_checked(&log, &format!("thread {t} access {i}")))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut anchors: Vec<Anchor> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        anchors.sort_by_key(|a| a.seq);
        let seqs: Vec<u64> = anchors.iter().map(|a| a.seq).collect();
        assert_eq!(seqs, (1..=200).collect::<Vec<u64>>());
        let r = log.verify(anchors.last()).unwrap();
        assert_eq!(r.lines, 200);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert!(log.committer.commits() <= 200);
    }

    #[test]
    fn appends_waiting_during_a_write_share_the_next_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let log = std::sync::Arc::new(FileLog::new(&dir.path().join("ks")));
        append_checked(&log, "first");
        assert_eq!(log.committer.commits(), 1);
        // Another process holds the file: the next writer waits for it with its group taken.
        let holder = File::open(log.path()).unwrap();
        holder.lock().unwrap();
        let wait_for = |want: (bool, usize)| {
            while log.committer.is_writing_with_waiting() != want {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        };
        let spawn = |reason: String| {
            let log = log.clone();
            std::thread::spawn(move || append_checked(&log, &reason))
        };
        let mut threads = vec![spawn("leader".into())];
        wait_for((true, 0));
        threads.extend((0..6).map(|i| spawn(format!("follower {i}"))));
        wait_for((true, 6));
        holder.unlock().unwrap();
        let mut anchors: Vec<Anchor> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        // One fsync for the leader's group, one for the six that waited meanwhile.
        assert_eq!(log.committer.commits(), 3);
        anchors.sort_by_key(|a| a.seq);
        assert_eq!(
            anchors.iter().map(|a| a.seq).collect::<Vec<_>>(),
            (2..=8).collect::<Vec<u64>>()
        );
        let r = log.verify(anchors.last()).unwrap();
        assert_eq!(r.lines, 8);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
    }
}

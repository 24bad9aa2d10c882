//! The audit chain the nodes of one PostgreSQL database share (schema
//! `src/pg/schema/007_audit_chain.sql`): one line per row of `audit_line`, chained by hash as in
//! the file, each with an HMAC-SHA256 under a key derived from the service key, and the newest
//! line's sequence number and hash in the one row of `audit_head`. Appends of every node
//! serialise on that row (`SELECT … FOR UPDATE`), and a group's lines commit with the head in one
//! transaction, so the head is the chain's anchor and nothing is anchored elsewhere.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::group::{Committer, Pending};
use super::mac::{LineMac, SeqMark};
use super::{line_hash, Anchor, AuditEvent, AuditRecord, AuditReport, GENESIS};
use crate::crypto::keyfile::ServiceKey;
use crate::pg::Database;
use crate::store::backend::postgres::PgTransaction;
use crate::store::StoreError;

/// A row of `audit_line` as read: seq, line, MAC.
pub type ChainRow = (i64, String, String);

/// One node's handle on the shared chain.
pub struct PgLog {
    db: Arc<Database>,
    node: String,
    mac: LineMac,
    mark: SeqMark,
    keystore_dir: PathBuf,
    committer: Committer,
}

impl PgLog {
    /// The chain in `db` as node `node` writes it, with the MAC key of `service` and this node's
    /// mark of the newest line it wrote in `keystore_dir`.
    pub fn new(db: Arc<Database>, node: &str, service: &ServiceKey, keystore_dir: &Path) -> PgLog {
        PgLog {
            db,
            node: node.to_string(),
            mac: LineMac::new(service),
            mark: SeqMark::new(keystore_dir),
            keystore_dir: keystore_dir.to_path_buf(),
            committer: Committer::default(),
        }
    }

    /// Appends one event; returns the new line's anchor once its transaction committed.
    pub fn append(&self, event: &AuditEvent) -> Result<Anchor, StoreError> {
        self.committer
            .append(event, |batch| self.write_group(batch))
    }

    pub(super) fn committer(&self) -> &Committer {
        &self.committer
    }

    pub fn location(&self) -> String {
        format!("audit chain in {}", self.db.location())
    }

    /// This node's keystore directory (where its mark is, and its audit log file was before the
    /// store moved into the database).
    pub fn keystore_dir(&self) -> &Path {
        &self.keystore_dir
    }

    /// The highest sequence number this node wrote, as its keystore records it.
    pub fn mark(&self) -> Result<u64, StoreError> {
        self.mark.read()
    }

    /// Chains `batch` onto the head under its row lock, inserts the lines with their MACs,
    /// moves the head and commits; returns one anchor per event, in order.
    fn write_group(&self, batch: &[Pending]) -> Result<Vec<Anchor>, StoreError> {
        let tx = PgTransaction::begin(&self.db)?;
        let head = tx.query("SELECT seq, hash FROM audit_head FOR UPDATE", &[])?;
        let (mut seq, mut prev) =
            match head.first() {
                Some(r) => (r.get::<_, i64>(0) as u64, r.get::<_, String>(1)),
                None => return Err(StoreError::Audit(
                    "the audit chain's head row (table audit_head) is missing from the database"
                        .into(),
                )),
            };
        let (mut seqs, mut lines, mut macs) = (Vec::new(), Vec::new(), Vec::new());
        let mut anchors = Vec::with_capacity(batch.len());
        for p in batch {
            seq += 1;
            let line = p.line(seq, prev, &self.node)?;
            prev = line_hash(line.as_bytes());
            macs.push(self.mac.sign(line.as_bytes()));
            seqs.push(seq as i64);
            lines.push(line);
            anchors.push(Anchor {
                seq,
                hash: prev.clone(),
            });
        }
        tx.execute(
            "INSERT INTO audit_line (seq, line, mac)
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[])",
            &[&seqs, &lines, &macs],
        )?;
        tx.execute(
            "UPDATE audit_head SET seq = $1, hash = $2",
            &[&(seq as i64), &prev],
        )?;
        tx.commit()?;
        if let Err(e) = self.mark.raise(seq) {
            // The lines are committed; only the check for lines cut off the end is weaker.
            tracing::warn!(error = %e, "cannot record the newest audit line this node wrote");
        }
        Ok(anchors)
    }

    /// Starts the chain with the lines of a node's own file (verified by the caller), as they
    /// are, each with its MAC: only while the chain is empty, else a conflict error saying how
    /// many lines it holds. Returns how many lines went in.
    pub fn import_lines(&self, lines: &[(u64, String)]) -> Result<u64, StoreError> {
        let tx = PgTransaction::begin(&self.db)?;
        let head = tx.query("SELECT seq FROM audit_head FOR UPDATE", &[])?;
        let held = head.first().map_or(0, |r| r.get::<_, i64>(0));
        let rows = tx.query("SELECT count(*) FROM audit_line", &[])?;
        let held = held.max(rows.first().map_or(0, |r| r.get::<_, i64>(0)));
        if held > 0 {
            return Err(StoreError::index(
                crate::store::IndexErrorKind::Conflict,
                format!("the database's audit chain holds {held} line(s) already"),
            ));
        }
        let Some((last, last_line)) = lines.last() else {
            return Ok(0);
        };
        let seqs: Vec<i64> = lines.iter().map(|(s, _)| *s as i64).collect();
        let text: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
        let macs: Vec<String> = text.iter().map(|l| self.mac.sign(l.as_bytes())).collect();
        tx.execute(
            "INSERT INTO audit_line (seq, line, mac)
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[])",
            &[&seqs, &text, &macs],
        )?;
        tx.execute(
            "UPDATE audit_head SET seq = $1, hash = $2",
            &[&(*last as i64), &line_hash(last_line.as_bytes())],
        )?;
        tx.commit()?;
        self.mark.raise(*last)?;
        Ok(lines.len() as u64)
    }

    /// Every line with its sequence number, oldest first.
    pub fn lines(&self) -> Result<Vec<(u64, String)>, StoreError> {
        let tx = PgTransaction::begin(&self.db)?;
        let rows = tx.query("SELECT seq, line FROM audit_line ORDER BY seq", &[])?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, i64>(0) as u64, r.get(1)))
            .collect())
    }

    /// Checks the chain: sequence numbers 1, 2, 3 … without gaps, every line carrying the hash
    /// of the line before it and a valid MAC, the head naming the newest line, and the chain
    /// reaching at least the newest line this node wrote.
    pub fn verify(&self) -> Result<AuditReport, StoreError> {
        let tx = PgTransaction::begin(&self.db)?;
        tx.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ", &[])?;
        let rows = tx.query("SELECT seq, line, mac FROM audit_line ORDER BY seq", &[])?;
        let head = tx.query("SELECT seq, hash FROM audit_head", &[])?;
        drop(tx);
        let rows: Vec<ChainRow> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        let head = head
            .first()
            .map(|r| (r.get::<_, i64>(0), r.get::<_, String>(1)));
        let mut report = check_chain(&rows, head, &self.mac);
        match self.mark.read() {
            Err(e) => report.problems.push(e.to_string()),
            Ok(mark) => {
                let last = rows.last().map_or(0, |r| r.0);
                if mark as i64 > last {
                    report.problems.push(format!(
                        "this node wrote up to seq {mark} (as {} records) but the chain ends at \
                         seq {last}: lines were removed from its end",
                        self.mark.path().display()
                    ));
                }
            }
        }
        Ok(report)
    }
}

/// The problems of a chain read from the database: rows `(seq, line, mac)` by ascending seq, and
/// the head row `(seq, hash)`.
pub fn check_chain(rows: &[ChainRow], head: Option<(i64, String)>, mac: &LineMac) -> AuditReport {
    let mut report = AuditReport {
        lines: rows.len() as u64,
        ..AuditReport::default()
    };
    let problems = &mut report.problems;
    let (mut prev_seq, mut prev_hash) = (0i64, GENESIS.to_string());
    for (seq, line, line_mac) in rows {
        let seq = *seq;
        if seq != prev_seq + 1 {
            let missing = if seq == prev_seq + 2 {
                format!("seq {}", prev_seq + 1)
            } else {
                format!("seq {} to {}", prev_seq + 1, seq - 1)
            };
            problems.push(format!(
                "{missing}: missing from the chain (deleted from the database)"
            ));
        }
        match serde_json::from_str::<AuditRecord>(line) {
            Err(e) => problems.push(format!("seq {seq}: not a record: {e}")),
            Ok(rec) => {
                if rec.seq as i64 != seq {
                    problems.push(format!(
                        "seq {seq}: the line says sequence number {} (moved in the database)",
                        rec.seq
                    ));
                }
                if rec.prev != prev_hash {
                    problems.push(format!(
                        "seq {seq}: does not carry the hash of seq {prev_seq} (a line was \
                         edited, removed or inserted)"
                    ));
                }
            }
        }
        if !mac.verify(line.as_bytes(), line_mac) {
            problems.push(format!(
                "seq {seq}: its MAC does not verify (the line was altered or written without \
                 the service key)"
            ));
        }
        prev_seq = seq;
        prev_hash = line_hash(line.as_bytes());
    }
    match head {
        None => problems.push("the chain's head row (table audit_head) is missing".into()),
        Some((s, _)) if s != prev_seq => problems.push(format!(
            "the chain's head records seq {s} but the newest line is seq {prev_seq} (lines \
             removed from the end, or the head altered)"
        )),
        Some((_, h)) if prev_seq > 0 && h != prev_hash => problems.push(format!(
            "seq {prev_seq}: does not match the hash the chain's head records (edited)"
        )),
        Some(_) => {}
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chain of `n` lines as the database holds it, with its head.
    fn chain(n: i64, mac: &LineMac) -> (Vec<ChainRow>, (i64, String)) {
        let mut prev = GENESIS.to_string();
        let mut rows = Vec::new();
        for seq in 1..=n {
            let rec = AuditRecord {
                seq: seq as u64,
                time: "2026-01-01T00:00:00.000Z".into(),
                prev: prev.clone(),
                event: "rms-access".into(),
                policy: String::new(),
                key: String::new(),
                actor: "test".into(),
                reason: format!("access {seq}"),
                node: "a".into(),
            };
            let line = serde_json::to_string(&rec).unwrap();
            prev = line_hash(line.as_bytes());
            rows.push((seq, line.clone(), mac.sign(line.as_bytes())));
        }
        (rows, (n, prev))
    }

    #[test]
    fn a_clean_chain_verifies_and_each_alteration_is_named() {
        let mac = LineMac::from_bytes(b"k");
        let (rows, head) = chain(5, &mac);
        let r = check_chain(&rows, Some(head.clone()), &mac);
        assert_eq!(r.lines, 5);
        assert!(r.problems.is_empty(), "{:?}", r.problems);

        let mut edited = rows.clone();
        edited[2].1 = edited[2].1.replace("access 3", "access 9");
        let r = check_chain(&edited, Some(head.clone()), &mac);
        assert!(r.problems.iter().any(|p| p.starts_with("seq 3: its MAC")));
        assert!(r
            .problems
            .iter()
            .any(|p| p.starts_with("seq 4: does not carry")));

        let mut removed = rows.clone();
        removed.remove(1);
        let r = check_chain(&removed, Some(head.clone()), &mac);
        assert!(
            r.problems.iter().any(|p| p.starts_with("seq 2: missing")),
            "{:?}",
            r.problems
        );

        let r = check_chain(&rows, Some(head), &LineMac::from_bytes(b"other"));
        assert_eq!(r.problems.len(), 5, "{:?}", r.problems);

        let r = check_chain(&rows[..4], Some((5, String::new())), &mac);
        assert!(r.problems.iter().any(|p| p.contains("head records seq 5")));
    }
}

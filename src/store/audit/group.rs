//! Group commit of audit appends: the events waiting when a write starts are written together by
//! one thread (one fsync, or one database transaction), and each append returns only once the
//! write that covers its own line is durable.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};

use super::{Anchor, AuditEvent, AuditRecord};
use crate::store::StoreError;

/// One event waiting to be written.
pub(super) struct Pending {
    ticket: u64,
    pub event: String,
    pub policy: String,
    pub key: String,
    pub actor: String,
    pub reason: String,
}

impl Pending {
    /// This event as the line of the chain numbered `seq` after the line hashed `prev`,
    /// written by `node` (empty for a node's own file).
    pub fn line(&self, seq: u64, prev: String, node: &str) -> Result<String, StoreError> {
        let rec = AuditRecord {
            seq,
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            prev,
            event: self.event.clone(),
            policy: self.policy.clone(),
            key: self.key.clone(),
            actor: self.actor.clone(),
            reason: self.reason.clone(),
            node: node.to_string(),
        };
        serde_json::to_string(&rec)
            .map_err(|e| StoreError::Audit(format!("cannot encode audit record: {e}")))
    }
}

/// The appends of one log handle: waiting, being written, and done.
#[derive(Default)]
struct Group {
    next_ticket: u64,
    waiting: Vec<Pending>,
    /// One thread writes a group at a time; the others wait for their result.
    writing: bool,
    done: HashMap<u64, Result<Anchor, String>>,
    /// Groups made durable through this handle.
    commits: u64,
    /// The highest sequence number this handle has made durable.
    synced_seq: u64,
    /// The anchor of that line.
    synced: Option<Anchor>,
}

/// Collects appends and hands them in groups to a writer.
#[derive(Default)]
pub(super) struct Committer {
    group: Mutex<Group>,
    committed: Condvar,
}

impl Committer {
    /// Queues one event and waits until a group containing it was written by `write` (called
    /// here, or by another appending thread with its own `write`): `write` gets the events in
    /// order and returns one anchor per event, only once they are durable.
    pub fn append(
        &self,
        event: &AuditEvent,
        write: impl Fn(&[Pending]) -> Result<Vec<Anchor>, StoreError>,
    ) -> Result<Anchor, StoreError> {
        let mut group = self.lock();
        let ticket = group.next_ticket;
        group.next_ticket += 1;
        group.waiting.push(Pending {
            ticket,
            event: event.event.into(),
            policy: event.policy.into(),
            key: event.key.into(),
            actor: event.actor.into(),
            reason: event.reason.into(),
        });
        loop {
            if let Some(result) = group.done.remove(&ticket) {
                return result.map_err(StoreError::Audit);
            }
            if group.writing {
                group = self
                    .committed
                    .wait(group)
                    .unwrap_or_else(|e| e.into_inner());
                continue;
            }
            // This thread writes everything waiting now, its own event included.
            group.writing = true;
            let batch = std::mem::take(&mut group.waiting);
            drop(group);
            let mut writer = GroupWriter {
                committer: self,
                tickets: batch.iter().map(|p| p.ticket).collect(),
                finished: false,
            };
            let result = write(&batch).and_then(|anchors| {
                if anchors.len() == batch.len() {
                    Ok(anchors)
                } else {
                    Err(StoreError::Audit(format!(
                        "{} audit event(s) written as {} line(s)",
                        batch.len(),
                        anchors.len()
                    )))
                }
            });
            group = writer.finish(result);
        }
    }

    /// Groups written through this handle (each covering one or more appends).
    pub fn commits(&self) -> u64 {
        self.lock().commits
    }

    /// The highest sequence number this handle has written (0 before any).
    pub fn synced_seq(&self) -> u64 {
        self.lock().synced_seq
    }

    /// The anchor of the newest line this handle has written, if any.
    pub fn synced(&self) -> Option<Anchor> {
        self.lock().synced.clone()
    }

    /// Whether a group is being written, and how many appends wait for the next one.
    #[cfg(test)]
    pub fn is_writing_with_waiting(&self) -> (bool, usize) {
        let group = self.lock();
        (group.writing, group.waiting.len())
    }

    fn lock(&self) -> MutexGuard<'_, Group> {
        self.group.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Hands a written group's results to its waiting appends, and releases the writer's turn
/// even if writing panicked (those appends then fail rather than wait for ever).
struct GroupWriter<'a> {
    committer: &'a Committer,
    tickets: Vec<u64>,
    finished: bool,
}

impl<'a> GroupWriter<'a> {
    fn finish(&mut self, result: Result<Vec<Anchor>, StoreError>) -> MutexGuard<'a, Group> {
        let mut group = self.committer.lock();
        match result {
            Ok(anchors) => {
                group.commits += 1;
                if let Some(last) = anchors.last().filter(|l| l.seq > group.synced_seq) {
                    group.synced_seq = last.seq;
                    group.synced = Some(last.clone());
                }
                for (ticket, anchor) in self.tickets.iter().zip(anchors) {
                    group.done.insert(*ticket, Ok(anchor));
                }
            }
            Err(e) => {
                let text = e.to_string();
                for ticket in &self.tickets {
                    group.done.insert(*ticket, Err(text.clone()));
                }
            }
        }
        group.writing = false;
        self.finished = true;
        self.committer.committed.notify_all();
        group
    }
}

impl Drop for GroupWriter<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let mut group = self.committer.lock();
            for ticket in &self.tickets {
                group
                    .done
                    .insert(*ticket, Err("the audit write was interrupted".into()));
            }
            group.writing = false;
            self.committer.committed.notify_all();
        }
    }
}

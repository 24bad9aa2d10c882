//! Where sessions are kept and what has been reported: the seam between the TLS-RPT journal and
//! its backends. The files under `data_dir` ([`Recorder`]) serve one node; PostgreSQL
//! ([`super::pg::PgJournal`]) serves every node of a cluster, so that each domain gets one
//! report per period, counting the sessions of all of them.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use super::build::{self, Pending};
use super::journal::{self, day_start, Recorder};
use super::send::{load_state, save_state, State, KEEP_DAYS};
use super::{Failure, Policy};

/// The journal of sessions and the report state of one node, or of all the nodes sharing a
/// database.
pub trait SessionJournal: Send + Sync {
    /// Counts one session that ended at `t` (seconds since the epoch); `failure` None when it
    /// met its policy. Cheap, and never fails nor delays the delivery that calls it: a session
    /// that cannot be kept is logged and lost (a count, never mail).
    fn record_at(&self, t: i64, policy: &Policy, failure: Option<Failure>);

    /// Counts one session that ended now.
    fn record(&self, policy: &Policy, failure: Option<Failure>) {
        self.record_at(chrono::Utc::now().timestamp(), policy, failure);
    }

    /// Puts what was recorded where reports are built from (on stable storage, or in the
    /// database). Blocking.
    fn sync(&self);

    /// Where the journal is, for messages.
    fn location(&self) -> String;

    /// How many seconds a session may take, after it ended, to reach where reports read it:
    /// a report made now covers the sessions before now minus this.
    fn lag(&self) -> i64;

    /// The end of the range of the last daily run (a UTC midnight), by any node. Blocking.
    fn daily_until(&self) -> anyhow::Result<Option<i64>>;

    /// The sessions before `until` not reported yet, by domain, without taking the send lock
    /// (what `sealpost tls-report show` prints). Blocking.
    fn pending(&self, until: i64) -> anyhow::Result<BTreeMap<String, Pending>>;

    /// Waits until no other report run (of this process, another process, or another node)
    /// holds the send lock, and takes it until the returned run is finished or dropped.
    /// Blocking.
    fn lock(&self) -> anyhow::Result<Box<dyn SendLock>>;
}

/// One report run, holding the send lock.
pub trait SendLock: Send {
    /// The sessions before `until` not reported yet, by domain, read under the lock.
    fn pending(&mut self, until: i64) -> anyhow::Result<BTreeMap<String, Pending>>;

    /// Records that `domain`'s sessions before `until` are reported (or not wanted).
    fn mark(&mut self, domain: &str, until: i64) -> anyhow::Result<()>;

    /// Ends the run: with `daily`, records `until` as the end of the last daily run; removes
    /// sessions reported more than [`KEEP_DAYS`] days before `until` (with `kept`, a domain's
    /// report was kept for later: the file journal then removes nothing). Releases the lock.
    fn finish(self: Box<Self>, until: i64, daily: bool, kept: bool) -> anyhow::Result<()>;
}

/// The lock file of the file journal: one run at a time per `data_dir`.
const LOCK_FILE: &str = "send.lock";

impl SessionJournal for Recorder {
    fn record_at(&self, t: i64, policy: &Policy, failure: Option<Failure>) {
        Recorder::record_at(self, t, policy, failure);
    }

    fn sync(&self) {
        Recorder::sync(self);
    }

    fn location(&self) -> String {
        self.dir().display().to_string()
    }

    fn lag(&self) -> i64 {
        1
    }

    fn daily_until(&self) -> anyhow::Result<Option<i64>> {
        Ok(load_state(self.dir())?.daily_until)
    }

    fn pending(&self, until: i64) -> anyhow::Result<BTreeMap<String, Pending>> {
        let state = load_state(self.dir())?;
        let sessions = journal::read(self.dir())?;
        Ok(build::pending(&sessions.sessions, &state.reported, until))
    }

    fn lock(&self) -> anyhow::Result<Box<dyn SendLock>> {
        let dir = self.dir().to_path_buf();
        std::fs::create_dir_all(&dir)?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(dir.join(LOCK_FILE))?;
        lock.lock()?;
        let state = load_state(&dir)?;
        Ok(Box::new(FileRun {
            dir,
            _lock: lock,
            state,
            files: Vec::new(),
        }))
    }
}

/// A run over the files: the state is written once, when the run finishes.
struct FileRun {
    dir: PathBuf,
    _lock: File,
    state: State,
    /// The day files read by [`SendLock::pending`].
    files: Vec<(String, PathBuf)>,
}

impl SendLock for FileRun {
    fn pending(&mut self, until: i64) -> anyhow::Result<BTreeMap<String, Pending>> {
        let journal = journal::read(&self.dir)?;
        if journal.unreadable > 0 {
            tracing::warn!(lines = journal.unreadable, dir = %self.dir.display(), "TLS-RPT journal lines that cannot be read were skipped");
        }
        self.files = journal.files;
        Ok(build::pending(
            &journal.sessions,
            &self.state.reported,
            until,
        ))
    }

    fn mark(&mut self, domain: &str, until: i64) -> anyhow::Result<()> {
        self.state.reported.insert(domain.to_string(), until);
        Ok(())
    }

    fn finish(mut self: Box<Self>, until: i64, daily: bool, kept: bool) -> anyhow::Result<()> {
        if daily {
            self.state.daily_until = Some(until);
        }
        save_state(&self.dir, &self.state)?;
        // Day files whose every session is reported are kept a few days, then removed.
        for (day, path) in &self.files {
            let Ok(date) = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d") else {
                continue;
            };
            let end = date.and_time(chrono::NaiveTime::MIN).and_utc().timestamp() + 86_400;
            if !kept && end + KEEP_DAYS * 86_400 <= day_start(until) {
                std::fs::remove_file(path)?;
            }
        }
        Ok(())
    }
}

//! The journal of sessions: one JSON line per session in `<data_dir>/tls-rpt/<day>.jsonl`,
//! appended with one `write` each (the kernel keeps what a crashed process wrote; the file is
//! synced when its day ends and at shutdown).

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{Failure, Policy, Session};

/// The directory under `data_dir`.
pub const DIR: &str = "tls-rpt";
/// A day's journal stops growing at this size (a warning says so once): a report is a summary,
/// and a flood of failing sessions must not fill the disk.
pub const MAX_DAY_BYTES: u64 = 256 * 1024 * 1024;

/// Appends sessions to the journal. One per server process; cheap to call from any task.
pub struct Recorder {
    dir: PathBuf,
    open: Mutex<Option<OpenDay>>,
}

struct OpenDay {
    day: String,
    file: File,
    size: u64,
    full: bool,
}

impl Recorder {
    /// The journal of the server whose `data_dir` this is.
    pub fn new(data_dir: &Path) -> Recorder {
        Recorder {
            dir: data_dir.join(DIR),
            open: Mutex::new(None),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Counts one session that ended now: `failure` None when it met its policy.
    pub fn record(&self, policy: &Policy, failure: Option<Failure>) {
        self.record_at(chrono::Utc::now().timestamp(), policy, failure);
    }

    /// Counts one session that ended at `t` (seconds since the epoch). A journal that cannot
    /// be written is logged, never an error for the delivery.
    pub fn record_at(&self, t: i64, policy: &Policy, failure: Option<Failure>) {
        let session = Session {
            t,
            policy: policy.clone(),
            failure,
        };
        if let Err(e) = self.append(&session) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot record a session for TLS-RPT");
        }
    }

    fn append(&self, session: &Session) -> io::Result<()> {
        let mut line = serde_json::to_vec(session).map_err(io::Error::other)?;
        line.push(b'\n');
        let day = day_of(session.t);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.as_ref().is_none_or(|o| o.day != day) {
            if let Some(old) = open.take() {
                old.file.sync_data()?;
            }
            *open = Some(self.open_day(&day)?);
        }
        let Some(o) = open.as_mut() else {
            return Ok(());
        };
        if o.size + line.len() as u64 > MAX_DAY_BYTES {
            if !o.full {
                o.full = true;
                tracing::warn!(day = %o.day, limit = MAX_DAY_BYTES, "TLS-RPT journal full for the day; further sessions are not counted");
            }
            return Ok(());
        }
        o.file.write_all(&line)?;
        o.size += line.len() as u64;
        Ok(())
    }

    fn open_day(&self, day: &str) -> io::Result<OpenDay> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(self.dir.join(format!("{day}.jsonl")))?;
        let size = file.metadata()?.len();
        Ok(OpenDay {
            day: day.to_string(),
            file,
            size,
            full: false,
        })
    }

    /// Puts what was written on stable storage (at shutdown, and before a report is built).
    pub fn sync(&self) {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(o) = open.as_ref() {
            if let Err(e) = o.file.sync_data() {
                tracing::warn!(error = %e, "cannot sync the TLS-RPT journal");
            }
        }
    }
}

/// The UTC day of `t`, as the journal names its files: "2026-12-06".
pub fn day_of(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "1970-01-01".to_string())
}

/// The first second of the UTC day of `t`.
pub fn day_start(t: i64) -> i64 {
    t - t.rem_euclid(86_400)
}

/// What the journal holds: its sessions, the day files they came from, and how many lines could
/// not be read (a line cut short by a full disk, say).
#[derive(Debug, Default)]
pub struct Journal {
    pub sessions: Vec<Session>,
    pub files: Vec<(String, PathBuf)>,
    pub unreadable: usize,
}

/// Reads every day file under `dir` (none yet: an empty journal).
pub fn read(dir: &Path) -> io::Result<Journal> {
    let mut journal = Journal::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(journal),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        let Some(day) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".jsonl"))
            .filter(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_ok())
            .map(str::to_string)
        else {
            continue;
        };
        for line in io::BufReader::new(File::open(&path)?).lines() {
            match serde_json::from_str::<Session>(&line?) {
                Ok(s) => journal.sessions.push(s),
                Err(_) => journal.unreadable += 1,
            }
        }
        journal.files.push((day, path));
    }
    journal.files.sort();
    Ok(journal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tlsrpt::PolicyType;

    fn policy() -> Policy {
        Policy {
            kind: PolicyType::Tlsa,
            domain: "b.test".into(),
            strings: vec!["3 1 1 aa".into()],
            mx: vec!["mx.b.test".into()],
        }
    }

    #[test]
    fn sessions_come_back_by_day_and_a_torn_line_is_counted_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let r = Recorder::new(dir.path());
        let day1 = 1_780_000_000 - 1_780_000_000 % 86_400;
        r.record_at(day1 + 5, &policy(), None);
        let failure = Failure {
            result: "tlsa-invalid".into(),
            mx: Some("mx.b.test".into()),
            ip: Some("127.0.0.9".parse().unwrap()),
            info: None,
        };
        r.record_at(day1 + 86_400 + 1, &policy(), Some(failure.clone()));
        r.sync();
        let second = r.dir().join(format!("{}.jsonl", day_of(day1 + 86_400)));
        let mut f = OpenOptions::new().append(true).open(&second).unwrap();
        f.write_all(b"{\"t\":12,\"pol").unwrap();
        let j = read(r.dir()).unwrap();
        assert_eq!(j.files.len(), 2);
        assert_eq!(j.unreadable, 1);
        assert_eq!(j.sessions.len(), 2);
        assert_eq!(j.sessions.iter().filter(|s| s.failure.is_some()).count(), 1);
        assert!(j
            .sessions
            .iter()
            .any(|s| s.failure.as_ref() == Some(&failure)));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&second).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn days_are_utc() {
        assert_eq!(day_of(0), "1970-01-01");
        assert_eq!(day_of(86_399), "1970-01-01");
        assert_eq!(day_of(86_400), "1970-01-02");
        assert_eq!(day_start(86_400 + 7), 86_400);
    }
}

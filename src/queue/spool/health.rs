//! What the admin endpoint asks of the queue: how many files are in each state, and whether a
//! file can be written right now.

use std::fs;
use std::io::Write;

use super::{dir_names, QueueError, Spool};

impl Spool {
    /// Files per state ("incoming", "active", "deferred", "hold", "corrupt"), counted from the
    /// directories.
    pub fn counts(&self) -> Result<Vec<(&'static str, usize)>, QueueError> {
        let mut out = Vec::new();
        for (name, dir) in [
            ("incoming", &self.incoming),
            ("active", &self.active),
            ("deferred", &self.deferred),
            ("hold", &self.hold),
            ("corrupt", &self.corrupt),
        ] {
            out.push((name, dir_names(dir)?.len()));
        }
        Ok(out)
    }

    /// Writes, fsyncs and removes a small file in tmp/: true health means a 250 could be given.
    pub fn probe_write(&self) -> Result<(), QueueError> {
        let path = self.tmp.join(format!(".health-{}", std::process::id()));
        let result = fs::File::create(&path)
            .and_then(|mut f| {
                f.write_all(b"ok")?;
                f.sync_all()
            })
            .map_err(QueueError::io(&path));
        let _ = fs::remove_file(&path);
        result
    }
}

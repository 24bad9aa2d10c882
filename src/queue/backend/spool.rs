//! The filesystem spool as a [`QueueStore`]: each state is a directory under
//! `<data_dir>/queue/`, and every transition is a rename.
//!
//! How it keeps the contract (details in [`crate::queue::spool`]):
//! - durability: a file is written completely in `tmp/` and fsynced before it is renamed into
//!   place, and the directories concerned are fsynced before a method returns;
//! - one state at a time: a message has one name in one directory, and `rename` decides which
//!   of several concurrent claims (threads or processes) wins;
//! - quarantine: a file that fails verification is moved to `corrupt/`;
//! - hold: a held message lies in `hold/`, which no claim, flush or listing of waiting ids
//!   reads; hold and release are renames like every other move;
//! - staging and half-written files live only in `tmp/`, which `recover` empties.

use super::{Listing, QueueEntry, QueueStore, RecoveryReport};
use crate::queue::envelope::Envelope;
use crate::queue::error::QueueError;
use crate::queue::format::Part;
use crate::queue::retransmit::Fingerprinter;
use crate::queue::spool::{Spool, Staging};

impl QueueStore for Spool {
    fn location(&self) -> String {
        self.root().display().to_string()
    }

    fn is_encrypted(&self) -> bool {
        Spool::is_encrypted(self)
    }

    fn recover(&self) -> Result<RecoveryReport, QueueError> {
        Spool::recover(self)
    }

    fn stage(&self, fingerprint: Option<Fingerprinter>) -> Result<Staging, QueueError> {
        Spool::stage(self, fingerprint)
    }

    fn enqueue(&self, envelope: &Envelope, message: &[u8]) -> Result<(), QueueError> {
        Spool::enqueue(self, envelope, message)
    }

    fn enqueue_parts(&self, envelope: &Envelope, parts: &[Part]) -> Result<(), QueueError> {
        Spool::enqueue_parts(self, envelope, parts)
    }

    fn claim(&self, id: &str) -> Result<Option<(Envelope, Vec<u8>)>, QueueError> {
        Spool::claim(self, id)
    }

    fn enqueue_claimed(
        &self,
        envelope: &Envelope,
        parts: &[Part],
    ) -> Result<(Envelope, Vec<u8>), QueueError> {
        Spool::enqueue_claimed(self, envelope, parts)
    }

    fn defer(&self, envelope: &Envelope, message: &[u8]) -> Result<(), QueueError> {
        Spool::defer(self, envelope, message)
    }

    fn checkpoint(&self, envelope: &Envelope, message: &[u8]) -> Result<(), QueueError> {
        Spool::checkpoint(self, envelope, message)
    }

    fn complete(&self, id: &str) -> Result<(), QueueError> {
        Spool::complete(self, id)
    }

    fn scan(&self) -> Result<Listing, QueueError> {
        Spool::scan(self)
    }

    fn list(&self) -> Result<Vec<QueueEntry>, QueueError> {
        Spool::list(self)
    }

    fn incoming_ids(&self) -> Result<Vec<String>, QueueError> {
        Spool::incoming_ids(self)
    }

    fn deferred(&self) -> Result<Vec<(String, i64)>, QueueError> {
        Spool::deferred(self)
    }

    fn waiting_size(&self, id: &str) -> Option<u64> {
        Spool::waiting_size(self, id)
    }

    fn flush(&self) -> Result<usize, QueueError> {
        Spool::flush(self)
    }

    fn delete(&self, id: &str) -> Result<bool, QueueError> {
        Spool::delete(self, id)
    }

    fn hold(&self, id: &str) -> Result<bool, QueueError> {
        Spool::hold(self, id)
    }

    fn release(&self, id: &str) -> Result<bool, QueueError> {
        Spool::release(self, id)
    }

    fn directory_fsyncs(&self) -> Option<u64> {
        Some(Spool::directory_fsyncs(self))
    }

    fn counts(&self) -> Result<Vec<(&'static str, usize)>, QueueError> {
        Spool::counts(self)
    }

    fn probe_write(&self) -> Result<(), QueueError> {
        Spool::probe_write(self)
    }
}

//! Durable mail queue: envelope, queue file format, the queue store contract and its spool
//! backend, and the retry schedule.

pub mod backend;
pub mod dsn;
pub mod envelope;
pub mod error;
pub mod format;
pub mod in_flight;
pub mod retransmit;
pub mod schedule;
pub mod spool;
pub mod wake;

pub use crate::mail::{is_valid_queue_id, new_queue_id};
pub use backend::postgres::PgQueue;
pub use backend::{Listing, QueueEntry, QueueState, QueueStore, RecoveryReport, Unreadable};
pub use envelope::{
    Envelope, NoticeAction, Recipient, RecipientStatus, TlsDemand, ENVELOPE_VERSION,
};
pub use error::QueueError;
pub use format::FormatError;
pub use in_flight::{InFlight, Reservation};
pub use schedule::{after_failure, Clock, Decision, ManualClock, RetryPolicy, SystemClock};
pub use spool::{Spool, Staged, Staging};
pub use wake::{News, Slot, Taker, Wake};

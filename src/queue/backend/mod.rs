//! The durable queue as a contract: [`QueueStore`] says what every queue backend guarantees, and
//! the callers (cleanup, the queue runner, the admin endpoint, `sealpost queue`) reach the queue
//! only through it. The filesystem spool ([`crate::queue::Spool`], see [`spool`]) is the default
//! backend, PostgreSQL ([`postgres`]) the one for several nodes; `tests/suite/queue_store_suite/` is the
//! suite every backend must pass.
//!
//! A message is in one of four states, and moves between them only as follows:
//!
//! ```text
//! enqueue ──▶ incoming ──claim──▶ active ──defer──▶ deferred
//!               ▲  │               │  ▲                │
//!               │  │               │  └─────claim──────┤
//!               ├──┼──recover──────┘                   │
//!               ├──┼─────────────flush─────────────────┤
//!               │  └──hold──▶ hold ◀───────hold────────┘
//!               └────release────┘
//!             active ──complete──▶ (gone)       any ──delete──▶ (gone)
//! ```
//!
//! A held message (`postsuper -h`) is never claimed, flushed or reported as waiting or due: it
//! stays where it is until `release` (or `delete`); `recover` leaves it alone.
//!
//! Staged content (a message still arriving) and half-written entries belong to no state: they
//! are never listed or claimed, and `recover` removes them. A stored message that fails
//! verification when claimed is set apart (quarantined) and is never returned again.
//!
//! Every method is blocking; async callers use `spawn_blocking`. Several instances (processes)
//! may share one backend's storage: a message is in one state at a time, and of concurrent
//! claims of one message exactly one succeeds.
//!
//! **Nodes and leases.** A backend whose storage is shared by several machines (PostgreSQL,
//! [`postgres`]) runs each instance as a *node* with an id that stays the same across its
//! restarts. A claim is then a lease held by the claiming node and renewed while that node
//! runs; `defer`, `checkpoint` and `complete` act only on a message the calling node holds.
//! When a node stops, its leases expire, and its active messages count as waiting again:
//! `incoming_ids` and `waiting_size` report them and `claim` takes them (so the runner's
//! periodic scan of any node picks them up), and `recover` requeues them. `recover` also
//! requeues the messages held by the node's own id (from before its restart), and never one
//! that another live node holds. A backend on one machine (the spool) has a single node: a claim
//! holds the message until `complete`, `defer` or a `recover` at the next start.

pub mod postgres;
pub mod spool;

use std::fmt;

use serde::{Deserialize, Serialize};

use super::envelope::Envelope;
use super::error::QueueError;
use super::format::Part;
use super::retransmit::Fingerprinter;
use super::spool::Staging;

/// The durable states a message can be in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueState {
    Incoming,
    Active,
    Deferred,
    /// Put aside by an administrator: never delivered until released.
    Hold,
}

impl QueueState {
    pub const ALL: [QueueState; 4] = [
        QueueState::Incoming,
        QueueState::Active,
        QueueState::Deferred,
        QueueState::Hold,
    ];

    /// The name of the state (also the spool's directory), and the Display form.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueState::Incoming => "incoming",
            QueueState::Active => "active",
            QueueState::Deferred => "deferred",
            QueueState::Hold => "hold",
        }
    }
}

impl fmt::Display for QueueState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What `recover` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Staged or partly written entries removed (for the spool, files in `tmp/`).
    pub removed_tmp: usize,
    /// Messages moved from active back to incoming.
    pub requeued: usize,
}

/// One message as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueEntry {
    pub state: QueueState,
    pub envelope: Envelope,
    /// Size of the message in bytes (not of what the backend stores).
    pub size: u64,
}

/// A queued message that `scan` could not read.
#[derive(Debug)]
pub struct Unreadable {
    pub state: QueueState,
    pub id: String,
    pub error: QueueError,
}

/// Everything in the queue: readable entries and the messages whose envelope could not be read.
#[derive(Debug, Default)]
pub struct Listing {
    pub entries: Vec<QueueEntry>,
    pub unreadable: Vec<Unreadable>,
}

/// A durable mail queue. "Durable" means on stable storage: it survives a crash of the process
/// or the machine the moment the method returns `Ok`.
///
/// Every method that takes an id refuses one that is not a valid queue id
/// (`is_valid_queue_id`) with [`QueueError::InvalidId`]. A call that fails with `InvalidId`,
/// `Exists`, `NotActive` or `Busy` changed nothing. After another error the call may be partly
/// done (a `defer` may have stored the envelope without moving the message, a `flush` may have
/// moved some messages), but no message is lost, none is in two states, and each envelope is
/// one that was stored. There are no default methods: each backend states how it keeps every
/// guarantee.
pub trait QueueStore: Send + Sync {
    /// Where the queue lives, for logs and messages (the spool: its directory).
    fn location(&self) -> String;

    /// Whether every message is stored encrypted: nothing this backend writes (staged content
    /// included) holds a message or its content key in clear. Envelopes stay readable.
    fn is_encrypted(&self) -> bool;

    /// Startup, before any runner of this queue starts: removes what was staged or half written
    /// when the previous process stopped (never acknowledged), and moves every active message
    /// back to incoming with the envelope its last `defer` or `checkpoint` stored. With nodes
    /// (see the module docs): only the active messages of this node's id and those whose lease
    /// has expired, never one another live node holds. Durable when it returns.
    fn recover(&self) -> Result<RecoveryReport, QueueError>;

    /// Starts staging the content of a message being received. The content is sealed chunk by
    /// chunk under a key that exists only in memory, so whatever a crash leaves behind cannot be
    /// read; it is removed when the [`Staging`] (or the `Staged` it becomes) is dropped, and by
    /// `recover`. `fingerprint`, when given, sees every byte written.
    fn stage(&self, fingerprint: Option<Fingerprinter>) -> Result<Staging, QueueError>;

    /// Queues a new message in incoming. Returns `Ok` only after the envelope and the message
    /// are on stable storage: the caller may then acknowledge it (answer 250). On error nothing
    /// is queued — with one exception: a backend reached over a network that gives up waiting
    /// for its commit to be acknowledged ([`QueueError::Unavailable`]) cannot know whether the
    /// commit happened; the message may then be queued although the caller refused it (a resend
    /// by the client makes a duplicate, never a loss). [`QueueError::Exists`] when a message
    /// with this id is incoming, active or deferred.
    fn enqueue(&self, envelope: &Envelope, message: &[u8]) -> Result<(), QueueError>;

    /// Like [`QueueStore::enqueue`] for a message made of `parts` in order (e.g. a new header in
    /// front of staged content), streamed rather than held in memory. Same guarantees.
    fn enqueue_parts(&self, envelope: &Envelope, parts: &[Part]) -> Result<(), QueueError>;

    /// Takes a waiting message (incoming or deferred, whatever its `next_attempt`; with nodes,
    /// also one active under an expired lease) for delivery: it becomes active (held by this
    /// node) and its envelope and message are returned exactly as last stored.
    ///
    /// Of concurrent claims of one id, in this process or another sharing the storage, exactly
    /// one gets it. `Ok(None)` when it is not waiting: unknown, already active (claimed), held,
    /// or deleted. A stored message that fails verification or decryption is quarantined (counted
    /// as "corrupt", never listed, claimed or returned again) and reported as
    /// [`QueueError::Corrupt`].
    fn claim(&self, id: &str) -> Result<Option<(Envelope, Vec<u8>)>, QueueError>;

    /// Stores a new message like `enqueue_parts`, but claimed by this node at once, as if
    /// `claim` had followed; returns it as `claim` would. Durable (as claimed) when it returns.
    /// It costs no more than `enqueue_parts` (no rename or round trip more): the cleanup stage
    /// uses it, before the client hears its 250, for a message that finds a delivery slot free
    /// (see `delivery::runner::at_once`).
    fn enqueue_claimed(
        &self,
        envelope: &Envelope,
        parts: &[Part],
    ) -> Result<(Envelope, Vec<u8>), QueueError>;

    /// Stores the updated `envelope` of an active message, with its `message` as claimed, and
    /// moves it to deferred. Returns only after both are on stable storage.
    /// [`QueueError::NotActive`] (and nothing changes) when the message is not active.
    fn defer(&self, envelope: &Envelope, message: &[u8]) -> Result<(), QueueError>;

    /// Stores the updated `envelope` of an active message that stays active (progress made in
    /// the middle of a delivery). Returns only after it is on stable storage; a `recover` after
    /// a crash requeues the message with this envelope. [`QueueError::NotActive`] (and nothing
    /// changes) when the message is not active.
    fn checkpoint(&self, envelope: &Envelope, message: &[u8]) -> Result<(), QueueError>;

    /// Removes an active message whose recipients are all done; the removal is durable when it
    /// returns. [`QueueError::NotActive`] when it is not active (completed already, deleted, or
    /// never claimed).
    fn complete(&self, id: &str) -> Result<(), QueueError>;

    /// Every incoming, active, deferred and held message (ordered by state as in
    /// [`QueueState::ALL`], then by id), from the envelopes only; messages whose envelope cannot
    /// be read are reported apart. Quarantined messages are not listed.
    fn scan(&self) -> Result<Listing, QueueError>;

    /// The readable entries of [`QueueStore::scan`].
    fn list(&self) -> Result<Vec<QueueEntry>, QueueError>;

    /// Ids of incoming messages, oldest first (ids sort by time). With nodes, also the active
    /// messages whose lease has expired (their node stopped): they are waiting again. Never a
    /// held message.
    fn incoming_ids(&self) -> Result<Vec<String>, QueueError>;

    /// Deferred ids with their `next_attempt` (unix seconds), in id order. One whose envelope
    /// cannot be read is reported as due at 0, so that a claim quarantines it promptly. Never a
    /// held message.
    fn deferred(&self) -> Result<Vec<(String, i64)>, QueueError>;

    /// The size of a waiting (incoming or deferred, or with nodes active under an expired
    /// lease) message, what a claim would load into memory; `None` when there is none with this
    /// id (held, or the id is invalid) or its envelope is unreadable.
    fn waiting_size(&self, id: &str) -> Option<u64>;

    /// Moves every deferred message to incoming so that it is tried now (`postqueue -f`);
    /// returns how many moved. Durable when it returns. Held messages stay held.
    fn flush(&self) -> Result<usize, QueueError>;

    /// Deletes a message in any state, held included (`postsuper -d`); `false` when there is
    /// none with this id. Durable when it returns. Deleting an active message does not stop a
    /// delivery in progress; its later `defer`, `checkpoint` or `complete` fails with
    /// [`QueueError::NotActive`].
    fn delete(&self, id: &str) -> Result<bool, QueueError>;

    /// Holds a waiting message (incoming or deferred; with nodes, also one active under an
    /// expired lease) (`postsuper -h`): it moves to hold, with its envelope unchanged, and is
    /// never claimed, flushed, or reported by `incoming_ids`, `deferred` or `waiting_size` until
    /// released; `recover` leaves it alone. Durable when it returns: from then on no claim, in
    /// any process or node sharing the storage, takes it. `false` when there is no waiting
    /// message with this id (unknown, deleted, or held already). [`QueueError::Busy`] (and
    /// nothing changes) when it is active, being delivered: an attempt in progress is not
    /// interrupted; hold it again once the attempt ends.
    fn hold(&self, id: &str) -> Result<bool, QueueError>;

    /// Releases a held message (`postsuper -H`): it moves to incoming with the release time
    /// recorded in its envelope (`released_at`; nothing else changes), so it is due at once
    /// whatever its `next_attempt` (as after `flush`), a running runner takes it at its next
    /// listing of the queue, and its queue lifetime starts again at the release (time on hold
    /// never makes it expire untried). Durable when it returns. `false` when no message with
    /// this id is held.
    fn release(&self, id: &str) -> Result<bool, QueueError>;

    /// Directory fsyncs made so far, for a backend that makes changes durable that way (the
    /// spool); `None` for others.
    fn directory_fsyncs(&self) -> Option<u64>;

    /// How many messages are in each state, in this order: "incoming", "active", "deferred",
    /// "hold", and "corrupt" (quarantined).
    fn counts(&self) -> Result<Vec<(&'static str, usize)>, QueueError>;

    /// Writes something small to stable storage and removes it again: `Ok` means an `enqueue`
    /// could succeed right now (what `/healthz` reports). Changes nothing in the queue.
    fn probe_write(&self) -> Result<(), QueueError>;
}

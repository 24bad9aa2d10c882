//! The inbound SMTP server: a pure session state machine and the socket listener that drives it.

pub mod inbound;
pub mod listener;
pub mod policy;
pub mod receiving;
pub mod session;
pub mod transaction;

pub use policy::{LocalPolicy, Policy};
pub use session::{Action, Session, SessionConfig, SessionFacts};
pub use transaction::{InboundVerdict, Protocol, Transaction};

use crate::mail::Reply;
use crate::queue::{QueueError, Staged, Staging};

/// Where a listener hands what it receives: message content is staged as it arrives, and the
/// finished transaction is queued (250 only after `enqueue` returns a queue id). The cleanup stage
/// implements it; the listener knows nothing of rules, encryption or the spool's layout, and any
/// other listener that accepts messages can hand them over the same way.
pub trait Receiver: Send + Sync + 'static {
    /// Starts staging the content of a new message.
    fn stage(&self) -> Result<Staging, QueueError>;

    /// Writes the message durably; blocking (call it off the async reactor). On error nothing
    /// is queued and the client gets the reply.
    fn enqueue(&self, tx: &Transaction, staged: Staged) -> Result<String, Reply>;
}

#[cfg(test)]
mod conversation_tests;

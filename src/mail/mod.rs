//! Mail primitives every layer shares: addresses, replies, DSN parameters, queue ids and how bare
//! line ends are treated. This module depends on nothing else in the crate, so configuration,
//! rules, the queue, the store and the protocols can all use it without importing each other.

pub mod address;
pub mod domains;
pub mod dsn;
pub mod id;
pub mod reply;

pub use address::domain_of;
pub use domains::DomainSet;
pub use id::{is_valid_queue_id, new_queue_id};
pub use reply::Reply;

/// What to do with a bare CR or LF in message content (`bare_newline` in the config).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BareNewline {
    /// Read to the real end of data, then refuse the message (550 5.5.2). The default.
    #[default]
    Reject,
    /// Store each bare CR or LF as CRLF and accept the message.
    Normalize,
}

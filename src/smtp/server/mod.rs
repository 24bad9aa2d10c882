//! The inbound SMTP server: a pure session state machine and the socket listener that drives it.

pub mod inbound;
pub mod limits;
pub mod listener;
pub mod policy;
pub mod receiving;
pub mod session;
pub mod transaction;

pub use policy::{LocalPolicy, Policy};
pub use session::{Action, Session, SessionConfig, SessionFacts};
pub use transaction::{Protocol, Transaction};

#[cfg(test)]
mod conversation_tests;

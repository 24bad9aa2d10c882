//! The inbound SMTP server: a pure session state machine and the socket listener that drives it.

pub mod transaction;

pub use transaction::{Protocol, Transaction};

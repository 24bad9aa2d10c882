//! The outbound SMTP client: connect, EHLO, STARTTLS, and send transactions (pipelined when offered).

mod connection;
pub mod wire;

pub use connection::{ClientError, ClientSettings, Connection, RcptResult, TlsMode};

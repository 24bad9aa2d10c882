//! sealpost: a mail transfer agent with TLS everywhere and encryption by policy.
#![forbid(unsafe_code)]

pub mod dns;
pub mod queue;
pub mod smtp;
pub mod tls;

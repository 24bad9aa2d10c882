//! SMTP: protocol pieces, the inbound server and the outbound client.

pub mod client;
pub mod proto;
pub mod server;

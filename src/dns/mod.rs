//! DNS lookups for routing: MX hosts (RFC 5321 §5.1, RFC 7505) and their addresses, via hickory.

mod error;
mod mx;
mod resolver;

pub use error::DnsError;
pub use mx::MxHost;
pub use resolver::Resolver;

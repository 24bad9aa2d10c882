//! DNS lookups for routing: MX hosts (RFC 5321 §5.1, RFC 7505) and their addresses, via hickory;
//! and, through a validating resolver, DNSSEC-validated TLSA and MX lookups for DANE (RFC 7672).
//!
//! DNSSEC is validated here, in process, by hickory (`dnssec-aws-lc-rs`, the same crypto backend
//! as TLS), from a trust anchor sealpost holds: the IANA root keys by default, or a file of
//! DNSKEY records. The alternative, trusting the AD bit of a validating resolver (Postfix's
//! way), would make security depend on the path to that resolver and on its configuration;
//! validating locally needs only the anchor and works with any recursive resolver that passes
//! DNSSEC records through (DO bit).

mod error;
mod mx;
mod resolver;
mod tlsa;
pub mod tlsa_record;

pub use error::DnsError;
pub use mx::MxHost;
pub use resolver::{describe_nameservers, Resolver};
pub use tlsa::{AddressAnswer, TlsaAnswer};
pub use tlsa_record::Tlsa;

//! The licensing service (DESIGN.md §7): a reader who authenticated presents a protected
//! message's publishing license and a certificate, and gets a use license holding the content
//! key wrapped to that certificate's key. Who is asking is proven, never declared
//! (`identity`); the decision is a pure function (`decision::decide`); the network side
//! (`http`) only gathers its inputs and sends its answer.

pub mod access;
pub mod client;
pub mod decision;
pub mod http;
pub mod identity;
pub mod revocations;
pub mod service;
pub mod session;

pub use decision::{
    decide, Policy, ReaderKeySource, Refusal, Request, RevocationList, Revocations,
};

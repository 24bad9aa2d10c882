//! The licensing service of rights-protected mail: who is asking, what they may open, and the use
//! licenses that let them open it.

pub mod http;
pub mod identity;

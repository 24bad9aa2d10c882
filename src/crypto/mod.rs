//! Message cryptography: S/MIME (CMS EnvelopedData / AuthEnvelopedData) and the keys it uses.
//!
//! Every RSA private-key operation goes through aws-lc-rs (constant time); see docs/crypto.md.

pub mod keys;
mod pkcs12;
pub mod rms;
pub mod smime;
pub mod smime_pki;

//! Cryptography: S/MIME (CMS EnvelopedData / AuthEnvelopedData), rights protection, the sealed
//! records and chunks that the store and the queue keep at rest, key files, and certificate
//! generation for a test PKI.
//!
//! Every RSA private-key operation goes through aws-lc-rs (constant time); see docs/crypto.md.

pub mod keyfile;
pub mod keys;
mod pkcs12;
pub mod pki;
pub mod rms;
pub mod sealing;
pub mod smime;
pub mod smime_pki;

//! Where a key-encryption key of the store's hierarchy (a root or availability key) lives: a key
//! file, or an AES-256 key in a PKCS#11 token named by a `pkcs11:` URI. Opening one is the
//! store's business (`store::kek`); this is only the reference, as the configuration names it.

use std::fmt;
use std::path::PathBuf;

use super::{Pkcs11Config, Pkcs11Uri};

/// A root or availability key as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KekRef {
    /// A `sealpost-key-v1` file.
    File(PathBuf),
    /// An AES key in a token, reached through the configured module and PIN.
    Token {
        pkcs11: Pkcs11Config,
        uri: Pkcs11Uri,
    },
}

impl KekRef {
    /// The file, for a file key.
    pub fn file(&self) -> Option<&PathBuf> {
        match self {
            KekRef::File(p) => Some(p),
            KekRef::Token { .. } => None,
        }
    }
}

impl fmt::Display for KekRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KekRef::File(p) => write!(f, "{}", p.display()),
            KekRef::Token { uri, .. } => write!(f, "{uri}"),
        }
    }
}

//! Opened key-encryption keys of the hierarchy (root and availability keys): a key read from its
//! file, or a handle on an AES key that stays in its PKCS#11 token, where it wraps and unwraps.
//! Both make the same AES Key Wrap (RFC 3394), so a policy may mix them freely.

use std::sync::Arc;

use cryptoki::object::ObjectHandle;
use sha2::{Digest, Sha256};

use crate::crypto::keyfile::read_key_file;
use crate::crypto::sealing::SecretKey;
use crate::keys::{KekRef, KeyError, Token};

/// Why a key could not be used.
#[derive(Debug)]
pub enum KekError {
    /// Not reachable for a system reason (file missing, module, token, PIN, object): the
    /// availability key may stand in.
    Unavailable(String),
    /// Reached, but it refused the wrap (wrong key, altered wrap): an integrity alarm.
    Refused(String),
}

impl std::fmt::Display for KekError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KekError::Unavailable(s) | KekError::Refused(s) => f.write_str(s),
        }
    }
}

/// A key-encryption key ready to wrap and unwrap.
pub enum Kek {
    File(SecretKey),
    Token {
        token: Arc<Token>,
        handle: ObjectHandle,
        id: String,
    },
}

fn token_err(e: KeyError) -> KekError {
    match e {
        KeyError::Crypto(s) => KekError::Refused(s),
        other => KekError::Unavailable(other.to_string()),
    }
}

impl Kek {
    /// Opens the key a reference names: reads the file, or finds the key in its token (logging
    /// in on first use).
    pub fn open(r: &KekRef) -> Result<Kek, KekError> {
        match r {
            KekRef::File(path) => read_key_file(path)
                .map(Kek::File)
                .map_err(|e| KekError::Unavailable(e.to_string())),
            KekRef::Token { pkcs11, uri } => {
                let token = Token::open(pkcs11, &uri.token).map_err(token_err)?;
                let handle = token.find_secret_key(uri).map_err(token_err)?;
                let id = token_key_id(&token, handle).map_err(token_err)?;
                Ok(Kek::Token { token, handle, id })
            }
        }
    }

    /// Generates a new key in the token `r` names (refused for a file reference).
    pub fn generate(r: &KekRef) -> Result<Kek, KeyError> {
        let KekRef::Token { pkcs11, uri } = r else {
            return Err(KeyError::Refused("not a pkcs11: reference".into()));
        };
        let token = Token::open(pkcs11, &uri.token)?;
        let handle = token.generate_aes_kek(uri)?;
        let id = token_key_id(&token, handle)?;
        Ok(Kek::Token { token, handle, id })
    }

    /// The key's public name, the one wraps in the index are filed under. A file key's id
    /// hashes the key itself; a token key's id hashes what the token makes of a fixed input,
    /// since its value never leaves the token. Neither reveals the key.
    pub fn id(&self) -> String {
        match self {
            Kek::File(k) => k.id(),
            Kek::Token { id, .. } => id.clone(),
        }
    }

    /// AES Key Wrap of `key` (in the token for a token key).
    pub fn wrap(&self, key: &SecretKey) -> Result<Vec<u8>, KekError> {
        match self {
            Kek::File(k) => k.wrap(key).map_err(|e| KekError::Refused(e.to_string())),
            Kek::Token { token, handle, .. } => {
                token.aes_wrap(*handle, key.as_bytes()).map_err(token_err)
            }
        }
    }

    /// Undoes [`Kek::wrap`]; `Refused` when this key did not make the wrap or it was altered.
    pub fn unwrap_key(&self, wrapped: &[u8]) -> Result<SecretKey, KekError> {
        let refused = || KekError::Refused("the wrap does not open".into());
        match self {
            Kek::File(k) => k.unwrap_key(wrapped).map_err(|_| refused()),
            Kek::Token { token, handle, .. } => {
                let plain = token.aes_unwrap(*handle, wrapped).map_err(token_err)?;
                SecretKey::from_bytes(&plain).ok_or_else(refused)
            }
        }
    }

    /// For a token key: whether the token refuses to reveal its value (CKA_VALUE).
    pub fn token_value_refused(&self) -> Option<Result<bool, KeyError>> {
        match self {
            Kek::File(_) => None,
            Kek::Token { token, handle, .. } => {
                Some(token.secret_attributes_refused(*handle).map(|v| {
                    v.iter()
                        .any(|(name, refused)| *name == "CKA_VALUE" && *refused)
                }))
            }
        }
    }
}

/// SHA-256("sealpost token key id" ‖ the token's wrap of an all-zero key), first 8 bytes in
/// hex: the same for the same key every time (AES Key Wrap is deterministic).
fn token_key_id(token: &Token, handle: ObjectHandle) -> Result<String, KeyError> {
    let check = token.aes_wrap(handle, &[0u8; 32])?;
    let mut h = Sha256::new();
    h.update(b"sealpost token key id\0");
    h.update(&check);
    Ok(hex::encode(&h.finalize()[..8]))
}

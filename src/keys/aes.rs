//! AES-256 key-encryption keys in a token: generated there (sensitive, never extractable) and
//! used there to wrap and unwrap 256-bit keys with AES Key Wrap (RFC 3394, `CKM_AES_KEY_WRAP`),
//! the same wrap a key file makes, so token and file keys produce interchangeable wraps.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use zeroize::Zeroizing;

use super::token::object_template;
use super::{KeyError, Pkcs11Uri, Token};

/// Length of the keys wrapped: 256 bits.
const KEY_LEN: usize = 32;

fn secret_template(uri: &Pkcs11Uri) -> Vec<Attribute> {
    let mut t = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
    ];
    t.extend(object_template(uri));
    t
}

/// A short-lived session object holding a key in clear for the token to wrap or hand back.
fn transient(value: Option<&[u8]>) -> Vec<Attribute> {
    let mut t = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(false),
        Attribute::Extractable(true),
    ];
    // An unwrapped key's length comes from the wrap; the token refuses to be told it.
    if let Some(v) = value {
        t.push(Attribute::Value(v.to_vec()));
    }
    t
}

impl Token {
    /// The one AES key the URI names.
    pub fn find_secret_key(&self, uri: &Pkcs11Uri) -> Result<ObjectHandle, KeyError> {
        let found =
            self.with_session("finding the key", |s| s.find_objects(&secret_template(uri)))?;
        match found.as_slice() {
            [one] => Ok(*one),
            [] => Err(KeyError::NotFound(uri.to_string())),
            _ => Err(KeyError::Token {
                token: self.label().to_string(),
                problem: format!("{uri} names {} keys; add id= to choose one", found.len()),
            }),
        }
    }

    /// Generates an AES-256 key-encryption key on the token, labelled and identified as `uri`
    /// says: sensitive, never extractable, usable only to wrap and unwrap. Refuses a label or id
    /// already taken.
    pub fn generate_aes_kek(&self, uri: &Pkcs11Uri) -> Result<ObjectHandle, KeyError> {
        self.ensure_unused(uri)?;
        let mut template = vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen((KEY_LEN as u64).into()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Wrap(true),
            Attribute::Unwrap(true),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
        ];
        template.extend(object_template(uri));
        self.with_session("AES key generation", |s| {
            s.generate_key(&Mechanism::AesKeyGen, &template)
        })
    }

    /// AES Key Wrap of the 256-bit `key` under the token key `kek`, done in the token.
    pub fn aes_wrap(&self, kek: ObjectHandle, key: &[u8; KEY_LEN]) -> Result<Vec<u8>, KeyError> {
        self.with_session("AES key wrap", |s| {
            let object = s.create_object(&transient(Some(key)))?;
            let wrapped = s.wrap_key(&Mechanism::AesKeyWrap, kek, object);
            let destroyed = s.destroy_object(object);
            let wrapped = wrapped?;
            destroyed?;
            Ok(wrapped)
        })
    }

    /// Undoes [`Token::aes_wrap`] in the token and returns the unwrapped 256-bit key. A wrap
    /// made by another key or altered is refused by the token's integrity check.
    pub fn aes_unwrap(
        &self,
        kek: ObjectHandle,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let value = self.with_session("AES key unwrap", |s| {
            let object = s.unwrap_key(&Mechanism::AesKeyWrap, kek, wrapped, &transient(None))?;
            let read = s.get_attributes(object, &[AttributeType::Value]);
            let destroyed = s.destroy_object(object);
            let attrs = read?;
            destroyed?;
            Ok(attrs.into_iter().find_map(|a| match a {
                Attribute::Value(v) => Some(Zeroizing::new(v)),
                _ => None,
            }))
        })?;
        match value {
            Some(v) if v.len() == KEY_LEN => Ok(v),
            _ => Err(KeyError::Crypto(
                "the token did not return a 256-bit key".into(),
            )),
        }
    }
}

//! Fuzz target: the S/MIME reader (MIME framing, base64/PEM/DER, CMS EnvelopedData and
//! AuthEnvelopedData parsing, key transport and content decryption) with the fixture key of
//! bob@fabrikam.test, once with its certificate and once without.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sealpost::crypto::smime::{decrypt_message, is_encrypted, DecryptError, DecryptKey};

const PKI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/pki/smime");

struct Keys {
    with_cert: DecryptKey,
    bare: DecryptKey,
}

fn keys() -> Option<&'static Keys> {
    static KEYS: OnceLock<Option<Keys>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let key = Path::new(PKI).join("bob@fabrikam.test.key");
        let cert = Path::new(PKI).join("bob@fabrikam.test.crt");
        Some(Keys {
            with_cert: DecryptKey::from_pem(&key, Some(&cert)).ok()?,
            bare: DecryptKey::from_pem(&key, None).ok()?,
        })
    })
    .as_ref()
}

/// Every error is one of the documented kinds, says something, and a "not for you" names who
/// the message is for.
fn check_error(e: &DecryptError) {
    assert!((3..=9).contains(&e.exit_code()));
    assert!(!e.to_string().is_empty());
    if let DecryptError::NotForYou { recipients } = e {
        assert!(!recipients.is_empty());
    }
}

fuzz_target!(|data: &[u8]| {
    let encrypted = is_encrypted(data);
    let Some(keys) = keys() else {
        return;
    };
    // A bare CMS structure (DER/BER or PEM) has no MIME header to recognise it by.
    let bare = data.first() == Some(&0x30) || data.trim_ascii_start().starts_with(b"-----BEGIN");
    for key in [&keys.with_cert, &keys.bare] {
        match decrypt_message(data, key) {
            // What opens as S/MIME is also seen as encrypted, so it is never encrypted twice.
            Ok(_) => assert!(bare || encrypted, "decrypted, yet not seen as encrypted"),
            Err(e) => check_error(&e),
        }
    }
});

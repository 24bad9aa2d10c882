//! Binding keys and records to their place: the versioned formats that tie a mailbox key to its
//! mailbox and a message's content key, metadata and chunks to its mailbox and message id.
//!
//! A *bound* wrap is `0x02 ‖ AES-KW(KEK, key)` (41 bytes), where the KEK is derived from the
//! wrapping key and the place: HMAC-SHA256(wrapping key, label ‖ u32 BE len ‖ mailbox
//! [‖ u32 BE len ‖ message id]). It opens only for the mailbox (and message) it was made for.
//! A *legacy* wrap is the plain 40-byte AES-KW that sealpost wrote before messages were bound to
//! their mailbox; it is accepted only where the caller says legacy wraps still are.

use crate::crypto::sealing::{CryptoError, SecretKey, WRAPPED_LEN};

/// The first byte of a bound wrap.
const BOUND: u8 = 2;
/// Length of a bound wrap.
const BOUND_WRAP_LEN: usize = 1 + WRAPPED_LEN;

const MAILBOX_KEY_LABEL: &[u8] = b"sealpost mailbox key v2\0";
const CONTENT_KEY_LABEL: &[u8] = b"sealpost content key v2\0";
const META_LABEL: &[u8] = b"sealpost meta v2\0";
const CHUNK_LABEL: &[u8] = b"sealpost blob v2\0";

/// How a wrap (and so the message record it belongs to) is tied to its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// Plain AES-KW; the metadata's AAD holds the message id only.
    Legacy,
    /// Bound to the mailbox (and, for a message, its id).
    Mailbox,
}

/// Why a wrap was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindError {
    /// A legacy wrap where legacy wraps are no longer accepted.
    LegacyRefused,
    /// It does not open for this place: moved, copied from another row, or altered.
    NotBound,
}

/// The binding a stored wrap claims, judged by its form alone (`NotBound` if it has neither form;
/// `LegacyRefused` for a legacy wrap when `legacy` is false). Opening it checks the claim.
pub fn claimed(wrapped: &[u8], legacy: bool) -> Result<Binding, BindError> {
    match (wrapped.len(), wrapped.first()) {
        (BOUND_WRAP_LEN, Some(&BOUND)) => Ok(Binding::Mailbox),
        (WRAPPED_LEN, _) if legacy => Ok(Binding::Legacy),
        (WRAPPED_LEN, _) => Err(BindError::LegacyRefused),
        _ => Err(BindError::NotBound),
    }
}

/// `u32 BE len ‖ bytes` for each part.
fn place(parts: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        out.extend_from_slice(&(p.len() as u32).to_be_bytes());
        out.extend_from_slice(p.as_bytes());
    }
    out
}

fn wrap(
    key: &SecretKey,
    label: &[u8],
    parts: &[&str],
    inner: &SecretKey,
) -> Result<Vec<u8>, CryptoError> {
    let mut out = vec![BOUND];
    out.extend(key.derive(label, &place(parts)).wrap(inner)?);
    Ok(out)
}

fn unwrap(
    key: &SecretKey,
    label: &[u8],
    parts: &[&str],
    wrapped: &[u8],
    legacy: bool,
) -> Result<(SecretKey, Binding), BindError> {
    let binding = claimed(wrapped, legacy)?;
    let opened = match binding {
        Binding::Mailbox => key.derive(label, &place(parts)).unwrap_key(&wrapped[1..]),
        Binding::Legacy => key.unwrap_key(wrapped),
    };
    opened
        .map(|k| (k, binding))
        .map_err(|_| BindError::NotBound)
}

/// A mailbox key wrapped under its policy key, bound to the mailbox.
pub fn wrap_mailbox_key(
    policy_key: &SecretKey,
    mailbox: &str,
    key: &SecretKey,
) -> Result<Vec<u8>, CryptoError> {
    wrap(policy_key, MAILBOX_KEY_LABEL, &[mailbox], key)
}

/// Opens a mailbox key's wrap for `mailbox`.
pub fn unwrap_mailbox_key(
    policy_key: &SecretKey,
    mailbox: &str,
    wrapped: &[u8],
    legacy: bool,
) -> Result<(SecretKey, Binding), BindError> {
    unwrap(policy_key, MAILBOX_KEY_LABEL, &[mailbox], wrapped, legacy)
}

/// A message's content key wrapped under its mailbox key, bound to mailbox and message id.
pub fn wrap_content_key(
    mailbox_key: &SecretKey,
    mailbox: &str,
    id: &str,
    key: &SecretKey,
) -> Result<Vec<u8>, CryptoError> {
    wrap(mailbox_key, CONTENT_KEY_LABEL, &[mailbox, id], key)
}

/// Opens a content key's wrap for message `id` of `mailbox`.
pub fn unwrap_content_key(
    mailbox_key: &SecretKey,
    mailbox: &str,
    id: &str,
    wrapped: &[u8],
    legacy: bool,
) -> Result<(SecretKey, Binding), BindError> {
    unwrap(
        mailbox_key,
        CONTENT_KEY_LABEL,
        &[mailbox, id],
        wrapped,
        legacy,
    )
}

/// The AAD of a message's sealed metadata.
pub fn meta_context(binding: Binding, mailbox: &str, id: &str) -> Vec<u8> {
    match binding {
        Binding::Legacy => [&b"sealpost meta v1\0"[..], id.as_bytes()].concat(),
        Binding::Mailbox => [META_LABEL, &place(&[mailbox, id])].concat(),
    }
}

/// The context every content chunk of a mailbox-bound blob (kind 2) binds; a kind 1 blob's chunks
/// bind the message id alone.
pub fn chunk_context(mailbox: &str, id: &str) -> Vec<u8> {
    [CHUNK_LABEL, &place(&[mailbox, id])].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretKey {
        SecretKey::generate().unwrap()
    }

    #[test]
    fn content_keys_open_only_for_their_mailbox_and_id() {
        let (mk, other, ck) = (key(), key(), key());
        let w = wrap_content_key(&mk, "carol@a.test", "M1", &ck).unwrap();
        assert_eq!((w.len(), w[0]), (BOUND_WRAP_LEN, BOUND));
        for legacy in [true, false] {
            let (k, b) = unwrap_content_key(&mk, "carol@a.test", "M1", &w, legacy).unwrap();
            assert_eq!((k.as_bytes(), b), (ck.as_bytes(), Binding::Mailbox));
        }
        for (k, mailbox, id) in [
            (&mk, "alice@a.test", "M1"),
            (&mk, "carol@a.test", "M2"),
            (&mk, "carol@a.test.", "M1"),
            (&other, "carol@a.test", "M1"),
        ] {
            let e = unwrap_content_key(k, mailbox, id, &w, true).unwrap_err();
            assert_eq!(e, BindError::NotBound, "{mailbox} {id}");
        }
        // The parts are length-prefixed: moving a byte from the mailbox to the id changes the KEK.
        let w2 = wrap_content_key(&mk, "ab", "c", &ck).unwrap();
        assert!(unwrap_content_key(&mk, "a", "bc", &w2, true).is_err());
        // Stripping the version byte does not make a legacy wrap.
        assert!(unwrap_content_key(&mk, "carol@a.test", "M1", &w[1..], true).is_err());
        let mut flipped = w.clone();
        flipped[7] ^= 1;
        assert!(unwrap_content_key(&mk, "carol@a.test", "M1", &flipped, true).is_err());
    }

    #[test]
    fn legacy_wraps_open_only_while_accepted() {
        let (pk, mk) = (key(), key());
        let legacy = pk.wrap(&mk).unwrap();
        let (k, b) = unwrap_mailbox_key(&pk, "anyone@a.test", &legacy, true).unwrap();
        assert_eq!((k.as_bytes(), b), (mk.as_bytes(), Binding::Legacy));
        assert_eq!(
            unwrap_mailbox_key(&pk, "carol@a.test", &legacy, false).unwrap_err(),
            BindError::LegacyRefused
        );
        assert_eq!(claimed(&legacy, false), Err(BindError::LegacyRefused));
        for bad in [
            &[][..],
            &[BOUND][..],
            &[0u8; BOUND_WRAP_LEN][..],
            &[BOUND; 39][..],
        ] {
            assert_eq!(claimed(bad, true), Err(BindError::NotBound), "{bad:?}");
        }
    }

    #[test]
    fn mailbox_keys_open_only_for_their_mailbox() {
        let (pk, mk) = (key(), key());
        let w = wrap_mailbox_key(&pk, "carol@a.test", &mk).unwrap();
        let (k, _) = unwrap_mailbox_key(&pk, "carol@a.test", &w, false).unwrap();
        assert_eq!(k.as_bytes(), mk.as_bytes());
        assert!(unwrap_mailbox_key(&pk, "alice@a.test", &w, true).is_err());
        // A content-key wrap for the same place is another kind of wrap.
        let c = wrap_content_key(&pk, "carol@a.test", "", &mk).unwrap();
        assert!(unwrap_mailbox_key(&pk, "carol@a.test", &c, true).is_err());
    }

    #[test]
    fn contexts_bind_mailbox_and_id() {
        let m = |b, mb, id| meta_context(b, mb, id);
        assert_eq!(m(Binding::Legacy, "x", "M1"), b"sealpost meta v1\0M1");
        assert_ne!(
            m(Binding::Mailbox, "carol@a.test", "M1"),
            m(Binding::Mailbox, "alice@a.test", "M1")
        );
        assert_ne!(
            m(Binding::Mailbox, "ab", "c"),
            m(Binding::Mailbox, "a", "bc")
        );
        assert_ne!(
            chunk_context("carol@a.test", "M1"),
            chunk_context("alice@a.test", "M1")
        );
        assert_ne!(chunk_context("carol@a.test", "M1"), b"M1".to_vec());
    }
}

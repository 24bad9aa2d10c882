//! The store's symmetric crypto on aws-lc-rs: 256-bit keys (zeroized), AES-KW key wrapping,
//! AES-GCM sealed records, and chunked AES-256-GCM content with chunk index and final flag in the AAD.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::key_wrap::{KeyEncryptionKey, KeyWrap, AES_256};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Plaintext bytes per content chunk.
pub const CHUNK_SIZE: usize = 64 * 1024;
/// The GCM tag appended to every chunk and sealed record.
pub const TAG_LEN: usize = 16;
/// Length of a wrapped 256-bit key (AES-KW adds 8 bytes).
pub const WRAPPED_LEN: usize = 40;

/// Why a cryptographic operation failed. Deliberately says nothing more than where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("key unwrap failed (wrong key or altered wrap)")]
    Unwrap,
    #[error("authentication failed for chunk {0}")]
    Chunk(u64),
    #[error("content is truncated or malformed")]
    Malformed,
    #[error("sealed record failed authentication")]
    Record,
    #[error("random generator or cipher failure")]
    Internal,
}

/// A 256-bit key: root, availability, policy, mailbox, content or service key. Zeroized on drop,
/// never printed.
#[derive(Clone)]
pub struct SecretKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", self.id())
    }
}

impl SecretKey {
    /// A fresh key from the system's CSPRNG.
    pub fn generate() -> Result<SecretKey, CryptoError> {
        let mut k = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(&mut k[..]).map_err(|_| CryptoError::Internal)?;
        Ok(SecretKey(k))
    }

    /// Takes 32 bytes (the caller zeroizes its copy).
    pub fn from_bytes(bytes: &[u8]) -> Option<SecretKey> {
        let arr: [u8; 32] = bytes.try_into().ok()?;
        Some(SecretKey(Zeroizing::new(arr)))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A public name for the key: the first 8 bytes of SHA-256("sealpost key id" ‖ key), in hex.
    /// Lets the index say which root key made a wrap without revealing the key.
    pub fn id(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"sealpost key id\0");
        h.update(&self.0[..]);
        hex::encode(&h.finalize()[..8])
    }

    /// AES-KW (RFC 3394) of another 256-bit key under this one: 40 bytes.
    pub fn wrap(&self, key: &SecretKey) -> Result<Vec<u8>, CryptoError> {
        let kek =
            KeyEncryptionKey::new(&AES_256, &self.0[..]).map_err(|_| CryptoError::Internal)?;
        let mut out = vec![0u8; WRAPPED_LEN];
        let n = kek
            .wrap(&key.0[..], &mut out)
            .map_err(|_| CryptoError::Internal)?
            .len();
        out.truncate(n);
        Ok(out)
    }

    /// Undoes `wrap`; fails when this is not the key that wrapped it or the wrap was altered.
    pub fn unwrap_key(&self, wrapped: &[u8]) -> Result<SecretKey, CryptoError> {
        if wrapped.len() != WRAPPED_LEN {
            return Err(CryptoError::Unwrap);
        }
        let kek =
            KeyEncryptionKey::new(&AES_256, &self.0[..]).map_err(|_| CryptoError::Internal)?;
        let mut out = Zeroizing::new([0u8; WRAPPED_LEN]);
        let plain = kek
            .unwrap(wrapped, &mut out[..])
            .map_err(|_| CryptoError::Unwrap)?;
        SecretKey::from_bytes(plain).ok_or(CryptoError::Unwrap)
    }

    fn aead(&self) -> Result<LessSafeKey, CryptoError> {
        UnboundKey::new(&AES_256_GCM, &self.0[..])
            .map(LessSafeKey::new)
            .map_err(|_| CryptoError::Internal)
    }

    /// AES-256-GCM with a random nonce: `nonce ‖ ciphertext ‖ tag`. For small records (metadata)
    /// under a long-lived key; `context` is bound as AAD.
    pub fn seal_record(&self, context: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let key = self.aead()?;
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| CryptoError::Internal)?;
        let mut buf = plaintext.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(context),
            &mut buf,
        )
        .map_err(|_| CryptoError::Internal)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(out)
    }

    /// Opens `seal_record` output under the same `context`.
    pub fn open_record(&self, context: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(CryptoError::Record);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Record)?;
        let mut buf = body.to_vec();
        let n = self
            .aead()?
            .open_in_place(nonce, Aad::from(context), &mut buf)
            .map_err(|_| CryptoError::Record)?
            .len();
        buf.truncate(n);
        Ok(buf)
    }

    /// A subkey: HMAC-SHA256 of `label ‖ data` under this key. Gives a key that belongs to one
    /// context (a wrap key that opens only for one mailbox and message); labels keep uses apart.
    pub fn derive(&self, label: &[u8], data: &[u8]) -> SecretKey {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &self.0[..]);
        let mut ctx = aws_lc_rs::hmac::Context::with_key(&key);
        ctx.update(label);
        ctx.update(data);
        let tag = ctx.sign();
        let mut out = Zeroizing::new([0u8; 32]);
        for (o, t) in out.iter_mut().zip(tag.as_ref()) {
            *o = *t;
        }
        SecretKey(out)
    }

    /// HMAC-SHA256 of `context ‖ data` under this key: a tag that says nothing about `data` to
    /// whoever lacks the key, and is the same each time (a lookup key).
    pub fn mac(&self, context: &[u8], data: &[u8]) -> Vec<u8> {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &self.0[..]);
        let mut ctx = aws_lc_rs::hmac::Context::with_key(&key);
        ctx.update(context);
        ctx.update(data);
        ctx.sign().as_ref().to_vec()
    }
}

/// The AAD of one chunk: a label, the length-prefixed context (the message id), the chunk index
/// and the final-chunk flag.
pub(crate) fn chunk_aad(context: &[u8], index: u64, last: bool) -> Vec<u8> {
    let mut aad = Vec::with_capacity(32 + context.len());
    aad.extend_from_slice(b"sealpost chunk v1\0");
    aad.extend_from_slice(&(context.len() as u32).to_be_bytes());
    aad.extend_from_slice(context);
    aad.extend_from_slice(&index.to_be_bytes());
    aad.push(u8::from(last));
    aad
}

/// The nonce of chunk `index`: a counter. Safe because every content key is fresh and used for
/// exactly one message, and content is never re-encrypted under the same key.
pub(crate) fn chunk_nonce(index: u64) -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    n[4..].copy_from_slice(&index.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

/// Length of `seal_chunks` output for a plaintext of `len` bytes.
pub fn sealed_len(len: usize) -> usize {
    let chunks = len.div_ceil(CHUNK_SIZE).max(1);
    len + chunks * TAG_LEN
}

/// The plaintext length of `seal_chunks` output of `sealed` bytes; `None` when no plaintext seals
/// to that length (the last chunk would be shorter than a tag). Inverse of [`sealed_len`].
pub fn opened_len(sealed: u64) -> Option<u64> {
    let tag = TAG_LEN as u64;
    let stride = CHUNK_SIZE as u64 + tag;
    let chunks = sealed.div_ceil(stride);
    let last = sealed.checked_sub(chunks.checked_sub(1)? * stride)?;
    (last >= tag).then(|| sealed - chunks * tag)
}

/// Encrypts `plaintext` in 64 KiB chunks, each `ciphertext ‖ tag`, appended to `out`. An empty
/// plaintext still makes one (final, empty) chunk, so truncation to nothing is detected.
pub fn seal_chunks(
    key: &SecretKey,
    context: &[u8],
    plaintext: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), CryptoError> {
    let aead = key.aead()?;
    out.reserve(sealed_len(plaintext.len()));
    let count = plaintext.len().div_ceil(CHUNK_SIZE).max(1);
    for index in 0..count {
        let start = index * CHUNK_SIZE;
        let end = (start + CHUNK_SIZE).min(plaintext.len());
        let at = out.len();
        out.extend_from_slice(&plaintext[start..end]);
        let last = index + 1 == count;
        let tag = aead
            .seal_in_place_separate_tag(
                chunk_nonce(index as u64),
                Aad::from(chunk_aad(context, index as u64, last)),
                &mut out[at..],
            )
            .map_err(|_| CryptoError::Internal)?;
        out.extend_from_slice(tag.as_ref());
    }
    Ok(())
}

/// Decrypts `seal_chunks` output in place and returns the plaintext. Any altered, dropped,
/// reordered or swapped chunk, and any truncation, fails.
pub fn open_chunks(
    key: &SecretKey,
    context: &[u8],
    mut sealed: Vec<u8>,
) -> Result<Vec<u8>, CryptoError> {
    let aead = key.aead()?;
    let stride = CHUNK_SIZE + TAG_LEN;
    if sealed.len() < TAG_LEN {
        return Err(CryptoError::Malformed);
    }
    let count = sealed.len().div_ceil(stride);
    if sealed.len() - (count - 1) * stride < TAG_LEN {
        return Err(CryptoError::Malformed);
    }
    let mut write = 0;
    for index in 0..count {
        let start = index * stride;
        let end = (start + stride).min(sealed.len());
        let last = index + 1 == count;
        let (body, tag) = sealed[start..end].split_at_mut(end - start - TAG_LEN);
        let n = aead
            .open_in_place_separate_tag(
                chunk_nonce(index as u64),
                Aad::from(chunk_aad(context, index as u64, last)),
                tag,
                body,
            )
            .map_err(|_| CryptoError::Chunk(index as u64))?
            .len();
        sealed.copy_within(start..start + n, write);
        write += n;
    }
    sealed.truncate(write);
    Ok(sealed)
}

/// Opens `seal_chunks` output one chunk at a time, for content too large to hold: each chunk is
/// authenticated before its plaintext is given out, and the final flag in the AAD makes a
/// truncation fail at the chunk where the content was cut.
pub struct ChunkOpener {
    aead: LessSafeKey,
    context: Vec<u8>,
    count: u64,
    next: u64,
}

impl ChunkOpener {
    /// Sealed bytes per chunk (the last one may be shorter).
    pub const STRIDE: usize = CHUNK_SIZE + TAG_LEN;

    /// An opener for `sealed_len` bytes of `seal_chunks` output sealed under `key` and `context`.
    pub fn new(key: &SecretKey, context: &[u8], sealed_len: u64) -> Result<Self, CryptoError> {
        opened_len(sealed_len).ok_or(CryptoError::Malformed)?;
        Ok(ChunkOpener {
            aead: key.aead()?,
            context: context.to_vec(),
            count: sealed_len.div_ceil(Self::STRIDE as u64),
            next: 0,
        })
    }

    /// Goes on at chunk `index` (chunks before it are neither read nor authenticated): for a
    /// range of the content. Past the last chunk is malformed.
    pub fn skip_to(&mut self, index: u64) -> Result<(), CryptoError> {
        if index > self.count {
            return Err(CryptoError::Malformed);
        }
        self.next = index;
        Ok(())
    }

    /// Whether every chunk was opened.
    pub fn finished(&self) -> bool {
        self.next == self.count
    }

    /// Opens the next chunk in place: `chunk` holds exactly its sealed bytes (`STRIDE`, or the
    /// rest for the last one). Returns the plaintext, a prefix of `chunk`.
    pub fn open_next<'c>(&mut self, chunk: &'c mut [u8]) -> Result<&'c [u8], CryptoError> {
        if self.finished() || chunk.len() < TAG_LEN {
            return Err(CryptoError::Malformed);
        }
        let index = self.next;
        let last = index + 1 == self.count;
        let (body, tag) = chunk.split_at_mut(chunk.len() - TAG_LEN);
        let plain = self
            .aead
            .open_in_place_separate_tag(
                chunk_nonce(index),
                Aad::from(chunk_aad(&self.context, index, last)),
                tag,
                body,
            )
            .map_err(|_| CryptoError::Chunk(index))?;
        self.next += 1;
        Ok(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretKey {
        SecretKey::generate().unwrap()
    }

    #[test]
    fn chunks_open_one_by_one_and_any_change_fails_at_its_chunk() {
        let k = key();
        let plain: Vec<u8> = (0..2 * CHUNK_SIZE + 100).map(|i| i as u8).collect();
        let mut sealed = Vec::new();
        seal_chunks(&k, b"ctx", &plain, &mut sealed).unwrap();
        let open_all = |sealed: &mut Vec<u8>, context: &[u8]| -> Result<Vec<u8>, CryptoError> {
            let mut o = ChunkOpener::new(&k, context, sealed.len() as u64)?;
            let mut out = Vec::new();
            for chunk in sealed.chunks_mut(ChunkOpener::STRIDE) {
                out.extend_from_slice(o.open_next(chunk)?);
            }
            assert!(o.finished());
            Ok(out)
        };
        assert_eq!(open_all(&mut sealed.clone(), b"ctx").unwrap(), plain);
        assert_eq!(
            open_all(&mut sealed.clone(), b"other").unwrap_err(),
            CryptoError::Chunk(0)
        );
        let mut altered = sealed.clone();
        altered[ChunkOpener::STRIDE + 3] ^= 1;
        assert_eq!(
            open_all(&mut altered, b"ctx").unwrap_err(),
            CryptoError::Chunk(1)
        );
        // Cut after the second chunk: that chunk was not sealed as the last one.
        let mut cut = sealed[..2 * ChunkOpener::STRIDE].to_vec();
        assert_eq!(
            open_all(&mut cut, b"ctx").unwrap_err(),
            CryptoError::Chunk(1)
        );
    }

    #[test]
    fn wrap_round_trip_and_wrong_key_fails() {
        let (kek, other, k) = (key(), key(), key());
        let w = kek.wrap(&k).unwrap();
        assert_eq!(w.len(), WRAPPED_LEN);
        assert_eq!(kek.unwrap_key(&w).unwrap().as_bytes(), k.as_bytes());
        assert_eq!(other.unwrap_key(&w).unwrap_err(), CryptoError::Unwrap);
        let mut bad = w.clone();
        bad[5] ^= 1;
        assert_eq!(kek.unwrap_key(&bad).unwrap_err(), CryptoError::Unwrap);
        assert_ne!(kek.id(), other.id());
        assert_eq!(kek.id().len(), 16);
    }

    #[test]
    fn macs_are_deterministic_and_keyed() {
        let (k1, k2) = (key(), key());
        let tag = k1.mac(b"ctx\0", b"data");
        assert_eq!(tag.len(), 32);
        assert_eq!(tag, k1.mac(b"ctx\0", b"data"));
        assert_ne!(tag, k2.mac(b"ctx\0", b"data"));
        assert_ne!(tag, k1.mac(b"ctx\0", b"date"));
        assert_ne!(tag, k1.mac(b"other\0", b"data"));
    }

    #[test]
    fn derived_keys_depend_on_key_label_and_data() {
        let (k1, k2) = (key(), key());
        let d = k1.derive(b"label\0", b"data");
        assert_eq!(d.as_bytes(), k1.derive(b"label\0", b"data").as_bytes());
        assert_eq!(&d.as_bytes()[..], &k1.mac(b"label\0", b"data")[..]);
        for other in [
            k2.derive(b"label\0", b"data"),
            k1.derive(b"other\0", b"data"),
            k1.derive(b"label\0", b"date"),
        ] {
            assert_ne!(d.as_bytes(), other.as_bytes());
        }
    }

    #[test]
    fn records_bind_their_context() {
        let k = key();
        let s = k.seal_record(b"id-1", b"Subject: hi").unwrap();
        assert_eq!(k.open_record(b"id-1", &s).unwrap(), b"Subject: hi");
        assert_eq!(k.open_record(b"id-2", &s).unwrap_err(), CryptoError::Record);
        assert!(key().open_record(b"id-1", &s).is_err());
    }

    #[test]
    fn chunks_round_trip_at_every_boundary() {
        let k = key();
        for len in [
            0,
            1,
            CHUNK_SIZE - 1,
            CHUNK_SIZE,
            CHUNK_SIZE + 1,
            3 * CHUNK_SIZE,
        ] {
            let plain: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut sealed = Vec::new();
            seal_chunks(&k, b"m", &plain, &mut sealed).unwrap();
            assert_eq!(sealed.len(), sealed_len(len), "{len}");
            assert_eq!(opened_len(sealed.len() as u64), Some(len as u64), "{len}");
            assert_eq!(open_chunks(&k, b"m", sealed).unwrap(), plain, "{len}");
        }
    }

    #[test]
    fn impossible_sealed_lengths_have_no_plaintext_length() {
        let stride = (CHUNK_SIZE + TAG_LEN) as u64;
        for bad in [
            0,
            1,
            TAG_LEN as u64 - 1,
            stride + 1,
            2 * stride + TAG_LEN as u64 - 1,
        ] {
            assert_eq!(opened_len(bad), None, "{bad}");
        }
        assert_eq!(opened_len(stride + TAG_LEN as u64), Some(CHUNK_SIZE as u64));
        assert_eq!(opened_len(u64::MAX).map(|n| n < u64::MAX), Some(true));
    }

    #[test]
    fn dropped_reordered_truncated_or_moved_chunks_fail() {
        let k = key();
        let plain = vec![7u8; 2 * CHUNK_SIZE + 100];
        let mut sealed = Vec::new();
        seal_chunks(&k, b"m", &plain, &mut sealed).unwrap();
        let stride = CHUNK_SIZE + TAG_LEN;
        // Drop the last chunk: the new last one was not sealed as final.
        assert!(open_chunks(&k, b"m", sealed[..2 * stride].to_vec()).is_err());
        // Drop the middle chunk.
        let mut dropped = sealed[..stride].to_vec();
        dropped.extend_from_slice(&sealed[2 * stride..]);
        assert!(open_chunks(&k, b"m", dropped).is_err());
        // Swap the first two chunks.
        let mut swapped = sealed[stride..2 * stride].to_vec();
        swapped.extend_from_slice(&sealed[..stride]);
        swapped.extend_from_slice(&sealed[2 * stride..]);
        assert_eq!(
            open_chunks(&k, b"m", swapped).unwrap_err(),
            CryptoError::Chunk(0)
        );
        // Another message id, or a truncated tag.
        assert!(open_chunks(&k, b"other", sealed.clone()).is_err());
        assert!(open_chunks(&k, b"m", sealed[..sealed.len() - 1].to_vec()).is_err());
        assert!(open_chunks(&k, b"m", Vec::new()).is_err());
        // One flipped bit.
        let mut flipped = sealed.clone();
        flipped[CHUNK_SIZE + 3] ^= 0x10;
        assert!(open_chunks(&k, b"m", flipped).is_err());
        assert_eq!(open_chunks(&k, b"m", sealed).unwrap(), plain);
    }
}

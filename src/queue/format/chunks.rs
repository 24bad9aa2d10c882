//! Streaming AES-256-GCM chunks, byte for byte the format of [`sealing::seal_chunks`]: sealed as
//! the bytes arrive and opened one chunk at a time, so a message is never whole in memory.
//!
//! A chunk is sealed only once it is known whether it is the last one (its AAD carries that
//! flag), so the sealer keeps at most one chunk of plaintext.

use std::io::{self, Read, Write};

use aws_lc_rs::aead::{Aad, LessSafeKey, UnboundKey, AES_256_GCM};

use crate::crypto::sealing::{
    self, chunk_aad, chunk_nonce, CryptoError, SecretKey, CHUNK_SIZE, TAG_LEN,
};

/// Bytes of one full sealed chunk.
pub const STRIDE: u64 = (CHUNK_SIZE + TAG_LEN) as u64;

/// Seals plaintext pushed in pieces of any size.
pub struct ChunkSealer {
    aead: LessSafeKey,
    context: Vec<u8>,
    index: u64,
    buf: Vec<u8>,
}

/// Opens the chunks of a sealed stream of known length, one at a time.
pub struct ChunkOpener {
    aead: LessSafeKey,
    context: Vec<u8>,
    sealed_len: u64,
    count: u64,
}

fn aead(key: &SecretKey) -> Result<LessSafeKey, CryptoError> {
    UnboundKey::new(&AES_256_GCM, key.as_bytes())
        .map(LessSafeKey::new)
        .map_err(|_| CryptoError::Internal)
}

/// The sealed length of `len` bytes of plaintext (see [`sealing::sealed_len`]).
pub fn sealed_len(len: u64) -> u64 {
    let chunks = len.div_ceil(CHUNK_SIZE as u64).max(1);
    len.saturating_add(chunks * TAG_LEN as u64)
}

impl ChunkSealer {
    pub fn new(key: &SecretKey, context: &[u8]) -> Result<ChunkSealer, CryptoError> {
        Ok(ChunkSealer {
            aead: aead(key)?,
            context: context.to_vec(),
            index: 0,
            buf: Vec::with_capacity(CHUNK_SIZE + TAG_LEN),
        })
    }

    /// Adds plaintext; writes every chunk that is full and has more plaintext after it.
    pub fn push<W: Write + ?Sized>(&mut self, mut data: &[u8], out: &mut W) -> io::Result<()> {
        while !data.is_empty() {
            if self.buf.len() == CHUNK_SIZE {
                self.seal(false, out)?;
            }
            let take = (CHUNK_SIZE - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(())
    }

    /// Seals what is left as the last chunk (an empty one for an empty plaintext).
    pub fn finish<W: Write + ?Sized>(mut self, out: &mut W) -> io::Result<()> {
        self.seal(true, out)
    }

    fn seal<W: Write + ?Sized>(&mut self, last: bool, out: &mut W) -> io::Result<()> {
        let tag = self
            .aead
            .seal_in_place_separate_tag(
                chunk_nonce(self.index),
                Aad::from(chunk_aad(&self.context, self.index, last)),
                &mut self.buf,
            )
            .map_err(|_| io::Error::other(CryptoError::Internal))?;
        // One write per chunk: an unbuffered file gets one system call.
        self.buf.extend_from_slice(tag.as_ref());
        out.write_all(&self.buf)?;
        self.buf.clear();
        self.index += 1;
        Ok(())
    }
}

impl ChunkOpener {
    /// An opener for `sealed_len` bytes of chunks; `Malformed` when no plaintext seals to that
    /// length.
    pub fn new(
        key: &SecretKey,
        context: &[u8],
        sealed_len: u64,
    ) -> Result<ChunkOpener, CryptoError> {
        sealing::opened_len(sealed_len).ok_or(CryptoError::Malformed)?;
        Ok(ChunkOpener {
            aead: aead(key)?,
            context: context.to_vec(),
            sealed_len,
            count: sealed_len.div_ceil(STRIDE),
        })
    }

    /// How many chunks there are.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Reads chunk `index` from `reader` (at the chunk's first byte) into `buf` and opens it;
    /// returns its plaintext. A chunk that fails authentication is `InvalidData`.
    pub fn read_chunk<'b, R: Read + ?Sized>(
        &self,
        index: u64,
        reader: &mut R,
        buf: &'b mut Vec<u8>,
    ) -> io::Result<&'b [u8]> {
        if index >= self.count {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "no such chunk",
            ));
        }
        let last = index + 1 == self.count;
        let len = if last {
            self.sealed_len - index * STRIDE
        } else {
            STRIDE
        };
        buf.resize(len as usize, 0);
        reader.read_exact(buf)?;
        let plain = self
            .aead
            .open_in_place(
                chunk_nonce(index),
                Aad::from(chunk_aad(&self.context, index, last)),
                buf,
            )
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, CryptoError::Chunk(index)))?;
        Ok(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream_seal(key: &SecretKey, data: &[u8], piece: usize) -> Vec<u8> {
        let mut sealer = ChunkSealer::new(key, b"ctx").unwrap();
        let mut out = Vec::new();
        for p in data.chunks(piece.max(1)) {
            sealer.push(p, &mut out).unwrap();
        }
        sealer.finish(&mut out).unwrap();
        out
    }

    #[test]
    fn streaming_output_is_the_stores_chunk_format_and_opens_chunk_by_chunk() {
        let key = SecretKey::generate().unwrap();
        for len in [
            0,
            1,
            CHUNK_SIZE - 1,
            CHUNK_SIZE,
            CHUNK_SIZE + 1,
            3 * CHUNK_SIZE,
            200_000,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let mut whole = Vec::new();
            sealing::seal_chunks(&key, b"ctx", &data, &mut whole).unwrap();
            for piece in [1000, 4096, CHUNK_SIZE, 100_000] {
                assert_eq!(
                    stream_seal(&key, &data, piece),
                    whole,
                    "len {len} piece {piece}"
                );
            }
            assert_eq!(whole.len() as u64, sealed_len(len as u64));
            let opener = ChunkOpener::new(&key, b"ctx", whole.len() as u64).unwrap();
            let mut reader = whole.as_slice();
            let mut opened = Vec::new();
            let mut buf = Vec::new();
            for i in 0..opener.count() {
                opened.extend_from_slice(opener.read_chunk(i, &mut reader, &mut buf).unwrap());
            }
            assert_eq!(opened, data, "len {len}");
        }
    }

    #[test]
    fn a_chunk_under_another_context_or_altered_does_not_open() {
        let key = SecretKey::generate().unwrap();
        let mut sealed = stream_seal(&key, &[7u8; 100], 10);
        let other = ChunkOpener::new(&key, b"other", sealed.len() as u64).unwrap();
        let err = other
            .read_chunk(0, &mut sealed.as_slice(), &mut Vec::new())
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        sealed[3] ^= 1;
        let opener = ChunkOpener::new(&key, b"ctx", sealed.len() as u64).unwrap();
        assert!(opener
            .read_chunk(0, &mut sealed.as_slice(), &mut Vec::new())
            .is_err());
        assert!(
            ChunkOpener::new(&key, b"ctx", 5).is_err(),
            "shorter than a tag"
        );
    }
}

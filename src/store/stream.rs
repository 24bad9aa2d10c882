//! A stored message read piece by piece, for messages too large to hold in memory (IMAP sends
//! them this way). [`MessageSource::verify`] authenticates the whole blob first, so that nothing
//! is sent from a blob that fails; [`MessageChunks`] then opens it again 64 KiB at a time, and
//! authenticates every piece before giving it out. Nothing decrypted is written anywhere.

use std::io::{Read, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;

use super::blobs::{self, BlobRead, BlobStore, HEADER_LEN};
use super::encrypted::{integrity, BlobBody, EncryptedStore};
use super::index::MessageRow;
use super::StoreError;
use crate::crypto::sealing::{ChunkOpener, SecretKey, CHUNK_SIZE};

/// A message that can be read piece by piece: where its blob is and how it opens. It holds no
/// open blob and no plaintext.
pub struct MessageSource {
    blobs: Arc<dyn BlobStore>,
    blob: String,
    path: PathBuf,
    body: Body,
    size: u64,
    /// "message M in MAILBOX", for errors.
    name: String,
}

#[derive(Clone)]
enum Body {
    Sealed {
        content: SecretKey,
        context: Vec<u8>,
    },
    Plain {
        digest: Vec<u8>,
    },
}

impl std::fmt::Debug for MessageSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MessageSource({}, {} bytes)", self.name, self.size)
    }
}

impl MessageSource {
    /// The message's size in bytes, as the index records it.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Reads the whole blob once and authenticates it (every chunk, or the plain checksum) and
    /// its size, keeping no more than one chunk in memory.
    pub fn verify(&self) -> Result<(), StoreError> {
        self.verify_range(0, self.size)
    }

    /// Authenticates what [`MessageSource::range`] would give for the same range, and the end of
    /// the message when the range reaches it. A plain blob is checked whole (its checksum covers
    /// the whole message); a sealed one only in the chunks the range covers.
    pub fn verify_range(&self, skip: u64, len: u64) -> Result<(), StoreError> {
        let (skip, len, whole) = match self.body {
            Body::Plain { .. } => (0, self.size, true),
            Body::Sealed { .. } => (skip, len, skip.saturating_add(len) >= self.size),
        };
        let mut chunks = self.range(skip, len)?;
        while chunks.next_chunk()?.is_some() {}
        if whole {
            chunks.finish()?;
        }
        Ok(())
    }

    /// The message's plaintext from offset `skip` (at most the size), `len` bytes at most, one
    /// authenticated piece after another. Chunks before the range are not read.
    pub fn range(&self, skip: u64, len: u64) -> Result<MessageChunks, StoreError> {
        let skip = skip.min(self.size);
        let Some((mut file, sealed)) = self.blobs.open(&self.blob)? else {
            return Err(self.failed("its blob is missing (expunged meanwhile?)"));
        };
        let io = |e| StoreError::io(&self.path, e);
        let sealed = sealed
            .checked_sub(HEADER_LEN as u64)
            .ok_or_else(|| self.failed("its blob is truncated"))?;
        let mut given = 0;
        let state = match &self.body {
            Body::Sealed { content, context } => {
                let mut opener = ChunkOpener::new(content, context, sealed)
                    .map_err(|e| self.failed(format!("{e} (blob altered or truncated)")))?;
                let first = skip / CHUNK_SIZE as u64;
                opener
                    .skip_to(first)
                    .map_err(|e| self.failed(format!("{e} (blob truncated)")))?;
                let at = HEADER_LEN as u64 + first * ChunkOpener::STRIDE as u64;
                file.seek(SeekFrom::Start(at)).map_err(io)?;
                given = first * CHUNK_SIZE as u64;
                State::Sealed(opener)
            }
            Body::Plain { digest } => {
                file.seek(SeekFrom::Start(HEADER_LEN as u64)).map_err(io)?;
                State::Plain {
                    digest: digest.clone(),
                    hash: aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256),
                    left: sealed,
                }
            }
        };
        Ok(MessageChunks {
            file,
            state,
            buf: Vec::new(),
            drop: skip - given,
            left: len.min(self.size - skip),
            given,
            size: self.size,
            name: self.name.clone(),
        })
    }

    fn failed(&self, what: impl std::fmt::Display) -> StoreError {
        StoreError::Integrity(format!("{}: {what}", self.name))
    }
}

enum State {
    Sealed(ChunkOpener),
    Plain {
        digest: Vec<u8>,
        hash: aws_lc_rs::digest::Context,
        left: u64,
    },
    Done,
}

/// The pieces of a range of one message's plaintext, read from its open blob.
pub struct MessageChunks {
    file: Box<dyn BlobRead>,
    state: State,
    buf: Vec<u8>,
    /// Bytes at the front of the next piece before the range.
    drop: u64,
    /// Bytes of the range not given yet.
    left: u64,
    /// Plaintext bytes read from the message's start.
    given: u64,
    size: u64,
    name: String,
}

impl MessageChunks {
    /// The next piece of the range (at most 64 KiB), authenticated; `None` once the range was
    /// given. A failure (altered, swapped or truncated blob, a size other than the index's)
    /// leaves the reader done.
    pub fn next_chunk(&mut self) -> Result<Option<&[u8]>, StoreError> {
        loop {
            if self.left == 0 {
                return Ok(None);
            }
            match self.advance() {
                Ok(true) => {}
                Ok(false) => {
                    self.left = 0;
                    return Err(self.failed("it ends before the size the index records"));
                }
                Err(e) => {
                    (self.state, self.left) = (State::Done, 0);
                    return Err(e);
                }
            }
            let from = self.drop.min(self.buf.len() as u64) as usize;
            self.drop -= from as u64;
            let to = from + self.left.min((self.buf.len() - from) as u64) as usize;
            if to > from {
                self.left -= (to - from) as u64;
                return Ok(Some(&self.buf[from..to]));
            }
        }
    }

    /// After the range reached the message's end: reads and authenticates what is left of the
    /// chunk it ended in, checks the final chunk (or the plain checksum) and the size.
    fn finish(mut self) -> Result<(), StoreError> {
        while self.advance()? {}
        Ok(())
    }

    fn failed(&self, what: &str) -> StoreError {
        StoreError::Integrity(format!("{}: {what}", self.name))
    }

    /// Fills `buf` with the next piece; false at the end.
    fn advance(&mut self) -> Result<bool, StoreError> {
        let failed = |what: String| StoreError::Integrity(format!("{}: {what}", self.name));
        let piece = match &mut self.state {
            State::Done => return Ok(false),
            State::Sealed(opener) if opener.finished() => None,
            State::Sealed(opener) => {
                self.buf.resize(ChunkOpener::STRIDE, 0);
                let n = read_full(&mut self.file, &mut self.buf)
                    .map_err(|e| failed(format!("reading its blob: {e}")))?;
                let plain = opener
                    .open_next(&mut self.buf[..n])
                    .map_err(|e| failed(format!("{e} (blob altered, swapped or truncated)")))?;
                Some(plain.len())
            }
            State::Plain { left: 0, .. } => None,
            State::Plain { hash, left, .. } => {
                self.buf.resize(CHUNK_SIZE.min(*left as usize), 0);
                let n = read_full(&mut self.file, &mut self.buf)
                    .map_err(|e| failed(format!("reading its blob: {e}")))?;
                if n < self.buf.len() {
                    return Err(failed("its blob is truncated".into()));
                }
                hash.update(&self.buf);
                *left -= n as u64;
                Some(n)
            }
        };
        match piece {
            Some(n) => {
                self.buf.truncate(n);
                self.given += n as u64;
                if self.given > self.size {
                    return Err(failed("size does not match the index".into()));
                }
                Ok(true)
            }
            None => {
                let state = std::mem::replace(&mut self.state, State::Done);
                if let State::Plain { digest, hash, .. } = state {
                    if hash.finish().as_ref() != digest.as_slice() {
                        return Err(failed("checksum mismatch (blob altered or swapped)".into()));
                    }
                }
                if self.given != self.size {
                    return Err(failed("size does not match the index".into()));
                }
                self.buf = Vec::new();
                Ok(false)
            }
        }
    }
}

/// Reads until `buf` is full or the file ends; the number of bytes read.
fn read_full(file: &mut dyn BlobRead, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

impl EncryptedStore {
    /// Message `id` of a mailbox as a [`MessageSource`] (see `MailStore::read`).
    pub(super) fn source_of(&self, mailbox: &str, id: &str) -> Result<MessageSource, StoreError> {
        let (row, key) = self.row_and_key(mailbox, id)?;
        self.source(&row, key.as_ref())
    }

    /// A row's message as a [`MessageSource`]; the key work (and a revoked mailbox's refusal)
    /// happens here, the blob is only opened by `verify` and `chunks`.
    pub(super) fn source(
        &self,
        row: &MessageRow,
        mkey: Option<&SecretKey>,
    ) -> Result<MessageSource, StoreError> {
        let path = self.blobs.location(&row.blob);
        let Some((mut blob, _)) = self.blobs.open(&row.blob)? else {
            return Err(integrity(row, "its blob is missing"));
        };
        let mut header = [0u8; HEADER_LEN];
        match blob.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(integrity(row, "its blob is truncated"))
            }
            Err(e) => return Err(StoreError::io(&path, e)),
        }
        let body = match self.blob_body(row, mkey, blobs::kind(&header))? {
            BlobBody::Sealed { content, context } => Body::Sealed { content, context },
            BlobBody::Plain { digest } => Body::Plain { digest },
        };
        Ok(MessageSource {
            blobs: self.blobs.clone(),
            blob: row.blob.clone(),
            path,
            body,
            size: row.size.max(0) as u64,
            name: format!("message {} in {}", row.id, row.mailbox),
        })
    }
}

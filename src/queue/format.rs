//! The queue file format: the one place that encodes a queued message, encrypts it at rest, and
//! verifies and decrypts it on reading.
//!
//! A queue file is, byte for byte (version 2, what the server writes):
//!
//! ```text
//! SEALPOST-QUEUE 2\n              magic and format version
//! E <n>\n                         envelope length in bytes, decimal, no leading zeros
//! <n bytes of envelope JSON>\n    in clear: listings read it without any key
//! K <16 hex> <80 hex>\n           service key id; the content key wrapped by it (AES-KW, 40 bytes)
//! M <m>\n                         length of the sealed message in bytes
//! <m bytes of sealed message>\n   AES-256-GCM chunks (store::crypto::seal_chunks)
//! END <64 lowercase hex>\n        SHA-256 of every byte before "END "
//! ```
//!
//! The content key is fresh for every file written (a defer rewrites the file under a new key).
//! The chunks' AAD context is [`seal_context`]: the queue id and the SHA-256 of the exact envelope
//! bytes, so the ciphertext cannot be moved to another id and the envelope (recipients) cannot be
//! edited without the file failing authentication.
//!
//! Version 1 (written before queue encryption, and by [`encode`] without a key) has no `K` line
//! and the message in clear after `M <m>`. It is still read, so a queue written before an upgrade
//! still delivers.
//!
//! The file must end right after the end marker. [`decode`] checks, in order: magic, the length
//! (and key) lines, the file size the lengths imply, the separators, the end marker, the checksum,
//! the envelope JSON and its version, then (version 2) the service key id, the key unwrap and
//! every chunk's authentication; any failure is a [`FormatError`] and the message is never
//! delivered. [`read_header`] reads only up to the message (for listings) and checks the file size
//! against the lengths, but neither the checksum nor the ciphertext.

pub mod chunks;
mod encode;

use std::io::{self, BufRead, Read};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::envelope::{Envelope, ENVELOPE_VERSION};
use crate::crypto::keyfile::ServiceKey;
use crate::crypto::sealing::{self, CryptoError, WRAPPED_LEN};
pub use encode::{encode, encode_parts_to, encode_to, Part, StreamPart};

/// The first line of every encrypted queue file (format version 2).
pub const MAGIC: &[u8] = b"SEALPOST-QUEUE 2\n";
/// The first line of a plain queue file (format version 1).
pub const MAGIC_V1: &[u8] = b"SEALPOST-QUEUE 1\n";
const _: () = assert!(MAGIC.len() == MAGIC_V1.len());
/// Envelopes larger than this are refused (they are a few hundred bytes per recipient).
pub const MAX_ENVELOPE_LEN: u64 = 16 << 20;
/// "END " + 64 hex digits + "\n".
const END_LINE_LEN: u64 = 4 + 64 + 1;
/// u64::MAX has 20 decimal digits.
const MAX_DIGITS: usize = 20;
/// Hex digits of a key id (`SecretKey::id`).
const KEY_ID_HEX: usize = 16;
/// "K " + key id + " " + wrapped key in hex + "\n".
const KEY_LINE_LEN: usize = 2 + KEY_ID_HEX + 1 + 2 * WRAPPED_LEN + 1;

/// Why a queue file is not acceptable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("bad magic line (not a sealpost queue file, or an unknown format version)")]
    BadMagic,
    #[error("bad {field} length line")]
    BadLength { field: &'static str },
    #[error("envelope of {len} bytes exceeds the {MAX_ENVELOPE_LEN}-byte limit")]
    EnvelopeTooLarge { len: u64 },
    #[error("truncated: {actual} bytes, lengths require {expected}")]
    Truncated { expected: u64, actual: u64 },
    #[error("end marker missing")]
    MissingEndMarker,
    #[error("{actual} bytes where lengths require {expected}: trailing data")]
    TrailingData { expected: u64, actual: u64 },
    #[error("missing newline after the {field}")]
    BadSeparator { field: &'static str },
    #[error("malformed end marker")]
    BadEndMarker,
    #[error("checksum mismatch")]
    ChecksumMismatch,
    #[error("envelope is not valid: {0}")]
    BadEnvelope(String),
    #[error("unsupported envelope version {0}")]
    UnsupportedVersion(u32),
    #[error("envelope id {found:?} does not match file name {expected:?}")]
    IdMismatch { expected: String, found: String },
    #[error("malformed key line")]
    BadKeyLine,
    #[error("the file is encrypted and no service key was given")]
    NoServiceKey,
    #[error("sealed under service key {found}, but the service key here is {expected}")]
    WrongServiceKey { expected: String, found: String },
    #[error("the content key does not unwrap under the service key (altered wrap)")]
    KeyUnwrap,
    #[error("the encrypted message failed authentication: {0}")]
    Decrypt(CryptoError),
}

/// A failure of [`read_header`]: the disk failed, or the bytes are wrong.
#[derive(Debug)]
pub enum HeaderError {
    Io(io::Error),
    Format(FormatError),
}

/// What [`read_header`] learns without reading the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub envelope: Envelope,
    /// Length of the message itself (for version 2: what decryption will yield).
    pub message_len: u64,
    /// 1 (plain) or 2 (encrypted).
    pub version: u8,
}

/// The `K` line of a version 2 file.
struct KeyLine {
    key_id: String,
    wrapped: Vec<u8>,
}

/// Where the parts lie, as found by the header parser.
struct Layout {
    envelope_json: Vec<u8>,
    key: Option<KeyLine>,
    message_start: u64,
    /// Bytes of the message part as stored (sealed for version 2).
    stored_len: u64,
}

/// The AAD context of a queue file's chunks: a label, the queue id, and the SHA-256 of the exact
/// envelope bytes stored in the file.
pub fn seal_context(queue_id: &str, envelope_json: &[u8]) -> Vec<u8> {
    let mut context = b"sealpost queue v2\0".to_vec();
    context.extend_from_slice(queue_id.as_bytes());
    context.push(0);
    context.extend_from_slice(&Sha256::digest(envelope_json));
    context
}

/// Verify a whole queue file and split it into envelope and message, decrypting a version 2 file
/// with `key`.
pub fn decode(
    mut bytes: Vec<u8>,
    key: Option<&ServiceKey>,
) -> Result<(Envelope, Vec<u8>), FormatError> {
    let actual = len_u64(bytes.len());
    let layout = match parse_layout(&mut bytes.as_slice()) {
        Ok(layout) => layout,
        Err(HeaderError::Format(e)) => return Err(e),
        // Reading from a slice fails only by running out of bytes.
        Err(HeaderError::Io(_)) => {
            return Err(FormatError::Truncated {
                expected: actual + 1,
                actual,
            })
        }
    };
    let separator_at = layout.message_start.saturating_add(layout.stored_len);
    let end_at = separator_at.saturating_add(1);
    let expected = end_at.saturating_add(END_LINE_LEN);
    if actual == end_at {
        return Err(FormatError::MissingEndMarker);
    }
    if actual < expected {
        return Err(FormatError::Truncated { expected, actual });
    }
    if actual > expected {
        return Err(FormatError::TrailingData { expected, actual });
    }
    // All offsets are now within `bytes`, whose length fits in usize.
    let (message_start, separator_at, end_at) = (
        to_usize(layout.message_start)?,
        to_usize(separator_at)?,
        to_usize(end_at)?,
    );
    if bytes.get(separator_at) != Some(&b'\n') {
        return Err(FormatError::BadSeparator { field: "message" });
    }
    let end_line = bytes.get(end_at..).ok_or(FormatError::BadEndMarker)?;
    let digest_hex = end_line
        .strip_prefix(b"END ")
        .and_then(|rest| rest.strip_suffix(b"\n"))
        .ok_or(FormatError::MissingEndMarker)?;
    let mut stored = [0u8; 32];
    hex::decode_to_slice(digest_hex, &mut stored).map_err(|_| FormatError::BadEndMarker)?;
    let covered = bytes.get(..end_at).ok_or(FormatError::BadEndMarker)?;
    if Sha256::digest(covered).as_slice() != stored {
        return Err(FormatError::ChecksumMismatch);
    }
    let envelope = parse_envelope(&layout.envelope_json)?;
    bytes.truncate(separator_at);
    bytes.drain(..message_start);
    match &layout.key {
        None => Ok((envelope, bytes)),
        Some(line) => {
            let service = key.ok_or(FormatError::NoServiceKey)?;
            let message = open(service, line, &layout.envelope_json, &envelope, bytes)?;
            Ok((envelope, message))
        }
    }
}

/// Unwraps the content key and opens the sealed message.
fn open(
    service: &ServiceKey,
    line: &KeyLine,
    json: &[u8],
    envelope: &Envelope,
    sealed: Vec<u8>,
) -> Result<Vec<u8>, FormatError> {
    let expected = service.id();
    if line.key_id != expected {
        return Err(FormatError::WrongServiceKey {
            expected,
            found: line.key_id.clone(),
        });
    }
    let content = service
        .unwrap(&line.wrapped)
        .map_err(|_| FormatError::KeyUnwrap)?;
    sealing::open_chunks(&content, &seal_context(&envelope.id, json), sealed)
        .map_err(FormatError::Decrypt)
}

/// Read the envelope and message length from the start of a queue file of `file_len` bytes.
///
/// Checks magic, length (and key) lines and that `file_len` is exactly what the lengths imply;
/// does not read the message, verify the checksum or need the service key (a later claim does).
pub fn read_header<R: BufRead>(mut reader: R, file_len: u64) -> Result<Header, HeaderError> {
    let layout = match parse_layout(&mut reader) {
        Err(HeaderError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(HeaderError::Format(FormatError::Truncated {
                expected: file_len + 1,
                actual: file_len,
            }))
        }
        other => other?,
    };
    let end_at = layout
        .message_start
        .saturating_add(layout.stored_len)
        .saturating_add(1);
    let expected = end_at.saturating_add(END_LINE_LEN);
    let problem = if file_len == end_at {
        Some(FormatError::MissingEndMarker)
    } else if file_len < expected {
        Some(FormatError::Truncated {
            expected,
            actual: file_len,
        })
    } else if file_len > expected {
        Some(FormatError::TrailingData {
            expected,
            actual: file_len,
        })
    } else {
        None
    };
    if let Some(problem) = problem {
        return Err(HeaderError::Format(problem));
    }
    let envelope = parse_envelope(&layout.envelope_json)?;
    let (message_len, version) = match layout.key {
        None => (layout.stored_len, 1),
        Some(_) => (
            sealing::opened_len(layout.stored_len)
                .ok_or(FormatError::BadLength { field: "message" })?,
            2,
        ),
    };
    Ok(Header {
        envelope,
        message_len,
        version,
    })
}

/// Parse magic, envelope, key line (version 2) and message length line, leaving `reader` at the
/// message's first byte.
fn parse_layout<R: BufRead>(reader: &mut R) -> Result<Layout, HeaderError> {
    let mut magic = [0u8; MAGIC.len()];
    reader
        .read_exact(&mut magic)
        .map_err(|e| eof_as(e, FormatError::BadMagic))?;
    let encrypted = if magic == MAGIC {
        true
    } else if magic == MAGIC_V1 {
        false
    } else {
        return Err(FormatError::BadMagic.into());
    };
    let (envelope_len, line) = length_line(reader, b'E', "envelope")?;
    if envelope_len > MAX_ENVELOPE_LEN {
        return Err(FormatError::EnvelopeTooLarge { len: envelope_len }.into());
    }
    let mut envelope_json = Vec::new();
    let read = reader
        .by_ref()
        .take(envelope_len)
        .read_to_end(&mut envelope_json)?;
    let mut separator = [0u8; 1];
    if len_u64(read) != envelope_len {
        return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
    }
    reader.read_exact(&mut separator)?;
    if separator != *b"\n" {
        return Err(FormatError::BadSeparator { field: "envelope" }.into());
    }
    let key = if encrypted {
        Some(key_line(reader)?)
    } else {
        None
    };
    let key_len = if encrypted { KEY_LINE_LEN } else { 0 };
    let (stored_len, message_line) = length_line(reader, b'M', "message")?;
    let message_start = len_u64(MAGIC.len() + line + key_len + message_line) + envelope_len + 1;
    Ok(Layout {
        envelope_json,
        key,
        message_start,
        stored_len,
    })
}

/// Read `"K <16 hex> <80 hex>\n"` (lowercase hex only).
fn key_line<R: BufRead>(reader: &mut R) -> Result<KeyLine, HeaderError> {
    let mut line = [0u8; KEY_LINE_LEN];
    reader.read_exact(&mut line)?;
    let fields = line
        .strip_prefix(b"K ")
        .and_then(|rest| rest.strip_suffix(b"\n"))
        .and_then(|rest| {
            let (id, wrapped) = rest.split_at_checked(KEY_ID_HEX)?;
            Some((id, wrapped.strip_prefix(b" ")?))
        });
    let lower_hex = |s: &[u8]| {
        s.iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    };
    let (id, wrapped_hex) = fields
        .filter(|(id, w)| lower_hex(id) && lower_hex(w))
        .ok_or(FormatError::BadKeyLine)?;
    let wrapped = hex::decode(wrapped_hex).map_err(|_| FormatError::BadKeyLine)?;
    let key_id = String::from_utf8(id.to_vec()).map_err(|_| FormatError::BadKeyLine)?;
    Ok(KeyLine { key_id, wrapped })
}

/// Read `"<tag> <decimal>\n"`; returns the number and the line's length in bytes.
fn length_line<R: BufRead>(
    reader: &mut R,
    tag: u8,
    field: &'static str,
) -> Result<(u64, usize), HeaderError> {
    let mut line = Vec::with_capacity(MAX_DIGITS + 3);
    let limit = len_u64(MAX_DIGITS + 3);
    reader.by_ref().take(limit).read_until(b'\n', &mut line)?;
    let bad = || HeaderError::Format(FormatError::BadLength { field });
    let digits = line
        .strip_prefix(&[tag, b' '])
        .and_then(|rest| rest.strip_suffix(b"\n"))
        .ok_or_else(bad)?;
    let canonical = !digits.is_empty()
        && digits.iter().all(u8::is_ascii_digit)
        && (digits.len() == 1 || digits[0] != b'0');
    if !canonical {
        return Err(bad());
    }
    let value = std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(bad)?;
    Ok((value, line.len()))
}

/// Parses envelope JSON as a queue file stores it, checking its version first.
pub fn parse_envelope(json: &[u8]) -> Result<Envelope, FormatError> {
    #[derive(Deserialize)]
    struct VersionOnly {
        version: u32,
    }
    let probe: VersionOnly =
        serde_json::from_slice(json).map_err(|e| FormatError::BadEnvelope(e.to_string()))?;
    if probe.version != ENVELOPE_VERSION {
        return Err(FormatError::UnsupportedVersion(probe.version));
    }
    serde_json::from_slice(json).map_err(|e| FormatError::BadEnvelope(e.to_string()))
}

fn eof_as(e: io::Error, format: FormatError) -> HeaderError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        HeaderError::Format(format)
    } else {
        HeaderError::Io(e)
    }
}

fn len_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn to_usize(n: u64) -> Result<usize, FormatError> {
    usize::try_from(n).map_err(|_| FormatError::BadLength { field: "message" })
}

impl From<io::Error> for HeaderError {
    fn from(e: io::Error) -> Self {
        HeaderError::Io(e)
    }
}

impl From<FormatError> for HeaderError {
    fn from(e: FormatError) -> Self {
        HeaderError::Format(e)
    }
}

#[cfg(test)]
mod tests;

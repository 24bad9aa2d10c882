//! The queue file format: the one place that encodes a queued message and verifies it on reading.
//!
//! A queue file is, byte for byte:
//!
//! ```text
//! SEALPOST-QUEUE 1\n              magic and format version
//! E <n>\n                         envelope length in bytes, decimal, no leading zeros
//! <n bytes of envelope JSON>\n
//! M <m>\n                         message length in bytes, decimal, no leading zeros
//! <m bytes of message>\n
//! END <64 lowercase hex>\n        SHA-256 of every byte before "END "
//! ```
//!
//! The file must end right after the end marker. [`decode`] checks, in order: magic, both length
//! lines, the file size the lengths imply, the separators, the end marker, the checksum, then the
//! envelope JSON and its version; any failure is a [`FormatError`] and the message is never
//! delivered. [`read_header`] reads only up to the envelope (for listings) and checks the file size
//! against the lengths, but not the checksum. Encryption at rest, when it comes, wraps [`encode_to`]
//! and [`decode`].

use std::io::{self, BufRead, Read, Write};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::envelope::{Envelope, ENVELOPE_VERSION};

/// The first line of every queue file.
pub const MAGIC: &[u8] = b"SEALPOST-QUEUE 1\n";
/// Envelopes larger than this are refused (they are a few hundred bytes per recipient).
pub const MAX_ENVELOPE_LEN: u64 = 16 << 20;
/// "END " + 64 hex digits + "\n".
const END_LINE_LEN: u64 = 4 + 64 + 1;
/// u64::MAX has 20 decimal digits.
const MAX_DIGITS: usize = 20;

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
    pub message_len: u64,
}

/// Where the parts lie, as found by the header parser.
struct Layout {
    envelope_json: Vec<u8>,
    message_start: u64,
    message_len: u64,
}

/// Write a complete queue file to `out`.
pub fn encode_to<W: Write>(out: &mut W, envelope: &Envelope, message: &[u8]) -> io::Result<()> {
    let json = serde_json::to_vec(envelope)?;
    let mut hasher = Sha256::new();
    let mut put = |bytes: &[u8]| -> io::Result<()> {
        hasher.update(bytes);
        out.write_all(bytes)
    };
    put(MAGIC)?;
    put(format!("E {}\n", json.len()).as_bytes())?;
    put(&json)?;
    put(b"\n")?;
    put(format!("M {}\n", message.len()).as_bytes())?;
    put(message)?;
    put(b"\n")?;
    let digest = hex::encode(hasher.finalize());
    out.write_all(b"END ")?;
    out.write_all(digest.as_bytes())?;
    out.write_all(b"\n")
}

/// A complete queue file in memory.
pub fn encode(envelope: &Envelope, message: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(message.len() + 1024);
    encode_to(&mut out, envelope, message)?;
    Ok(out)
}

/// Verify a whole queue file and split it into envelope and message.
pub fn decode(mut bytes: Vec<u8>) -> Result<(Envelope, Vec<u8>), FormatError> {
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
    let separator_at = layout.message_start.saturating_add(layout.message_len);
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
    Ok((envelope, bytes))
}

/// Read the envelope and message length from the start of a queue file of `file_len` bytes.
///
/// Checks magic, length lines and that `file_len` is exactly what the lengths imply; does not read
/// the message or verify the checksum (a later claim does).
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
        .saturating_add(layout.message_len)
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
    Ok(Header {
        envelope,
        message_len: layout.message_len,
    })
}

/// Parse magic, envelope and message length line, leaving `reader` at the message's first byte.
fn parse_layout<R: BufRead>(reader: &mut R) -> Result<Layout, HeaderError> {
    let mut magic = [0u8; MAGIC.len()];
    reader
        .read_exact(&mut magic)
        .map_err(|e| eof_as(e, FormatError::BadMagic))?;
    if magic != MAGIC {
        return Err(FormatError::BadMagic.into());
    }
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
    let (message_len, message_line) = length_line(reader, b'M', "message")?;
    let message_start = len_u64(MAGIC.len() + line + message_line) + envelope_len + 1;
    Ok(Layout {
        envelope_json,
        message_start,
        message_len,
    })
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

fn parse_envelope(json: &[u8]) -> Result<Envelope, FormatError> {
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
mod tests {
    use super::*;

    const MESSAGE: &[u8] = b"Subject: hi\r\n\r\nbody line\r\n";

    fn envelope() -> Envelope {
        Envelope::new(
            "0000000000000A000001",
            "bob@fabrikam.test",
            vec!["alice@contoso.test".into()],
            "mx.fabrikam.test",
            "127.0.0.1:40000",
            1_700_000_000,
        )
    }

    fn file() -> Vec<u8> {
        encode(&envelope(), MESSAGE).unwrap()
    }

    /// The index of the first byte of `needle` in `hay`.
    fn find(hay: &[u8], needle: &[u8]) -> usize {
        hay.windows(needle.len()).position(|w| w == needle).unwrap()
    }

    #[test]
    fn round_trip_and_layout() {
        let bytes = file();
        assert!(bytes.starts_with(MAGIC));
        let json = serde_json::to_vec(&envelope()).unwrap();
        let header = format!("E {}\n", json.len());
        assert_eq!(
            &bytes[MAGIC.len()..MAGIC.len() + header.len()],
            header.as_bytes()
        );
        let tail = &bytes[bytes.len() - END_LINE_LEN as usize..];
        assert!(tail.starts_with(b"END ") && tail.ends_with(b"\n"));
        let expected = hex::encode(Sha256::digest(
            &bytes[..bytes.len() - END_LINE_LEN as usize],
        ));
        assert_eq!(&tail[4..68], expected.as_bytes());
        let (env, msg) = decode(bytes).unwrap();
        assert_eq!(env, envelope());
        assert_eq!(msg, MESSAGE);
    }

    #[test]
    fn empty_message_and_binary_message_round_trip() {
        for message in [&b""[..], &[0u8, 10, 255, 13, 10, b'E', b'N', b'D'][..]] {
            let (_, msg) = decode(encode(&envelope(), message).unwrap()).unwrap();
            assert_eq!(msg, message);
        }
    }

    #[test]
    fn header_reads_envelope_and_size_without_message() {
        let bytes = file();
        let header = read_header(bytes.as_slice(), bytes.len() as u64).unwrap();
        assert_eq!(header.envelope, envelope());
        assert_eq!(header.message_len, MESSAGE.len() as u64);
        let short = read_header(bytes.as_slice(), bytes.len() as u64 - 1);
        assert!(matches!(
            short,
            Err(HeaderError::Format(FormatError::Truncated { .. }))
        ));
    }

    #[test]
    fn every_truncation_is_rejected() {
        let bytes = file();
        for cut in 0..bytes.len() {
            let result = decode(bytes[..cut].to_vec());
            assert!(result.is_err(), "accepted a file cut at {cut}");
        }
        let cut = bytes.len() - END_LINE_LEN as usize;
        assert_eq!(
            decode(bytes[..cut].to_vec()).unwrap_err(),
            FormatError::MissingEndMarker
        );
    }

    #[test]
    fn every_flipped_bit_is_rejected() {
        let bytes = file();
        for i in 0..bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = bytes.clone();
                bad[i] ^= bit;
                assert!(
                    decode(bad).is_err(),
                    "accepted a flip of bit {bit:#x} at {i}"
                );
            }
        }
    }

    #[test]
    fn specific_defects_have_specific_reasons() {
        let bytes = file();
        let mut magic = bytes.clone();
        magic[0] = b'X';
        assert_eq!(decode(magic).unwrap_err(), FormatError::BadMagic);

        let mut body = bytes.clone();
        let at = find(&body, b"body line");
        body[at] = b'B';
        assert_eq!(decode(body).unwrap_err(), FormatError::ChecksumMismatch);

        let mut trailing = bytes.clone();
        trailing.push(b'x');
        assert!(matches!(
            decode(trailing).unwrap_err(),
            FormatError::TrailingData { .. }
        ));

        let mut marker = bytes.clone();
        let at = marker.len() - END_LINE_LEN as usize;
        marker[at] = b'F';
        assert_eq!(decode(marker).unwrap_err(), FormatError::MissingEndMarker);

        let mut leading_zero = bytes.clone();
        leading_zero.splice(MAGIC.len() + 2..MAGIC.len() + 2, *b"0");
        assert_eq!(
            decode(leading_zero).unwrap_err(),
            FormatError::BadLength { field: "envelope" }
        );
    }

    #[test]
    fn huge_declared_lengths_are_refused_without_allocating() {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(b"E 18446744073709551615\n{}");
        assert!(matches!(
            decode(bytes).unwrap_err(),
            FormatError::EnvelopeTooLarge { .. }
        ));
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(b"E 99999999999999999999\n");
        assert_eq!(
            decode(bytes).unwrap_err(),
            FormatError::BadLength { field: "envelope" }
        );
    }

    #[test]
    fn other_envelope_versions_are_refused_even_with_a_good_checksum() {
        let mut env = envelope();
        env.version = 2;
        let bytes = encode(&env, MESSAGE).unwrap();
        assert_eq!(
            decode(bytes).unwrap_err(),
            FormatError::UnsupportedVersion(2)
        );
    }
}

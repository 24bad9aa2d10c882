//! Base64 (RFC 4648, standard alphabet, padded) written straight into MIME lines of 76
//! characters, in one pass over the input and into one buffer.
//!
//! A full line is 57 input bytes: nine groups of 6 bytes, read as one 64-bit word each and turned
//! into 8 characters by four lookups in a table of character pairs (12 bits each, 8 KiB), and one
//! last group of 3. Half the lookups of a 6-bit table, fixed-size arrays (no bounds checks in the
//! loop), and no second pass to cut the text into lines.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Characters per line, and the input bytes that make them.
const LINE_CHARS: usize = 76;
const LINE_BYTES: usize = LINE_CHARS / 4 * 3;

/// The two characters of every 12-bit value, the first in the low byte.
static PAIRS: [u16; 4096] = pairs();

const fn pairs() -> [u16; 4096] {
    let mut t = [0u16; 4096];
    let mut i = 0;
    while i < 4096 {
        t[i] = ALPHABET[i >> 6] as u16 | (ALPHABET[i & 63] as u16) << 8;
        i += 1;
    }
    t
}

fn pair(n: u64) -> u64 {
    u64::from(PAIRS[(n & 0xfff) as usize])
}

/// One full line: 57 bytes to 76 characters.
fn encode_line(src: &[u8; LINE_BYTES], text: &mut [u8; LINE_CHARS]) {
    for i in 0..9 {
        let mut word = [0u8; 8];
        word.copy_from_slice(&src[6 * i..6 * i + 8]);
        let n = u64::from_be_bytes(word) >> 16;
        let chars = pair(n >> 36) | pair(n >> 24) << 16 | pair(n >> 12) << 32 | pair(n) << 48;
        text[8 * i..8 * i + 8].copy_from_slice(&chars.to_le_bytes());
    }
    let n = u64::from(src[54]) << 16 | u64::from(src[55]) << 8 | u64::from(src[56]);
    let chars = (pair(n >> 12) | pair(n) << 16) as u32;
    text[72..].copy_from_slice(&chars.to_le_bytes());
}

/// Characters of whole 3-byte groups (`text` holds 4 per group).
fn encode_groups(src: &[u8], text: &mut [u8]) {
    for (s, d) in src.chunks_exact(3).zip(text.chunks_exact_mut(4)) {
        let n = u64::from(s[0]) << 16 | u64::from(s[1]) << 8 | u64::from(s[2]);
        let chars = (pair(n >> 12) | pair(n) << 16) as u32;
        d.copy_from_slice(&chars.to_le_bytes());
    }
}

/// The length of `encode_lines(data, eol)`'s output.
pub(crate) fn encoded_lines_len(data_len: usize, eol_len: usize) -> usize {
    let chars = data_len.div_ceil(3) * 4;
    chars + chars.div_ceil(LINE_CHARS) * eol_len
}

/// Appends the base64 of `data` to `out` in lines of 76 characters, each ended by `eol` (the last
/// one may be shorter; no line at all for empty input).
pub(crate) fn encode_lines(data: &[u8], eol: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + encoded_lines_len(data.len(), eol.len()), 0);
    let dest = &mut out[start..];
    let line_len = LINE_CHARS + eol.len();
    let (lines, rest) = data.as_chunks::<LINE_BYTES>();
    for (src, dst) in lines.iter().zip(dest.chunks_exact_mut(line_len)) {
        let mut text = [0u8; LINE_CHARS];
        encode_line(src, &mut text);
        let (line, end) = dst.split_at_mut(LINE_CHARS);
        line.copy_from_slice(&text);
        end.copy_from_slice(eol);
    }
    if rest.is_empty() {
        return;
    }
    // The last, shorter line: what is left of the buffer.
    let dst = &mut dest[lines.len() * line_len..];
    let (text, end) = dst.split_at_mut(dst.len() - eol.len());
    let whole = rest.len() / 3 * 3;
    encode_groups(&rest[..whole], text);
    let tail = &rest[whole..];
    let mut quads = text[whole / 3 * 4..].chunks_exact_mut(4);
    if let Some(d) = quads.next() {
        let b0 = usize::from(tail[0]);
        let b1 = tail.get(1).map_or(0, |&b| usize::from(b));
        d[0] = ALPHABET[b0 >> 2];
        d[1] = ALPHABET[((b0 & 3) << 4) | (b1 >> 4)];
        d[2] = if tail.len() == 2 {
            ALPHABET[(b1 & 15) << 2]
        } else {
            b'='
        };
        d[3] = b'=';
    }
    end.copy_from_slice(eol);
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    /// What the `base64` crate gives, cut into lines afterwards.
    fn reference(data: &[u8], eol: &[u8]) -> Vec<u8> {
        let text = base64::engine::general_purpose::STANDARD.encode(data);
        let mut out = Vec::new();
        for line in text.as_bytes().chunks(LINE_CHARS) {
            out.extend_from_slice(line);
            out.extend_from_slice(eol);
        }
        out
    }

    #[test]
    fn matches_the_base64_crate_at_every_length_around_the_line_boundaries() {
        let data: Vec<u8> = (0..1000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for len in (0..200).chain([455, 456, 457, 570, 571, 999, 1000]) {
            for eol in [&b"\r\n"[..], b"\n"] {
                let mut out = b"head".to_vec();
                encode_lines(&data[..len], eol, &mut out);
                assert_eq!(&out[..4], b"head");
                assert_eq!(
                    out[4..],
                    reference(&data[..len], eol)[..],
                    "length {len}, eol {eol:?}"
                );
                assert_eq!(out.len() - 4, encoded_lines_len(len, eol.len()));
            }
        }
    }

    #[test]
    fn every_byte_value_in_every_position() {
        let data: Vec<u8> = (0..=255u8).flat_map(|b| [b, b ^ 0x5a, !b]).collect();
        for shift in 0..3 {
            let mut out = Vec::new();
            encode_lines(&data[shift..], b"\r\n", &mut out);
            assert_eq!(out, reference(&data[shift..], b"\r\n"));
        }
    }
}

//! Base64 (RFC 4648, standard alphabet, padded) in MIME lines of 76 characters: the
//! `base64-simd` crate encodes the input a block of lines at a time (with the vector
//! instructions the CPU has) into a buffer on the stack, from which the lines are copied
//! straight into the output.

/// Characters per line, and the input bytes that make them.
const LINE_CHARS: usize = 76;
const LINE_BYTES: usize = LINE_CHARS / 4 * 3;

/// Lines encoded at a time.
const BLOCK_LINES: usize = 64;

/// The length of `encode_lines(data, eol)`'s output.
pub(crate) fn encoded_lines_len(data_len: usize, eol_len: usize) -> usize {
    let chars = data_len.div_ceil(3) * 4;
    chars + chars.div_ceil(LINE_CHARS) * eol_len
}

/// Appends the base64 of `data` to `out` in lines of 76 characters, each ended by `eol` (the last
/// one may be shorter; no line at all for empty input).
pub(crate) fn encode_lines(data: &[u8], eol: &[u8], out: &mut Vec<u8>) {
    let engine = base64_simd::STANDARD;
    let start = out.len();
    out.resize(start + encoded_lines_len(data.len(), eol.len()), 0);
    let mut dst = &mut out[start..];
    let mut text = [0u8; BLOCK_LINES * LINE_CHARS];
    // Every block but the last is a whole number of 3-byte groups: no padding in between.
    for block in data.chunks(BLOCK_LINES * LINE_BYTES) {
        let text = engine.encode(block, base64_simd::Out::from_slice(&mut text));
        for line in text.chunks(LINE_CHARS) {
            let (chars, rest) = std::mem::take(&mut dst).split_at_mut(line.len());
            chars.copy_from_slice(line);
            let (end, rest) = rest.split_at_mut(eol.len());
            end.copy_from_slice(eol);
            dst = rest;
        }
    }
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
    fn matches_the_base64_crate_at_every_length_around_the_line_and_block_boundaries() {
        let data: Vec<u8> = (0..10_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        // Around line ends, and around the ends of the blocks encoded at a time (3,648 bytes).
        for len in (0..200).chain([
            455, 456, 457, 570, 571, 999, 1000, 3647, 3648, 3649, 3650, 7295, 7296, 7297, 10_000,
        ]) {
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

//! The DATA receiver: finds the end-of-data line, removes dot-stuffing, enforces limits.
//!
//! Only `<CR><LF>.<CR><LF>` ends the data (RFC 5321 §4.1.1.4); look-alikes such as `<LF>.<LF>`,
//! `<CR>.<CR>` or `<CR><LF>.<LF>` are message content. Accepting them would let a client smuggle
//! a second message past a server that reads the stream differently ("SMTP smuggling", SEC
//! Consult 2023). Lines are only ever ended by CRLF here; a line starts after CRLF (or at the
//! start of the data), so only such a line loses a leading dot to unstuffing.
//!
//! A bare LF or a bare CR (one not part of a CRLF) is either a reason to refuse the message or
//! turned into CRLF, by [`BareNewline`] (Postfix `smtpd_forbid_bare_newline`). A normalised bare
//! newline does not start a line: a dot after it is content, and never an end of data.
//!
//! Every line of the stored message, CRLF included, must fit in [`MAX_TEXT_LINE`] octets
//! (RFC 5321 §4.5.3.1.6, RFC 5322 §2.1.1), measured after unstuffing and normalisation.

use crate::mail::BareNewline;

/// The longest text line of a message, CRLF included (RFC 5321 §4.5.3.1.6).
pub const MAX_TEXT_LINE: usize = 1000;

/// Why the received data cannot be accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataError {
    /// More than the configured maximum was sent; nothing was kept.
    TooLarge,
    /// A LF without CR before it was sent (in [`BareNewline::Reject`] mode).
    BareLf,
    /// A CR without LF after it was sent (in [`BareNewline::Reject`] mode).
    BareCr,
    /// A line longer than [`MAX_TEXT_LINE`] was sent.
    LineTooLong,
}

/// Where the receiver is within the current line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// At the start of a line: after CRLF, or before the first byte of the data.
    LineStart,
    /// Inside a line; no CR pending.
    Text,
    /// Inside a line; the previous byte was a CR, not yet stored (CRLF or a bare CR?).
    TextCr,
    /// The line started with a dot (not yet stored: it is either stuffing or the end marker).
    Dot,
    /// The line started with dot, CR.
    DotCr,
    /// The end-of-data line was read.
    Done,
}

/// Receives message content: after `354` up to the end-of-data line (dot-unstuffed), or the
/// chunks of BDAT commands (taken as they are; [`DataReceiver::chunked`]). Either way bare
/// newlines, line lengths and the size limit are checked as the content goes by.
///
/// [`DataReceiver::ingest_into`] and [`DataReceiver::chunk_into`] append the accepted content to
/// a buffer of the caller's, so that it can be passed on in pieces; once a problem is found
/// ([`DataReceiver::is_failed`]) nothing more is appended and the content must be dropped.
/// [`DataReceiver::ingest`] and [`DataReceiver::finish`] keep the content here instead.
#[derive(Clone, Debug)]
pub struct DataReceiver {
    data: Vec<u8>,
    max_size: usize,
    bare_newline: BareNewline,
    /// DATA: dot-stuffing and the end-of-data line. BDAT: neither.
    dots: bool,
    /// Bytes of content seen (after unstuffing), counting those not kept.
    size: usize,
    /// Octets of the current stored line so far, without its CRLF.
    line: usize,
    /// The first content problem found; from then on nothing more is stored.
    error: Option<DataError>,
    state: State,
}

impl DataReceiver {
    /// A receiver that keeps at most `max_size` bytes of content and refuses bare newlines.
    pub fn new(max_size: usize) -> Self {
        Self::with_bare_newline(max_size, BareNewline::Reject)
    }

    /// A receiver that keeps at most `max_size` bytes and treats bare newlines as `mode` says.
    pub fn with_bare_newline(max_size: usize, mode: BareNewline) -> Self {
        DataReceiver {
            data: Vec::new(),
            max_size,
            bare_newline: mode,
            dots: true,
            size: 0,
            line: 0,
            error: None,
            state: State::LineStart,
        }
    }

    /// A receiver for BDAT chunks (RFC 3030): no dot-stuffing and no end-of-data line; the
    /// content ends where the caller says ([`DataReceiver::end_chunks`]), and may end without
    /// CRLF.
    pub fn chunked(max_size: usize, mode: BareNewline) -> Self {
        DataReceiver {
            dots: false,
            ..Self::with_bare_newline(max_size, mode)
        }
    }

    /// Consumes content from `input`, keeping it here. Returns `Some(n)` when the end-of-data
    /// line was read, `n` being the bytes of `input` used (what follows belongs to the next
    /// command), or `None` when all of `input` was used and more is needed.
    pub fn ingest(&mut self, input: &[u8]) -> Option<usize> {
        let mut data = std::mem::take(&mut self.data);
        let used = self.ingest_into(input, &mut data);
        if self.is_failed() {
            data = Vec::new();
        }
        self.data = data;
        used
    }

    /// Like [`DataReceiver::ingest`], appending the accepted content to `out`.
    pub fn ingest_into(&mut self, input: &[u8], out: &mut Vec<u8>) -> Option<usize> {
        let mut i = 0;
        while let Some(&byte) = input.get(i) {
            i += 1;
            match (self.state, byte) {
                (State::Done, _) => return Some(i - 1),
                (State::LineStart, b'.') if self.dots => self.state = State::Dot,
                (State::Dot, b'\r') => self.state = State::DotCr,
                (State::DotCr, b'\n') => {
                    self.state = State::Done;
                    return Some(i);
                }
                // ".<CR>x": the dot was stuffing, the CR is a bare one.
                (State::DotCr, _) => {
                    self.bare(DataError::BareCr, out);
                    self.text(byte, out);
                }
                (State::TextCr, b'\n') => {
                    self.push_crlf(out);
                    self.state = State::LineStart;
                }
                (State::TextCr, _) => {
                    self.bare(DataError::BareCr, out);
                    self.text(byte, out);
                }
                // The leading dot of any other line is stuffing: drop it, keep the rest.
                (State::Dot | State::LineStart | State::Text, b'\r' | b'\n') => {
                    self.text(byte, out)
                }
                // Text up to the next CR or LF is taken as one span.
                (State::Dot | State::LineStart | State::Text, _) => {
                    let rest = &input[i - 1..];
                    let end = memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
                    self.span(&rest[..end], out);
                    i += end - 1;
                }
            }
        }
        (self.state == State::Done).then_some(input.len())
    }

    /// Takes all of `input` as BDAT content, appending what is accepted to `out`.
    pub fn chunk_into(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let used = self.ingest_into(input, out);
        debug_assert!(used.is_none() || !self.dots);
    }

    /// The last BDAT chunk ended: a CR left pending is a bare one.
    pub fn end_chunks(&mut self, out: &mut Vec<u8>) {
        if self.state == State::TextCr {
            self.bare(DataError::BareCr, out);
        }
        self.state = State::Done;
    }

    /// True once the content has gone over the maximum size.
    pub fn is_too_large(&self) -> bool {
        self.size > self.max_size
    }

    /// True once the content cannot be accepted (too large, or a problem found): what was
    /// passed on so far must be dropped.
    pub fn is_failed(&self) -> bool {
        self.is_too_large() || self.error.is_some()
    }

    /// True once the end-of-data line was read (or the last chunk ended).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Bytes of content seen so far.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The outcome for content passed on with `ingest_into` or `chunk_into`: its size, or why it
    /// cannot be accepted. Too large wins over the other problems; otherwise the first one found
    /// is reported.
    pub fn outcome(&self) -> Result<usize, DataError> {
        if self.is_too_large() {
            return Err(DataError::TooLarge);
        }
        match self.error {
            Some(error) => Err(error),
            None => Ok(self.size),
        }
    }

    /// The message kept by `ingest`: dot-unstuffed, every line ending in CRLF, without the
    /// end-of-data line; or why it cannot be accepted, as [`DataReceiver::outcome`] says.
    pub fn finish(self) -> Result<Vec<u8>, DataError> {
        self.outcome().map(|_| self.data)
    }

    /// One byte inside a line, with no CR pending before it.
    fn text(&mut self, byte: u8, out: &mut Vec<u8>) {
        self.state = State::Text;
        match byte {
            b'\r' => self.state = State::TextCr,
            b'\n' => self.bare(DataError::BareLf, out),
            _ => self.push(byte, out),
        }
    }

    /// A bare CR or LF: refused, or stored as CRLF (which does not start a new line).
    fn bare(&mut self, error: DataError, out: &mut Vec<u8>) {
        self.state = State::Text;
        match self.bare_newline {
            BareNewline::Reject => self.fail(error),
            BareNewline::Normalize => self.push_crlf(out),
        }
    }

    /// Bytes inside a line with neither CR nor LF among them: as `push` of each, except that
    /// a span that fails is not stored in part (failed content is dropped anyway).
    fn span(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        self.state = State::Text;
        self.size = self.size.saturating_add(bytes.len());
        self.line = self.line.saturating_add(bytes.len());
        if self.line + 2 > MAX_TEXT_LINE {
            self.fail(DataError::LineTooLong);
        }
        if !self.is_failed() {
            out.extend_from_slice(bytes);
        }
    }

    fn push_crlf(&mut self, out: &mut Vec<u8>) {
        self.push(b'\r', out);
        self.push(b'\n', out);
        self.line = 0;
    }

    fn push(&mut self, byte: u8, out: &mut Vec<u8>) {
        self.size = self.size.saturating_add(1);
        if byte != b'\r' && byte != b'\n' {
            self.line = self.line.saturating_add(1);
            if self.line + 2 > MAX_TEXT_LINE {
                self.fail(DataError::LineTooLong);
            }
        }
        if !self.is_failed() {
            out.push(byte);
        }
    }

    /// Records the first problem; the rest of the data is only read, not kept.
    fn fail(&mut self, error: DataError) {
        self.error.get_or_insert(error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Receives `input` split at every possible point into two pieces; all splits must agree.
    /// Returns the result and the number of bytes left after the end-of-data line.
    fn receive_in(
        input: &[u8],
        max: usize,
        mode: BareNewline,
    ) -> Option<(Result<Vec<u8>, DataError>, usize)> {
        let mut results = Vec::new();
        for split in 0..=input.len() {
            let (a, b) = input.split_at(split);
            let mut rx = DataReceiver::with_bare_newline(max, mode);
            let result = match rx.ingest(a) {
                Some(used) => Some(a.len() - used + b.len()),
                None => rx.ingest(b).map(|used| b.len() - used),
            };
            results.push(result.map(|left| (rx.finish(), left)));
        }
        let first = results.first().cloned().flatten();
        assert!(results.iter().all(|r| *r == first), "{results:?}");
        first
    }

    fn receive(input: &[u8], max: usize) -> Option<(Result<Vec<u8>, DataError>, usize)> {
        receive_in(input, max, BareNewline::Reject)
    }

    fn normalize(input: &[u8]) -> Option<(Result<Vec<u8>, DataError>, usize)> {
        receive_in(input, 100_000, BareNewline::Normalize)
    }

    #[test]
    fn unstuffs_dots_and_stops_at_crlf_dot_crlf() {
        let got = receive(b"a\r\n..b\r\n...\r\n.c\r\n.\r\nQUIT\r\n", 1000);
        assert_eq!(got, Some((Ok(b"a\r\n.b\r\n..\r\nc\r\n".to_vec()), 6)));
    }

    #[test]
    fn a_dot_first_line_is_an_empty_message() {
        assert_eq!(receive(b".\r\n", 10), Some((Ok(Vec::new()), 0)));
    }

    /// The published smuggling vectors (SEC Consult, December 2023) and a few more look-alikes:
    /// (fake end of data, bare newline found, what normalisation stores).
    const VECTORS: &[(&[u8], Option<DataError>, &[u8])] = &[
        (b"\n.\n", Some(DataError::BareLf), b"\r\n.\r\n"),
        (b"\n.\r\n", Some(DataError::BareLf), b"\r\n.\r\n"),
        (b"\r.\r", Some(DataError::BareCr), b"\r\n.\r\n"),
        (b"\r\n.\r", Some(DataError::BareCr), b"\r\n\r\n"),
        (b"\r.\r\n", Some(DataError::BareCr), b"\r\n.\r\n"),
        (b"\r\n\x00.\r\n", None, b"\r\n\x00.\r\n"),
        (b"\r\n.\n", Some(DataError::BareLf), b"\r\n\r\n"),
        (b"\r\n.\r\r\n", Some(DataError::BareCr), b"\r\n\r\n\r\n"),
        (b"\r\n. \r\n", None, b"\r\n \r\n"),
        (
            b"\r\r\n.\r\r\n",
            Some(DataError::BareCr),
            b"\r\n\r\n\r\n\r\n",
        ),
    ];

    /// `x<fake>MAIL FROM:<evil@x.test>\r\n` — a vector with a smuggled command after it.
    fn smuggled(fake: &[u8]) -> Vec<u8> {
        let mut input = b"x".to_vec();
        input.extend_from_slice(fake);
        input.extend_from_slice(b"MAIL FROM:<evil@x.test>\r\n");
        input
    }

    #[test]
    fn look_alike_terminators_never_end_the_data() {
        for (fake, _, _) in VECTORS {
            for mode in [BareNewline::Reject, BareNewline::Normalize] {
                let input = smuggled(fake);
                assert_eq!(receive_in(&input, 1000, mode), None, "{fake:?} {mode:?}");
            }
        }
    }

    #[test]
    fn reject_mode_refuses_bare_newlines_after_reading_to_the_real_end() {
        for (fake, error, stored) in VECTORS {
            let mut input = smuggled(fake);
            input.extend_from_slice(b".\r\nRSET\r\n");
            let got = receive(&input, 1000);
            // Without a bare newline the vector is ordinary content, kept as normalisation would.
            let expected = match error {
                Some(error) => Err(*error),
                None => {
                    let mut kept = b"x".to_vec();
                    kept.extend_from_slice(stored);
                    kept.extend_from_slice(b"MAIL FROM:<evil@x.test>\r\n");
                    Ok(kept)
                }
            };
            assert_eq!(got, Some((expected, 6)), "{fake:?}");
        }
    }

    #[test]
    fn normalize_mode_stores_crlf_and_keeps_the_smuggled_text_inside() {
        for (fake, _, stored) in VECTORS {
            let mut input = smuggled(fake);
            input.extend_from_slice(b".\r\nRSET\r\n");
            let mut expected = b"x".to_vec();
            expected.extend_from_slice(stored);
            expected.extend_from_slice(b"MAIL FROM:<evil@x.test>\r\n");
            assert_eq!(normalize(&input), Some((Ok(expected), 6)), "{fake:?}");
        }
    }

    #[test]
    fn a_dot_after_a_normalised_newline_is_content_not_stuffing() {
        let got = normalize(b"a\n..b\r\n..c\r\n.\r\n");
        assert_eq!(got, Some((Ok(b"a\r\n..b\r\n.c\r\n".to_vec()), 0)));
    }

    #[test]
    fn the_first_bare_newline_is_reported() {
        assert_eq!(
            receive(b"a\rb\nc\r\n.\r\n", 100),
            Some((Err(DataError::BareCr), 0))
        );
        assert_eq!(
            receive(b"a\nb\rc\r\n.\r\n", 100),
            Some((Err(DataError::BareLf), 0))
        );
        // A CR right before the end-of-data line is bare too.
        assert_eq!(
            receive(b"a\r\r\n.\r\n", 100),
            Some((Err(DataError::BareCr), 0))
        );
    }

    #[test]
    fn too_large_content_is_read_to_the_end_and_dropped() {
        let got = receive(b"0123456789\r\n.\r\nNOOP\r\n", 11);
        assert_eq!(got, Some((Err(DataError::TooLarge), 6)));
        let exact = receive(b"012345678\r\n.\r\n", 11);
        assert_eq!(exact, Some((Ok(b"012345678\r\n".to_vec()), 0)));
        // Too large wins over a bare newline.
        let both = receive(b"a\nbcdefghijkl\r\n.\r\n", 11);
        assert_eq!(both, Some((Err(DataError::TooLarge), 0)));
    }

    #[test]
    fn text_lines_are_limited_to_1000_octets_with_crlf() {
        let line = |len: usize, lead: &[u8]| {
            let mut input = lead.to_vec();
            input.extend(std::iter::repeat_n(b'a', len));
            input.extend_from_slice(b"\r\nnext\r\n.\r\n");
            input
        };
        let ok = receive(&line(MAX_TEXT_LINE - 2, b""), 5000).map(|(r, _)| r.map(|d| d.len()));
        assert_eq!(ok, Some(Ok(MAX_TEXT_LINE + 6)));
        let long = receive(&line(MAX_TEXT_LINE - 1, b""), 5000);
        assert_eq!(long, Some((Err(DataError::LineTooLong), 0)));
        // Measured after unstuffing: a stuffed dot does not count.
        let stuffed = receive(&line(MAX_TEXT_LINE - 3, b".."), 5000).map(|(r, _)| r.is_ok());
        assert_eq!(stuffed, Some(true));
        // After normalisation: a bare LF splits the line.
        let mut split = vec![b'a'; 900];
        split.push(b'\n');
        split.extend([b'b'; 900]);
        split.extend_from_slice(b"\r\n.\r\n");
        assert_eq!(normalize(&split).map(|(r, _)| r.is_ok()), Some(true));
        assert_eq!(
            receive(&split, 5000),
            Some((Err(DataError::BareLf), 0)),
            "reject mode"
        );
    }

    #[test]
    fn an_overlong_line_keeps_nothing_and_memory_stays_bounded() {
        let mut rx = DataReceiver::new(10_000_000);
        let chunk = vec![b'z'; 64 * 1024];
        for _ in 0..16 {
            assert_eq!(rx.ingest(&chunk), None);
        }
        assert!(rx.data.is_empty());
        assert_eq!(rx.ingest(b"\r\n.\r\n"), Some(5));
        assert_eq!(rx.finish(), Err(DataError::LineTooLong));
    }

    #[test]
    fn reports_done_and_uses_nothing_after_the_end() {
        let mut rx = DataReceiver::new(100);
        assert_eq!(rx.ingest(b"hi\r\n.\r"), None);
        assert!(!rx.is_done());
        assert_eq!(rx.ingest(b"\nRSET\r\n"), Some(1));
        assert!(rx.is_done());
        assert_eq!(rx.ingest(b"more"), Some(0));
        assert_eq!(rx.finish(), Ok(b"hi\r\n".to_vec()));
    }

    /// BDAT content split at every point into two chunks; all splits must agree.
    fn chunked(input: &[u8], max: usize, mode: BareNewline) -> Result<Vec<u8>, DataError> {
        let mut results = Vec::new();
        for split in 0..=input.len() {
            let (a, b) = input.split_at(split);
            let mut rx = DataReceiver::chunked(max, mode);
            let mut out = Vec::new();
            rx.chunk_into(a, &mut out);
            rx.chunk_into(b, &mut out);
            rx.end_chunks(&mut out);
            assert!(rx.is_done());
            results.push(rx.outcome().map(|size| {
                assert_eq!(size, out.len());
                out
            }));
        }
        let first = results[0].clone();
        assert!(results.iter().all(|r| *r == first), "{results:?}");
        first
    }

    #[test]
    fn bdat_chunks_are_taken_as_they_are_with_the_same_line_checks() {
        let reject = |input: &[u8]| chunked(input, 1000, BareNewline::Reject);
        // No unstuffing and no end-of-data line: dots are content, ".\r\n" too.
        assert_eq!(
            reject(b"a\r\n..b\r\n.\r\nc"),
            Ok(b"a\r\n..b\r\n.\r\nc".to_vec())
        );
        assert_eq!(reject(b""), Ok(Vec::new()));
        assert_eq!(reject(b"x\ny\r\n"), Err(DataError::BareLf));
        assert_eq!(
            reject(b"x\r"),
            Err(DataError::BareCr),
            "a CR at the very end"
        );
        let normalize = chunked(b"x\ny\r", 1000, BareNewline::Normalize);
        assert_eq!(normalize, Ok(b"x\r\ny\r\n".to_vec()));
        assert_eq!(
            chunked(b"0123456789", 9, BareNewline::Reject),
            Err(DataError::TooLarge)
        );
        assert_eq!(
            chunked(b"012345678", 9, BareNewline::Reject).map(|d| d.len()),
            Ok(9)
        );
        let long = vec![b'a'; MAX_TEXT_LINE - 1];
        assert_eq!(reject(&long), Err(DataError::LineTooLong));
    }

    #[test]
    fn random_input_is_handled_in_any_chunking() {
        let alphabet = b"\r\n.\x00a";
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng as usize
        };
        for _ in 0..2000 {
            let len = next() % 40;
            let input: Vec<u8> = (0..len)
                .map(|_| alphabet[next() % alphabet.len()])
                .collect();
            for mode in [BareNewline::Reject, BareNewline::Normalize] {
                if let Some((Ok(data), left)) = receive_in(&input, 1000, mode) {
                    // Accepted content never holds a bare CR or LF, and used input ends in CRLF.CRLF
                    // (or is just ".\r\n").
                    let used = &input[..input.len() - left];
                    assert!(
                        used.ends_with(b"\r\n.\r\n") || used == b".\r\n",
                        "{input:?}"
                    );
                    for (i, &b) in data.iter().enumerate() {
                        let crlf = match b {
                            b'\r' => data.get(i + 1) == Some(&b'\n'),
                            b'\n' => i > 0 && data[i - 1] == b'\r',
                            _ => true,
                        };
                        assert!(crlf, "{input:?} -> {data:?}");
                    }
                }
            }
        }
    }
}

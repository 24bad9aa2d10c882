//! The DATA receiver: finds the end-of-data line, removes dot-stuffing and caps the size.
//!
//! Only `<CR><LF>.<CR><LF>` ends the data (RFC 5321 §4.1.1.4); look-alikes such as `<LF>.<LF>`,
//! `<CR>.<CR>` or `<CR><LF>.<LF>` are message content. Accepting them would let a client smuggle
//! a second message past a server that reads the stream differently ("SMTP smuggling").
//! Lines are only ever ended by CRLF here; a line starts after CRLF (or at the start of the data).

/// Why the received data cannot be accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataError {
    /// More than the configured maximum was sent; nothing was kept.
    TooLarge,
}

/// Where the receiver is within the current line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// At the start of a line: after CRLF, or before the first byte of the data.
    LineStart,
    /// Inside a line; the previous byte was not CR.
    Text,
    /// Inside a line; the previous byte was CR.
    TextCr,
    /// The line started with a dot (not yet stored: it is either stuffing or the end marker).
    Dot,
    /// The line started with dot, CR.
    DotCr,
    /// The end-of-data line was read.
    Done,
}

/// Receives the message content after `354`. Feed it input with [`DataReceiver::ingest`] until it
/// reports the end, then take the message with [`DataReceiver::finish`].
#[derive(Clone, Debug)]
pub struct DataReceiver {
    data: Vec<u8>,
    max_size: usize,
    /// Bytes of content seen (after unstuffing), counting those not kept.
    size: usize,
    state: State,
}

impl DataReceiver {
    /// A receiver that keeps at most `max_size` bytes of content.
    pub fn new(max_size: usize) -> Self {
        DataReceiver {
            data: Vec::new(),
            max_size,
            size: 0,
            state: State::LineStart,
        }
    }

    /// Consumes content from `input`. Returns `Some(n)` when the end-of-data line was read, `n`
    /// being the bytes of `input` used (what follows belongs to the next command), or `None`
    /// when all of `input` was used and more is needed.
    pub fn ingest(&mut self, input: &[u8]) -> Option<usize> {
        for (i, &byte) in input.iter().enumerate() {
            match (self.state, byte) {
                (State::Done, _) => return Some(i),
                (State::LineStart, b'.') => self.state = State::Dot,
                (State::Dot, b'\r') => self.state = State::DotCr,
                (State::DotCr, b'\n') => {
                    self.state = State::Done;
                    return Some(i + 1);
                }
                (State::DotCr, _) => {
                    // ".<CR>x": the dot was stuffing, the CR is content.
                    self.push(b'\r');
                    self.state = State::TextCr;
                    self.content(byte);
                }
                // The leading dot of any other line is stuffing: drop it, keep the rest.
                (State::Dot, _) => {
                    self.state = State::Text;
                    self.content(byte);
                }
                _ => self.content(byte),
            }
        }
        (self.state == State::Done).then_some(input.len())
    }

    /// True once the content has gone over the maximum size.
    pub fn is_too_large(&self) -> bool {
        self.size > self.max_size
    }

    /// True once the end-of-data line was read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The message: dot-unstuffed, every line ending in CRLF, without the end-of-data line.
    pub fn finish(self) -> Result<Vec<u8>, DataError> {
        if self.is_too_large() {
            Err(DataError::TooLarge)
        } else {
            Ok(self.data)
        }
    }

    /// One byte of content inside a line: store it and track CRLF.
    fn content(&mut self, byte: u8) {
        self.push(byte);
        self.state = match (self.state, byte) {
            (_, b'\r') => State::TextCr,
            (State::TextCr, b'\n') => State::LineStart,
            _ => State::Text,
        };
    }

    fn push(&mut self, byte: u8) {
        self.size = self.size.saturating_add(1);
        if self.size <= self.max_size {
            self.data.push(byte);
        } else if !self.data.is_empty() {
            self.data = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Receives `input` split at every possible point into two pieces; all splits must agree.
    /// Returns the result and the number of bytes left after the end-of-data line.
    fn receive(input: &[u8], max: usize) -> Option<(Result<Vec<u8>, DataError>, usize)> {
        let mut results = Vec::new();
        for split in 0..=input.len() {
            let (a, b) = input.split_at(split);
            let mut rx = DataReceiver::new(max);
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

    #[test]
    fn unstuffs_dots_and_stops_at_crlf_dot_crlf() {
        let got = receive(b"a\r\n..b\r\n...\r\n.c\r\n.\r\nQUIT\r\n", 1000);
        assert_eq!(got, Some((Ok(b"a\r\n.b\r\n..\r\nc\r\n".to_vec()), 6)));
    }

    #[test]
    fn a_dot_first_line_is_an_empty_message() {
        assert_eq!(receive(b".\r\n", 10), Some((Ok(Vec::new()), 0)));
    }

    #[test]
    fn look_alike_terminators_are_content() {
        // (fake terminator, what it becomes in the message); after CRLF the dot is stuffing.
        for (fake, kept) in [
            (&b"\n.\n"[..], &b"\n.\n"[..]),
            (b"\r.\r", b"\r.\r"),
            (b"\r\n.\n", b"\r\n\n"),
            (b"\n.\r\n", b"\n.\r\n"),
            (b"\r.\r\n", b"\r.\r\n"),
            (b"\r\n.\r\r\n", b"\r\n\r\r\n"),
            (b"\r\n. \r\n", b"\r\n \r\n"),
        ] {
            let mut input = b"x".to_vec();
            input.extend_from_slice(fake);
            assert_eq!(receive(&input, 1000), None, "{fake:?} ended the data");
            input.extend_from_slice(b"\r\n.\r\n");
            let mut expected = b"x".to_vec();
            expected.extend_from_slice(kept);
            expected.extend_from_slice(b"\r\n");
            assert_eq!(receive(&input, 1000), Some((Ok(expected), 0)), "{fake:?}");
        }
    }

    #[test]
    fn a_dotted_line_ending_in_bare_lf_keeps_the_rest() {
        let got = receive(b"\r\n.\nMAIL\r\n.\r\n", 100);
        assert_eq!(got, Some((Ok(b"\r\n\nMAIL\r\n".to_vec()), 0)));
    }

    #[test]
    fn too_large_content_is_read_to_the_end_and_dropped() {
        let got = receive(b"0123456789\r\n.\r\nNOOP\r\n", 11);
        assert_eq!(got, Some((Err(DataError::TooLarge), 6)));
        let exact = receive(b"012345678\r\n.\r\n", 11);
        assert_eq!(exact, Some((Ok(b"012345678\r\n".to_vec()), 0)));
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
}

//! Command line framing: CRLF-terminated lines capped at the RFC 5321 §4.5.3.1.4 length.
//!
//! Commands are strict whatever `bare_newline` says for message content: a line ended by a bare
//! LF, or holding a bare CR, is refused whole, so no part of it can run as a command.

/// The longest command line accepted, CRLF included (RFC 5321 §4.5.3.1.4).
pub const MAX_COMMAND_LINE: usize = 512;

/// What the framer found at the front of the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineEvent<'a> {
    /// A complete command line, without its CRLF.
    Line(&'a [u8]),
    /// A line longer than [`MAX_COMMAND_LINE`]; everything up to and including its LF was dropped.
    TooLong,
    /// A line ended by LF without CR before it; the line was dropped.
    BareLf,
    /// A CRLF-ended line with a CR inside it; the line was dropped.
    BareCr,
}

/// Splits buffered input into command lines. It keeps only one bit of state: whether it is
/// skipping the rest of an over-long line, so memory stays bounded whatever the client sends.
#[derive(Clone, Debug, Default)]
pub struct LineReader {
    discarding: bool,
}

impl LineReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Looks at the front of `input`. Returns the event found (if any) and how many bytes of
    /// `input` were used up; the caller drops those bytes. `(None, 0)` means "need more input";
    /// `(None, n)` means `n` bytes of an over-long line were discarded.
    pub fn next<'a>(&mut self, input: &'a [u8]) -> (Option<LineEvent<'a>>, usize) {
        let lf = input.iter().position(|&b| b == b'\n');
        if self.discarding {
            return match lf {
                Some(pos) => {
                    self.discarding = false;
                    (Some(LineEvent::TooLong), pos + 1)
                }
                None => (None, input.len()),
            };
        }
        match lf {
            Some(pos) if pos + 1 > MAX_COMMAND_LINE => (Some(LineEvent::TooLong), pos + 1),
            Some(pos) => match pos.checked_sub(1).and_then(|cr| input.get(..=cr)) {
                Some([line @ .., b'\r']) if line.contains(&b'\r') => {
                    (Some(LineEvent::BareCr), pos + 1)
                }
                Some([line @ .., b'\r']) => (Some(LineEvent::Line(line)), pos + 1),
                _ => (Some(LineEvent::BareLf), pos + 1),
            },
            // Without the LF the line is already at least one byte too long.
            None if input.len() >= MAX_COMMAND_LINE => {
                self.discarding = true;
                (None, input.len())
            }
            None => (None, 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in chunks of `chunk` bytes, the way the session buffers it, and collects events.
    fn events(input: &[u8], chunk: usize) -> Vec<String> {
        let mut reader = LineReader::new();
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            buf.extend_from_slice(piece);
            loop {
                let (event, used) = reader.next(&buf);
                let event = match event {
                    Some(LineEvent::Line(l)) => Some(String::from_utf8_lossy(l).into_owned()),
                    Some(other) => Some(format!("{other:?}")),
                    None => None,
                };
                buf.drain(..used);
                match event {
                    Some(event) => out.push(event),
                    None => break,
                }
            }
        }
        out
    }

    #[test]
    fn splits_crlf_lines_and_flags_bare_lf() {
        let input = b"EHLO a\r\nNOOP\nQUIT\r\n\r\n";
        let expected = vec!["EHLO a", "BareLf", "QUIT", ""];
        for chunk in 1..input.len() {
            assert_eq!(events(input, chunk), expected, "chunk {chunk}");
        }
    }

    #[test]
    fn flags_a_bare_cr_inside_a_line() {
        let input = b"NOOP\rRSET\r\nQUIT\r\r\n\r\r\nHELO a\r\n";
        let expected = vec!["BareCr", "BareCr", "BareCr", "HELO a"];
        for chunk in 1..input.len() {
            assert_eq!(events(input, chunk), expected, "chunk {chunk}");
        }
    }

    #[test]
    fn enforces_the_512_octet_limit_at_any_chunking() {
        let mut input = Vec::new();
        let ok = format!("NOOP {}\r\n", "a".repeat(MAX_COMMAND_LINE - 7));
        assert_eq!(ok.len(), MAX_COMMAND_LINE);
        input.extend_from_slice(ok.as_bytes());
        input.extend_from_slice(format!("NOOP {}\r\n", "b".repeat(MAX_COMMAND_LINE)).as_bytes());
        input.extend_from_slice(b"QUIT\r\n");
        for chunk in [1, 2, 7, 100, 511, 512, 513, 4096] {
            let got = events(&input, chunk);
            assert_eq!(got.len(), 3, "chunk {chunk}: {got:?}");
            assert_eq!(got[0].len(), MAX_COMMAND_LINE - 2);
            assert_eq!(got[1..], ["TooLong", "QUIT"]);
        }
    }

    #[test]
    fn discarding_uses_up_input_without_an_event() {
        let mut reader = LineReader::new();
        let long = vec![b'x'; 2000];
        assert_eq!(reader.next(&long), (None, 2000));
        assert_eq!(reader.next(b"yyy"), (None, 3));
        assert_eq!(reader.next(b"z\r\nQUIT"), (Some(LineEvent::TooLong), 3));
        assert_eq!(reader.next(b"QUIT"), (None, 0));
    }
}

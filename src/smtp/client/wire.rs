//! Pure pieces of the outbound client: reply parsing, EHLO capabilities, dot-stuffing.

use crate::mail::Reply;

/// The longest reply we read before calling the peer broken.
pub const MAX_REPLY: usize = 64 * 1024;

/// Parses one complete reply from the front of `buf`. `Ok(None)`: more bytes are needed.
/// Returns the reply and how many bytes it used.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, String> {
    let mut pos = 0;
    let mut code = None;
    let mut lines: Vec<String> = Vec::new();
    loop {
        let Some(nl) = buf[pos..].iter().position(|&b| b == b'\n') else {
            return if buf.len() > MAX_REPLY {
                Err("reply too long".into())
            } else {
                Ok(None)
            };
        };
        let mut line = &buf[pos..pos + nl];
        while let Some(rest) = line.strip_suffix(b"\r") {
            line = rest;
        }
        pos += nl + 1;
        if line.len() < 3 || !line[..3].iter().all(u8::is_ascii_digit) {
            return Err(format!(
                "malformed reply line: {:?}",
                String::from_utf8_lossy(line)
            ));
        }
        let this: u16 = line[..3]
            .iter()
            .fold(0, |a, d| a * 10 + u16::from(d - b'0'));
        if !(200..600).contains(&this) || code.is_some_and(|c| c != this) {
            return Err(format!(
                "unexpected reply code in: {:?}",
                String::from_utf8_lossy(line)
            ));
        }
        code = Some(this);
        let sep = line.get(3).copied();
        // A peer's text ends up in logs and the queue file: no control characters in it.
        let text = String::from_utf8_lossy(line.get(4..).unwrap_or_default())
            .chars()
            .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
            .collect();
        lines.push(text);
        match sep {
            Some(b'-') => continue,
            Some(b' ') | None => break,
            Some(_) => {
                return Err(format!(
                    "malformed reply line: {:?}",
                    String::from_utf8_lossy(line)
                ))
            }
        }
    }
    let code = code.unwrap_or(0);
    Ok(Some((split_enhanced(code, &lines), pos)))
}

/// Takes an enhanced status code ("4.7.0 ") off the reply text when every line carries one of the
/// reply's class.
fn split_enhanced(code: u16, lines: &[String]) -> Reply {
    let parse = |l: &str| -> Option<([u16; 3], String)> {
        let (head, rest) = l.split_once(' ').unwrap_or((l, ""));
        let mut parts = head.split('.');
        let a: u16 = parts.next()?.parse().ok()?;
        let b: u16 = parts.next()?.parse().ok()?;
        let c: u16 = parts.next()?.parse().ok()?;
        (parts.next().is_none() && a == code / 100).then(|| ([a, b, c], rest.to_string()))
    };
    let parsed: Option<Vec<_>> = lines.iter().map(|l| parse(l)).collect();
    match parsed {
        Some(p) if !p.is_empty() => {
            let enhanced = p[0].0;
            let text = p.into_iter().map(|(_, t)| t).collect::<Vec<_>>().join("\n");
            Reply::new(code, enhanced, text)
        }
        _ => Reply::bare(code, lines.join("\n")),
    }
}

/// What a server offered in its EHLO reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub pipelining: bool,
    pub starttls: bool,
    pub eight_bit_mime: bool,
    pub smtputf8: bool,
    /// RFC 3461 DSN: NOTIFY/ORCPT/RET/ENVID may be passed on.
    pub dsn: bool,
    /// RFC 3030 CHUNKING: the message may go in BDAT chunks, as it is.
    pub chunking: bool,
    /// RFC 8689 REQUIRETLS: the server takes on a sender's demand for verified TLS.
    pub requiretls: bool,
    pub size: Option<u64>,
}

impl Capabilities {
    pub fn from_ehlo(reply: &Reply) -> Capabilities {
        let mut caps = Capabilities::default();
        for line in reply.text.split('\n').skip(1) {
            let mut words = line.split_ascii_whitespace();
            let keyword = words.next().unwrap_or_default().to_ascii_uppercase();
            match keyword.as_str() {
                "PIPELINING" => caps.pipelining = true,
                "STARTTLS" => caps.starttls = true,
                "8BITMIME" => caps.eight_bit_mime = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "DSN" => caps.dsn = true,
                "CHUNKING" => caps.chunking = true,
                "REQUIRETLS" => caps.requiretls = true,
                "SIZE" => caps.size = words.next().and_then(|s| s.parse().ok()).filter(|&s| s > 0),
                _ => {}
            }
        }
        caps
    }
}

/// The DATA payload on the wire: every line ends in CRLF (a bare LF or a bare CR becomes CRLF),
/// lines starting with "." get another "." (RFC 5321 §4.5.2), and the terminating ".\r\n"
/// follows. Nothing in the output but that final line can be read as an end of data, not even by
/// a lenient receiver that ends lines at a bare CR or LF (there are none) or drops NUL bytes (a
/// line of NULs then "." is stuffed too), so a message can never smuggle another one downstream.
pub fn dot_stuff(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 64 + 5);
    let mut stuffer = DotStuffer::new();
    stuffer.push(data, &mut out);
    stuffer.finish(&mut out);
    out
}

/// [`dot_stuff`] piece by piece, so a large message never needs a stuffed copy of its own: the
/// output of the pieces, then of `finish`, is `dot_stuff` of the pieces joined.
#[derive(Debug)]
pub struct DotStuffer {
    line_start: bool,
    /// The last byte was a CR (written as CRLF): an LF right after it belongs to it.
    after_cr: bool,
    /// NULs at the start of a line, held until it is known whether a "." follows them.
    nuls: usize,
}

impl Default for DotStuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl DotStuffer {
    pub fn new() -> DotStuffer {
        DotStuffer {
            line_start: true,
            after_cr: false,
            nuls: 0,
        }
    }

    /// Appends the wire form of `data` to `out`.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) {
        out.reserve(data.len() + data.len() / 64 + 2);
        let mut i = 0;
        while let Some(&byte) = data.get(i) {
            i += 1;
            if std::mem::take(&mut self.after_cr) && byte == b'\n' {
                continue;
            }
            match byte {
                b'\r' | b'\n' => {
                    self.release_nuls(out);
                    out.extend_from_slice(b"\r\n");
                    self.line_start = true;
                    self.after_cr = byte == b'\r';
                }
                0 if self.line_start => self.nuls += 1,
                _ => {
                    if self.line_start && byte == b'.' {
                        out.push(b'.');
                    }
                    self.release_nuls(out);
                    out.push(byte);
                    self.line_start = false;
                    // The rest of the line up to its CR or LF goes as it is.
                    let rest = &data[i..];
                    let end = memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
                    out.extend_from_slice(&rest[..end]);
                    i += end;
                }
            }
        }
    }

    /// Ends the last line if it is open and appends the end-of-data line.
    pub fn finish(mut self, out: &mut Vec<u8>) {
        self.release_nuls(out);
        if !self.line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }

    fn release_nuls(&mut self, out: &mut Vec<u8>) {
        if self.nuls > 0 {
            out.extend(std::iter::repeat_n(0u8, self.nuls));
            self.nuls = 0;
            self.line_start = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_and_multi_line_replies() {
        let (r, n) = parse_reply(b"250 2.1.0 Ok\r\nrest").unwrap().unwrap();
        assert_eq!(
            (r.code, r.enhanced, r.text.as_str(), n),
            (250, Some([2, 1, 0]), "Ok", 14)
        );
        let (r, n) = parse_reply(b"250-mx.b.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.code, 250);
        assert_eq!(r.enhanced, None);
        assert_eq!(r.text, "mx.b.test\nPIPELINING\nSTARTTLS");
        assert_eq!(n, 45);
        assert!(parse_reply(b"250-mx.b.test\r\n250-PIPE").unwrap().is_none());
        assert!(parse_reply(b"25").unwrap().is_none());
    }

    #[test]
    fn rejects_malformed_replies() {
        assert!(parse_reply(b"hello\r\n").is_err());
        assert!(parse_reply(b"250-a\r\n451 b\r\n").is_err());
        assert!(parse_reply(b"250xa\r\n").is_err());
        assert!(parse_reply(&vec![b'2'; MAX_REPLY + 1]).is_err());
    }

    #[test]
    fn control_characters_never_reach_the_reply_text() {
        // Found by the reply_parser fuzz target: "\r\r\n" left a CR in the text, so the reply
        // we would write for it read back differently.
        let crash = b"451 4.7.10\r\r\n4 ";
        let (r, n) = parse_reply(crash).unwrap().unwrap();
        assert_eq!(
            (r.code, r.enhanced, r.text.as_str(), n),
            (451, Some([4, 7, 10]), "", 13)
        );
        let (r, _) = parse_reply(b"550 5.1.1 a\rb\x1b[2Jc\x00\td\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.text, "a?b?[2Jc?\td");
        let (back, _) = parse_reply(&r.to_bytes()).unwrap().unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn enhanced_code_must_match_reply_class() {
        let (r, _) = parse_reply(b"451 4.7.0 try later\r\n").unwrap().unwrap();
        assert_eq!(r.enhanced, Some([4, 7, 0]));
        let (r, _) = parse_reply(b"451 2.0.0 odd\r\n").unwrap().unwrap();
        assert_eq!(r.enhanced, None);
        assert_eq!(r.text, "2.0.0 odd");
    }

    #[test]
    fn capabilities_from_ehlo() {
        let r = Reply::bare(
            250,
            "mx\nPIPELINING\nSIZE 1000\n8BITMIME\nstarttls\nSMTPUTF8\nRequireTLS",
        );
        let c = Capabilities::from_ehlo(&r);
        assert!(c.pipelining && c.starttls && c.eight_bit_mime && c.smtputf8);
        assert!(c.requiretls);
        assert_eq!(c.size, Some(1000));
        assert_eq!(
            Capabilities::from_ehlo(&Reply::bare(250, "mx\nSTARTTLS-ish")),
            Capabilities::default()
        );
    }

    #[test]
    fn stuffing_piece_by_piece_is_stuffing_the_whole() {
        let alphabet = b"\r\n.\x00a";
        let mut rng = 0x853c_49e6_748f_ea9b_u64;
        for _ in 0..3000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let len = (rng % 24) as usize;
            let data: Vec<u8> = (0..len)
                .map(|i| alphabet[((rng >> (i % 50)) as usize + i) % alphabet.len()])
                .collect();
            let whole = dot_stuff(&data);
            for split in 0..=data.len() {
                let mut stuffer = DotStuffer::new();
                let mut out = Vec::new();
                for piece in [&data[..split], &data[split..]] {
                    stuffer.push(piece, &mut out);
                }
                stuffer.finish(&mut out);
                assert_eq!(out, whole, "{data:?} split at {split}");
            }
        }
    }

    #[test]
    fn dot_stuffing_and_termination() {
        assert_eq!(dot_stuff(b"a\r\n.b\r\n..\r\n"), b"a\r\n..b\r\n...\r\n.\r\n");
        assert_eq!(dot_stuff(b"no newline"), b"no newline\r\n.\r\n");
        assert_eq!(dot_stuff(b""), b".\r\n");
        // Bare LF line ends become CRLF, so "\n.\n" cannot end the data early downstream.
        assert_eq!(dot_stuff(b"a\n.\nb\n"), b"a\r\n..\r\nb\r\n.\r\n");
        let out = dot_stuff(b"x\r\n.\r\ny\r\n");
        assert_eq!(out.windows(5).filter(|w| w == b"\r\n.\r\n").count(), 1);
        // A bare CR is a line end too, so "\r.\r" is a stuffed line, not a lenient end of data.
        assert_eq!(dot_stuff(b"a\r.\rb"), b"a\r\n..\r\nb\r\n.\r\n");
        assert_eq!(dot_stuff(b"a\r\r\n."), b"a\r\n\r\n..\r\n.\r\n");
        // NULs before a dot: stuffed, so a receiver dropping NULs sees "..", not ".".
        assert_eq!(dot_stuff(b"a\r\n\x00.\r\n"), b"a\r\n.\x00.\r\n.\r\n");
        assert_eq!(dot_stuff(b"\x00\x00x.\n"), b"\x00\x00x.\r\n.\r\n");
    }

    /// Bare CR and LF become CRLF and the last line gets one: what a strict receiver must store.
    fn normalized(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while let Some(&b) = data.get(i) {
            match b {
                b'\r' if data.get(i + 1) == Some(&b'\n') => {
                    out.extend_from_slice(b"\r\n");
                    i += 1;
                }
                b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
                _ => out.push(b),
            }
            i += 1;
        }
        if !out.is_empty() && !out.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    /// The lines a lenient receiver sees: ended by CRLF, bare CR or bare LF, NULs dropped.
    fn lenient_lines(wire: &[u8]) -> Vec<Vec<u8>> {
        let mut lines = vec![Vec::new()];
        let mut i = 0;
        while let Some(&b) = wire.get(i) {
            match b {
                b'\r' | b'\n' => {
                    if b == b'\r' && wire.get(i + 1) == Some(&b'\n') {
                        i += 1;
                    }
                    lines.push(Vec::new());
                }
                0 => {}
                _ => lines.last_mut().into_iter().for_each(|l| l.push(b)),
            }
            i += 1;
        }
        lines
    }

    #[test]
    fn dot_stuffed_output_never_ends_early_for_any_input() {
        use crate::smtp::proto::DataReceiver;
        let mut rng = 0x853c_49e6_748f_ea9b_u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng as usize
        };
        let alphabet = b"\r\n.\x00a";
        for round in 0..20_000 {
            let len = next() % 48;
            let data: Vec<u8> = (0..len)
                .map(|_| match round % 2 {
                    0 => alphabet[next() % alphabet.len()],
                    _ => next() as u8,
                })
                .collect();
            let wire = dot_stuff(&data);
            if data.is_empty() {
                assert_eq!(wire, b".\r\n");
                continue;
            }
            let ends = wire.windows(5).filter(|w| w == b"\r\n.\r\n").count();
            assert!(
                ends == 1 && wire.ends_with(b"\r\n.\r\n"),
                "{data:?} -> {wire:?}"
            );
            for (i, &b) in wire.iter().enumerate() {
                let paired = match b {
                    b'\r' => wire.get(i + 1) == Some(&b'\n'),
                    b'\n' => i > 0 && wire[i - 1] == b'\r',
                    _ => true,
                };
                assert!(paired, "bare CR/LF: {data:?} -> {wire:?}");
            }
            let lines = lenient_lines(&wire);
            let dots = lines.iter().filter(|l| l.as_slice() == b".").count();
            assert_eq!(dots, 1, "{data:?} -> {wire:?}");
            assert_eq!(lines[lines.len() - 2], b".", "{data:?} -> {wire:?}");
            // A strict receiver ends exactly at the end and gets the (normalised) message back.
            let mut rx = DataReceiver::new(usize::MAX);
            assert_eq!(rx.ingest(&wire), Some(wire.len()), "{data:?} -> {wire:?}");
            assert_eq!(rx.finish(), Ok(normalized(&data)), "{data:?} -> {wire:?}");
        }
    }
}

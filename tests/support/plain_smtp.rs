//! A blocking plaintext SMTP client that reports exactly which replies it read, for tests that
//! must know whether a transaction was acknowledged (crashes, write errors).
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One reply: the code and the text of every line, joined by newlines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

impl Reply {
    /// The enhanced status code at the start of the last line, e.g. "4.3.0".
    pub fn enhanced(&self) -> &str {
        let last = self.text.lines().last().unwrap_or("");
        last.split_whitespace().next().unwrap_or("")
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}

pub struct PlainClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl PlainClient {
    /// Connects, reads the greeting (which must be 220) and says EHLO.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<PlainClient> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        let mut client = PlainClient {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        let greeting = client.reply()?;
        if greeting.code != 220 {
            return Err(io::Error::other(format!("greeting: {greeting}")));
        }
        let ehlo = client.command("EHLO client.test")?;
        if ehlo.code != 250 {
            return Err(io::Error::other(format!("EHLO: {ehlo}")));
        }
        Ok(client)
    }

    /// Reads one (possibly multi-line) reply.
    pub fn reply(&mut self) -> io::Result<Reply> {
        let mut text = Vec::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed",
                ));
            }
            let line = line.trim_end();
            let code = line
                .get(..3)
                .and_then(|c| c.parse::<u16>().ok())
                .ok_or_else(|| io::Error::other(format!("bad reply line {line:?}")))?;
            text.push(line.get(4..).unwrap_or("").to_string());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(Reply {
                    code,
                    text: text.join("\n"),
                });
            }
        }
    }

    /// Sends one command line (CRLF added) and reads its reply.
    pub fn command(&mut self, line: &str) -> io::Result<Reply> {
        self.writer.write_all(format!("{line}\r\n").as_bytes())?;
        self.reply()
    }

    /// MAIL, RCPT, DATA and the message (dot-stuffed here); returns the reply to the final dot.
    /// A refused MAIL, RCPT or DATA is returned as that reply (after RSET).
    pub fn send_mail(&mut self, from: &str, to: &str, data: &[u8]) -> io::Result<Reply> {
        self.send_mail_to(from, &[to], data)
    }

    /// Like `send_mail` with several recipients; any refused one ends the transaction.
    pub fn send_mail_to(&mut self, from: &str, to: &[&str], data: &[u8]) -> io::Result<Reply> {
        let mut commands = vec![format!("MAIL FROM:<{from}>")];
        commands.extend(to.iter().map(|t| format!("RCPT TO:<{t}>")));
        for cmd in commands {
            let r = self.command(&cmd)?;
            if r.code != 250 {
                self.command("RSET")?;
                return Ok(r);
            }
        }
        let r = self.command("DATA")?;
        if r.code != 354 {
            self.command("RSET")?;
            return Ok(r);
        }
        self.writer.write_all(&dot_stuff(data))?;
        self.reply()
    }

    pub fn quit(mut self) {
        let _ = self.command("QUIT");
    }
}

/// The DATA section for `data`: leading dots doubled, CRLF at the end, then ".\r\n".
pub fn dot_stuff(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 16);
    let mut at_line_start = true;
    for &b in data {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

//! `sealpost health HOST:PORT`: a container health check — connect, read the 220 greeting, QUIT.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

/// Check that an SMTP server answers: connect, read a 220 greeting, send QUIT.
///
/// Exits 0 when the greeting is 220, 1 otherwise (connection refused, timeout, another reply).
/// Much lighter than `tls-check`: no TLS, no EHLO. Meant for Docker's HEALTHCHECK, e.g.
/// `sealpost health 127.0.0.1:25`.
#[derive(Args, Debug)]
pub struct HealthArgs {
    /// The server, as HOST:PORT.
    #[arg(value_name = "HOST:PORT")]
    pub target: String,
    /// Connect and per-reply timeout.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Print nothing; only the exit code tells.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

pub fn run(args: HealthArgs) -> anyhow::Result<ExitCode> {
    match check(&args.target, args.timeout) {
        Ok(greeting) => {
            if !args.quiet {
                outln!("{}: ok: {greeting}", args.target);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(reason) => {
            if !args.quiet {
                outln!("{}: unhealthy: {reason}", args.target);
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Returns the last line of the 220 greeting, or why the server is not healthy.
fn check(target: &str, timeout: Duration) -> Result<String, String> {
    let addrs: Vec<_> = target
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {target}: {e}"))?
        .collect();
    let mut last_err = format!("{target} resolves to no address");
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_err = format!("connect {addr}: {e}"),
        }
    }
    let stream = stream.ok_or(last_err)?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("socket: {e}"))?;
    let mut reader = BufReader::new(stream.try_clone().map_err(|e| format!("socket: {e}"))?);
    let greeting = read_reply(&mut reader)?;
    if !greeting.starts_with("220") {
        return Err(format!("greeting is not 220: {greeting}"));
    }
    let mut writer = stream;
    // The greeting decided; a server that drops QUIT is still healthy.
    if writer.write_all(b"QUIT\r\n").is_ok() {
        let _ = read_reply(&mut reader);
    }
    Ok(greeting)
}

/// Reads one (possibly multi-line) SMTP reply and returns its last line.
fn read_reply(reader: &mut impl BufRead) -> Result<String, String> {
    let mut buf = Vec::new();
    // A reply line is at most 512 octets (RFC 5321); allow generous multi-line greetings.
    for _ in 0..100 {
        buf.clear();
        let n = Read::take(&mut *reader, 4096)
            .read_until(b'\n', &mut buf)
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed before a reply".into());
        }
        let line = String::from_utf8_lossy(&buf).trim_end().to_string();
        let bytes = line.as_bytes();
        if bytes.len() < 3 || !bytes[..3].iter().all(u8::is_ascii_digit) {
            return Err(format!("not an SMTP reply: {line}"));
        }
        if bytes.get(3) != Some(&b'-') {
            return Ok(line);
        }
    }
    Err("reply has too many lines".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_single_and_multi_line_replies() {
        let mut r = BufReader::new(&b"220 mx.test ESMTP\r\n"[..]);
        assert_eq!(read_reply(&mut r).as_deref(), Ok("220 mx.test ESMTP"));
        let mut r = BufReader::new(&b"220-mx.test\r\n220 ready\r\n"[..]);
        assert_eq!(read_reply(&mut r).as_deref(), Ok("220 ready"));
        let mut r = BufReader::new(&b"HTTP/1.1 400\r\n"[..]);
        assert!(read_reply(&mut r).is_err());
        let mut r = BufReader::new(&b""[..]);
        assert!(read_reply(&mut r).is_err());
    }
}

//! Fuzz target: command-line framing and the command and path parsers on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealpost::smtp::proto::address::parse_path;
use sealpost::smtp::proto::command::parse;
use sealpost::smtp::proto::{Command, LineEvent, LineReader, MAX_COMMAND_LINE};

fuzz_target!(|data: &[u8]| {
    check_command(data);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some((mailbox, rest)) = parse_path(text) {
            assert!(text.ends_with(rest) && mailbox.len() <= 254, "{text:?}");
            assert!(!mailbox.chars().any(char::is_control), "{text:?}");
        }
    }
    // Framing: the bytes fed in two pieces, as the session buffers them.
    let split = data
        .first()
        .map_or(0, |&b| usize::from(b) % (data.len() + 1));
    let mut reader = LineReader::new();
    let mut buf = Vec::new();
    for piece in [&data[..split], &data[split..]] {
        buf.extend_from_slice(piece);
        loop {
            let (event, used) = reader.next(&buf);
            assert!(used <= buf.len());
            let more = event.is_some();
            if let Some(LineEvent::Line(line)) = event {
                assert!(line.len() + 2 <= MAX_COMMAND_LINE);
                assert!(!line.contains(&b'\r') && !line.contains(&b'\n'));
                check_command(line);
            }
            buf.drain(..used);
            if !more && (used == 0 || buf.is_empty()) {
                break;
            }
        }
    }
});

/// A command comes out clean of control characters, or a well-formed 5xx reply does.
fn check_command(line: &[u8]) {
    let clean = |s: &str| !s.chars().any(|c| c.is_control() && c != '\t');
    match parse(line) {
        Ok(Command::Ehlo(name) | Command::Helo(name)) => {
            assert!(!name.is_empty() && name.len() <= 255 && clean(&name));
        }
        Ok(Command::Mail(mail)) => {
            assert!(clean(&mail.address));
            if let Some(envid) = &mail.dsn.envid {
                assert!(!envid.is_empty() && envid.len() <= 100 && clean(envid));
            }
        }
        Ok(Command::Rcpt(rcpt)) => {
            assert!(!rcpt.address.is_empty() && clean(&rcpt.address));
            if let Some(orcpt) = &rcpt.dsn.orcpt {
                assert!(!orcpt.address.is_empty() && clean(&orcpt.address));
            }
        }
        Ok(_) => {}
        Err(reply) => {
            assert!(reply.is_permanent(), "{reply}");
            let bytes = reply.to_bytes();
            let body = bytes.strip_suffix(b"\r\n").expect("reply ends in CRLF");
            assert!(!body.contains(&b'\n'), "{bytes:?}");
            assert!(!body.contains(&b'\r'), "{bytes:?}");
        }
    }
}

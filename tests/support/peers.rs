//! Fake SMTP peers for tests: a plaintext server that records what it hears, and a proxy that
//! strips STARTTLS from EHLO replies.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// Everything a fake peer received, shared with the test.
pub type Seen = Arc<Mutex<Vec<String>>>;

/// A plaintext SMTP server without STARTTLS that accepts everything and records each line.
pub fn plaintext_peer() -> (u16, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let log = log.clone();
            std::thread::spawn(move || {
                let Ok(read) = stream.try_clone() else { return };
                let mut reader = BufReader::new(read);
                let _ = stream.write_all(b"220 plain.test ESMTP\r\n");
                let mut in_data = false;
                let mut line = String::new();
                while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                    let cmd = line.trim_end().to_string();
                    log.lock().unwrap().push(cmd.clone());
                    let reply: &[u8] = match (in_data, cmd.as_str()) {
                        (true, ".") => {
                            in_data = false;
                            b"250 2.0.0 Ok\r\n"
                        }
                        (true, _) => b"",
                        (_, c) if c.starts_with("EHLO") => b"250-plain.test\r\n250 PIPELINING\r\n",
                        (_, "DATA") => {
                            in_data = true;
                            b"354 go on\r\n"
                        }
                        (_, "QUIT") => {
                            let _ = stream.write_all(b"221 bye\r\n");
                            return;
                        }
                        _ => b"250 2.0.0 Ok\r\n",
                    };
                    let _ = stream.write_all(reply);
                    line.clear();
                }
            });
        }
    });
    (port, seen)
}

/// A man in the middle in front of `upstream` that removes STARTTLS from EHLO replies and
/// records, as text, every byte the client sent.
pub fn starttls_stripping_proxy(upstream: u16) -> (u16, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                return;
            };
            let (mut c_read, mut s_write) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            let log = log.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = c_read.read(&mut buf) {
                    if n == 0 || s_write.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    log.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                }
                let _ = s_write.shutdown(std::net::Shutdown::Both);
            });
            let mut c_write = client;
            std::thread::spawn(move || {
                let mut reader = BufReader::new(server);
                let mut pending: Vec<String> = Vec::new();
                let mut line = String::new();
                while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                    let l = line.trim_end().to_string();
                    line.clear();
                    if !l.to_ascii_uppercase().contains("STARTTLS") {
                        pending.push(l.clone());
                    }
                    let last = l.as_bytes().get(3) != Some(&b'-');
                    if last && !pending.is_empty() {
                        let count = pending.len();
                        let mut out = String::new();
                        for (i, p) in pending.drain(..).enumerate() {
                            let sep = if i + 1 == count { ' ' } else { '-' };
                            out.push_str(&format!(
                                "{}{sep}{}\r\n",
                                &p[..3],
                                p.get(4..).unwrap_or("")
                            ));
                        }
                        if c_write.write_all(out.as_bytes()).is_err() {
                            break;
                        }
                    }
                }
                let _ = c_write.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    (port, seen)
}

//! SMTP by hand for the DSN tests: a client that sends exact MAIL/RCPT lines with parameters,
//! and a fake next hop that offers chosen EHLO keywords and records what it is sent.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader as AsyncBufReader};
use tokio::net::TcpStream;

use crate::support::peers::Seen;

/// The reply a fake peer gives to RCPT; while None it waits (holding the transaction open).
pub type Gate = Arc<Mutex<Option<&'static str>>>;

/// A plaintext client speaking one command at a time.
pub struct Raw {
    stream: AsyncBufReader<TcpStream>,
}

impl Raw {
    /// Connects and reads the greeting.
    pub async fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let mut raw = Raw {
            stream: AsyncBufReader::new(stream),
        };
        let greeting = raw.reply().await;
        assert!(greeting.starts_with("220 "), "{greeting}");
        raw
    }

    /// Sends one line (CRLF added) and returns the whole reply, lines joined by "\n".
    pub async fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.get_mut().write_all(bytes).await.expect("write");
    }

    pub async fn reply(&mut self) -> String {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read_line(&mut line))
                .await
                .expect("reply in time")
                .expect("read");
            assert!(n > 0, "server closed the connection after {lines:?}");
            let line = line.trim_end().to_string();
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return lines.join("\n");
            }
        }
    }
}

/// Sends one message with exactly these MAIL and RCPT lines (each must get 250); returns every
/// reply, the last being the one to the end of data.
pub async fn submit(addr: SocketAddr, mail: &str, rcpts: &[&str], data: &[u8]) -> Vec<String> {
    let mut c = Raw::connect(addr).await;
    let mut replies = vec![c.cmd("EHLO client.test").await];
    for line in std::iter::once(mail).chain(rcpts.iter().copied()) {
        let reply = c.cmd(line).await;
        assert!(reply.starts_with("250 "), "{line}: {reply}");
        replies.push(reply);
    }
    replies.push(c.cmd("DATA").await);
    let text = String::from_utf8_lossy(data).replace("\r\n.", "\r\n..");
    c.send(text.as_bytes()).await;
    replies.push(c.cmd(".").await);
    c.cmd("QUIT").await;
    replies
}

/// A plaintext SMTP next hop offering `keywords` in EHLO that records every line it reads and
/// answers RCPT with the gate's reply, waiting while the gate holds none. DATA gets 354 only
/// when some recipient was accepted.
pub fn fake_peer(keywords: &[&str], rcpt_reply: Option<&'static str>) -> (u16, Seen, Gate) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen: Seen = Arc::default();
    let gate: Gate = Arc::new(Mutex::new(rcpt_reply));
    let mut ehlo = String::from("250-fake.test\r\n");
    for (i, k) in keywords.iter().enumerate() {
        let sep = if i + 1 == keywords.len() { ' ' } else { '-' };
        ehlo.push_str(&format!("250{sep}{k}\r\n"));
    }
    let (log, rcpt_gate) = (seen.clone(), gate.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let (log, gate, ehlo) = (log.clone(), rcpt_gate.clone(), ehlo.clone());
            std::thread::spawn(move || {
                let Ok(read) = stream.try_clone() else { return };
                let mut reader = BufReader::new(read);
                let _ = stream.write_all(b"220 fake.test ESMTP\r\n");
                let (mut in_data, mut accepted) = (false, 0);
                let mut line = String::new();
                while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                    let cmd = line.trim_end().to_string();
                    line.clear();
                    if in_data {
                        if cmd == "." {
                            in_data = false;
                            let _ = stream.write_all(b"250 2.0.0 Ok: queued\r\n");
                        }
                        continue;
                    }
                    log.lock().unwrap().push(cmd.clone());
                    let upper = cmd.to_ascii_uppercase();
                    let reply = if upper.starts_with("EHLO") {
                        ehlo.clone()
                    } else if upper.starts_with("RCPT") {
                        let reply = loop {
                            if let Some(r) = *gate.lock().unwrap() {
                                break r;
                            }
                            std::thread::sleep(Duration::from_millis(10));
                        };
                        if reply.starts_with('2') {
                            accepted += 1;
                        }
                        format!("{reply}\r\n")
                    } else if upper == "DATA" && accepted > 0 {
                        in_data = true;
                        "354 go on\r\n".to_string()
                    } else if upper == "DATA" {
                        "554 5.5.1 no valid recipients\r\n".to_string()
                    } else if upper == "QUIT" {
                        let _ = stream.write_all(b"221 2.0.0 bye\r\n");
                        return;
                    } else if upper == "RSET" || upper.starts_with("MAIL") {
                        accepted = 0;
                        "250 2.0.0 Ok\r\n".to_string()
                    } else {
                        "250 2.0.0 Ok\r\n".to_string()
                    };
                    let _ = stream.write_all(reply.as_bytes());
                }
            });
        }
    });
    (port, seen, gate)
}

//! A raw SMTP client over a loopback socket: writes exactly the bytes given, reads replies one
//! at a time and says how long it waited, for timeout and shutdown tests.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sealpost::smtp::client::wire::parse_reply;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct RawClient {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The longest wait for a reply or for the close.
    pub patience: Duration,
}

impl RawClient {
    /// Connects and reads the 220 greeting.
    pub async fn connect(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let mut client = RawClient {
            stream,
            buf: Vec::new(),
            patience: Duration::from_secs(20),
        };
        let greeting = client.reply().await;
        assert!(greeting.starts_with("220 "), "{greeting}");
        client
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Sends a command line and returns its reply.
    pub async fn command(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// EHLO, MAIL FROM and RCPT TO, each checked for 250; then DATA, checked for 354.
    pub async fn start_data(&mut self, from: &str, to: &str) {
        assert!(self.command("EHLO client.test").await.starts_with("250"));
        let mail = self.command(&format!("MAIL FROM:<{from}>")).await;
        assert!(mail.starts_with("250 "), "{mail}");
        let rcpt = self.command(&format!("RCPT TO:<{to}>")).await;
        assert!(rcpt.starts_with("250 "), "{rcpt}");
        let data = self.command("DATA").await;
        assert!(data.starts_with("354 "), "{data}");
    }

    /// The next reply on one line, its lines joined by "; " (`250 2.0.0 Ok: queued as ...`).
    pub async fn reply(&mut self) -> String {
        self.timed_reply().await.0
    }

    /// The next reply and how long it took to come.
    pub async fn timed_reply(&mut self) -> (String, Duration) {
        let start = Instant::now();
        loop {
            match parse_reply(&self.buf) {
                Ok(Some((reply, used))) => {
                    self.buf.drain(..used);
                    return (reply.to_string(), start.elapsed());
                }
                Ok(None) => {}
                Err(e) => panic!("bad reply: {e}"),
            }
            let mut chunk = [0u8; 4096];
            let read = tokio::time::timeout(self.patience, self.stream.read(&mut chunk)).await;
            match read.expect("no reply in time").expect("read") {
                0 => panic!("connection closed; unparsed: {:?}", self.buf),
                n => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// True when the server closed the connection with nothing more to say.
    pub async fn closed(&mut self) -> bool {
        let mut chunk = [0u8; 64];
        let read = tokio::time::timeout(self.patience, self.stream.read(&mut chunk)).await;
        self.buf.is_empty() && matches!(read, Ok(Ok(0)) | Ok(Err(_)))
    }
}

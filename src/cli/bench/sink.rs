//! A counting SMTP sink: accepts every message (with STARTTLS when it has a certificate), keeps
//! nothing, counts what it was given. The far end of the load benchmarks, so that the MTA under
//! test, not the receiver, is what is measured.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// A running sink.
pub struct Sink {
    pub addr: SocketAddr,
    received: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Sink {
    /// Listens on `addr` (port 0: any free port); `tls`: offer STARTTLS with this configuration.
    pub async fn start(
        addr: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> std::io::Result<Sink> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let received = Arc::new(AtomicU64::new(0));
        let count = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let (count, tls) = (count.clone(), tls.clone());
                tokio::spawn(async move {
                    let _ = session(stream, tls, count).await;
                });
            }
        });
        Ok(Sink {
            addr,
            received,
            task,
        })
    }

    /// Messages received (each ended with its final dot and answered 250).
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn session(
    stream: TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
    count: Arc<AtomicU64>,
) -> std::io::Result<()> {
    let mut stream = BufReader::new(stream);
    stream
        .write_all(b"220 sink.test ESMTP counting sink\r\n")
        .await?;
    match dialogue(&mut stream, tls.is_some(), &count).await? {
        Next::StartTls => {
            let Some(tls) = tls else { return Ok(()) };
            let acceptor = tokio_rustls::TlsAcceptor::from(tls);
            let secured = acceptor.accept(stream.into_inner()).await?;
            let mut secured = BufReader::new(secured);
            dialogue(&mut secured, false, &count).await?;
        }
        Next::Close => {}
    }
    Ok(())
}

enum Next {
    StartTls,
    Close,
}

/// Answers commands until QUIT, the end of the stream, or STARTTLS (when `offer_tls`).
async fn dialogue<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut BufReader<S>,
    offer_tls: bool,
    count: &AtomicU64,
) -> std::io::Result<Next> {
    let mut line = Vec::with_capacity(512);
    loop {
        line.clear();
        if stream.read_until(b'\n', &mut line).await? == 0 {
            return Ok(Next::Close);
        }
        let verb: String = line
            .iter()
            .take_while(|b| b.is_ascii_alphabetic())
            .map(|b| b.to_ascii_uppercase() as char)
            .collect();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" if offer_tls => {
                b"250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-STARTTLS\r\n250 SIZE 0\r\n"
            }
            "EHLO" => b"250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 0\r\n",
            "STARTTLS" if offer_tls => {
                stream.write_all(b"220 2.0.0 go ahead\r\n").await?;
                stream.flush().await?;
                return Ok(Next::StartTls);
            }
            "DATA" => {
                stream.write_all(b"354 go ahead\r\n").await?;
                stream.flush().await?;
                loop {
                    line.clear();
                    if stream.read_until(b'\n', &mut line).await? == 0 {
                        return Ok(Next::Close);
                    }
                    if line == b".\r\n" || line == b".\n" {
                        break;
                    }
                }
                count.fetch_add(1, Ordering::Relaxed);
                b"250 2.0.0 counted\r\n"
            }
            "QUIT" => {
                stream.write_all(b"221 2.0.0 bye\r\n").await?;
                stream.flush().await?;
                return Ok(Next::Close);
            }
            "HELO" | "MAIL" | "RCPT" | "RSET" | "NOOP" => b"250 2.0.0 ok\r\n",
            _ => b"502 5.5.1 not here\r\n",
        };
        stream.write_all(reply).await?;
        stream.flush().await?;
    }
}

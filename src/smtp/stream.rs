//! A TCP stream that is plaintext or TLS; the plaintext one becomes TLS only by consuming itself.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::tls::TlsFacts;

/// An SMTP connection's byte stream, in whichever state it is.
pub enum SmtpStream {
    Plain(TcpStream),
    ServerTls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    ClientTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl SmtpStream {
    /// Runs the server side of a TLS handshake (STARTTLS or implicit TLS). Consumes the plaintext
    /// stream: on failure the connection is gone, never silently left in clear.
    pub async fn accept_tls(
        self,
        config: Arc<rustls::ServerConfig>,
    ) -> io::Result<(SmtpStream, TlsFacts)> {
        let SmtpStream::Plain(tcp) = self else {
            return Err(io::Error::other("TLS is already active"));
        };
        let tls = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await?;
        let facts = TlsFacts::from_connection(tls.get_ref().1);
        Ok((SmtpStream::ServerTls(Box::new(tls)), facts))
    }

    /// Runs the client side of a TLS handshake.
    pub async fn connect_tls(
        self,
        config: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
    ) -> io::Result<(SmtpStream, TlsFacts)> {
        let SmtpStream::Plain(tcp) = self else {
            return Err(io::Error::other("TLS is already active"));
        };
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await?;
        let facts = TlsFacts::from_connection(tls.get_ref().1);
        Ok((SmtpStream::ClientTls(Box::new(tls)), facts))
    }

    pub fn is_tls(&self) -> bool {
        !matches!(self, SmtpStream::Plain(_))
    }
}

impl AsyncRead for SmtpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            SmtpStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            SmtpStream::ServerTls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            SmtpStream::ClientTls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for SmtpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            SmtpStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            SmtpStream::ServerTls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            SmtpStream::ClientTls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            SmtpStream::Plain(s) => Pin::new(s).poll_flush(cx),
            SmtpStream::ServerTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            SmtpStream::ClientTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            SmtpStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            SmtpStream::ServerTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            SmtpStream::ClientTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

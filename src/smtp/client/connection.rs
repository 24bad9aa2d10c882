//! One outbound SMTP connection: greeting, EHLO, optional STARTTLS, then any number of transactions.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::wire::{parse_reply, Capabilities, DotStuffer};
use crate::mail::dsn::{self, TransactionDsn};
use crate::mail::Reply;
use crate::net::Stream;
use crate::tls::policy::{DeliveryPermit, PolicyFailure, TlsFailure, TlsPolicy};
use crate::tls::TlsFacts;

/// How this connection treats STARTTLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Use STARTTLS when offered (a failed handshake is reported as `ClientError::Tls`).
    Opportunistic,
    /// STARTTLS or nothing: a peer that does not offer it gets `ClientError::NoStartTls`, and
    /// nothing after EHLO is sent.
    Required,
    /// Do not attempt TLS (the retry after a failed opportunistic handshake).
    Plaintext,
}

/// How much of a message is written at a time.
const PIECE: usize = 64 * 1024;

/// Settings shared by all outbound connections.
#[derive(Clone)]
pub struct ClientSettings {
    /// The name we give in EHLO.
    pub helo_name: String,
    /// For connecting and for each reply.
    pub timeout: Duration,
    pub tls: Arc<rustls::ClientConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connection refused, reset, timed out: try again later.
    #[error("{0}")]
    Network(String),
    /// The server answered with an error where the conversation cannot go on.
    #[error("{stage} rejected: {reply}")]
    Rejected { stage: &'static str, reply: Reply },
    /// The TLS handshake after STARTTLS failed (or STARTTLS was refused).
    #[error("TLS handshake failed: {0}")]
    Tls(TlsFailure),
    /// TLS was required and the peer did not offer STARTTLS.
    #[error("peer did not offer STARTTLS")]
    NoStartTls,
    /// The server broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The connection holds no permit for the policy the transaction was asked to go under:
    /// nothing was sent.
    #[error("{0}")]
    NotPermitted(String),
    /// The message asked for REQUIRETLS (RFC 8689) and this connection cannot give it: it is
    /// not verified, or the server does not offer REQUIRETLS. Nothing was sent; the connection
    /// is still good for other mail.
    #[error("{0}")]
    RequireTls(Reply),
}

impl ClientError {
    /// 5xx replies are permanent, and so is a REQUIRETLS refusal; everything else is worth
    /// another try.
    pub fn is_permanent(&self) -> bool {
        match self {
            ClientError::Rejected { reply, .. } | ClientError::RequireTls(reply) => {
                reply.is_permanent()
            }
            _ => false,
        }
    }

    /// The message's REQUIRETLS could not be honoured over this connection; nothing was sent.
    pub fn is_requiretls_refusal(&self) -> bool {
        matches!(self, ClientError::RequireTls(_))
    }
}

/// The outcome for one recipient of a transaction: the server's final word.
pub type RcptResult = Result<Reply, Reply>;

pub struct Connection {
    stream: Stream,
    buf: Vec<u8>,
    peer: SocketAddr,
    /// The host name connected to (SNI, name checks, logs).
    name: String,
    caps: Capabilities,
    tls: Option<TlsFacts>,
    timeout: Duration,
    /// What `authorize` established; every transaction checks it against its own policy.
    permit: Option<DeliveryPermit>,
    /// A transaction failed halfway (I/O error): the connection must not be reused.
    broken: bool,
    transactions: u32,
}

impl Connection {
    /// Connects, reads the greeting, says EHLO (HELO if refused) and, in opportunistic mode,
    /// upgrades with STARTTLS when the server offers it. `name` is the server's host name (SNI).
    pub async fn open(
        addr: SocketAddr,
        name: &str,
        settings: &ClientSettings,
        mode: TlsMode,
    ) -> Result<Connection, ClientError> {
        let tcp = tokio::time::timeout(settings.timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Network(format!("connect to {addr}: timed out")))?
            .map_err(|e| ClientError::Network(format!("connect to {addr}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let mut conn = Connection {
            stream: Stream::Plain(tcp),
            buf: Vec::new(),
            peer: addr,
            name: name.to_string(),
            caps: Capabilities::default(),
            tls: None,
            timeout: settings.timeout,
            permit: None,
            broken: false,
            transactions: 0,
        };
        let greeting = conn.read_reply().await?;
        if greeting.code != 220 {
            return Err(ClientError::Rejected {
                stage: "greeting",
                reply: greeting,
            });
        }
        conn.hello(&settings.helo_name).await?;
        match mode {
            TlsMode::Plaintext => {}
            TlsMode::Opportunistic if !conn.caps.starttls => {}
            TlsMode::Required if !conn.caps.starttls => {
                conn.quit().await;
                return Err(ClientError::NoStartTls);
            }
            TlsMode::Opportunistic | TlsMode::Required => {
                conn = conn.starttls(name, settings).await?;
                conn.hello(&settings.helo_name).await?;
            }
        }
        Ok(conn)
    }

    async fn hello(&mut self, helo_name: &str) -> Result<(), ClientError> {
        self.write(format!("EHLO {helo_name}\r\n").as_bytes())
            .await?;
        let reply = self.read_reply().await?;
        if reply.code == 250 {
            self.caps = Capabilities::from_ehlo(&reply);
            return Ok(());
        }
        if reply.is_temporary() {
            return Err(ClientError::Rejected {
                stage: "EHLO",
                reply,
            });
        }
        self.write(format!("HELO {helo_name}\r\n").as_bytes())
            .await?;
        let reply = self.read_reply().await?;
        if reply.code != 250 {
            return Err(ClientError::Rejected {
                stage: "HELO",
                reply,
            });
        }
        self.caps = Capabilities::default();
        Ok(())
    }

    /// Upgrades with STARTTLS. Consumes the plaintext connection: after a failure it is gone.
    async fn starttls(
        mut self,
        name: &str,
        settings: &ClientSettings,
    ) -> Result<Connection, ClientError> {
        self.write(b"STARTTLS\r\n").await?;
        let reply = self.read_reply().await?;
        if reply.code != 220 {
            return Err(ClientError::Tls(TlsFailure::StartTlsRefused(
                reply.to_string(),
            )));
        }
        // Anything the server sent after its 220 arrived in clear: it must not be read as if it
        // came over TLS (STARTTLS response injection).
        if !self.buf.is_empty() {
            return Err(ClientError::Tls(TlsFailure::PlaintextAfterStartTls));
        }
        let server_name = ServerName::try_from(name.to_string())
            .map_err(|_| ClientError::Tls(TlsFailure::InvalidServerName(name.to_string())))?;
        let (stream, facts) = tokio::time::timeout(
            self.timeout,
            self.stream.connect_tls(settings.tls.clone(), server_name),
        )
        .await
        .map_err(|_| ClientError::Tls(TlsFailure::Timeout))?
        .map_err(|e| ClientError::Tls(TlsFailure::from_handshake(&e)))?;
        Ok(Connection {
            stream,
            buf: Vec::new(),
            tls: Some(facts),
            permit: None,
            ..self
        })
    }

    /// Checks this connection against a destination's TLS policy (`TlsPolicy::admit`: an
    /// audit-mode policy admits a failing connection, and the permit says what it overlooked)
    /// and keeps the permit. Replaces any permit held before.
    pub fn authorize(&mut self, policy: &TlsPolicy) -> Result<&DeliveryPermit, PolicyFailure> {
        let permit = policy.admit(self.tls.as_ref(), &self.name)?;
        Ok(self.permit.insert(permit))
    }

    /// The permit this connection holds, if it was authorized.
    pub fn permit(&self) -> Option<&DeliveryPermit> {
        self.permit.as_ref()
    }

    /// Whether this connection may carry mail under `policy`: it was authorized under that very
    /// policy, for the host it is connected to.
    pub fn permits(&self, policy: &TlsPolicy) -> bool {
        self.permit
            .as_ref()
            .is_some_and(|p| p.satisfies(policy, &self.name))
    }

    /// Sends one message to several recipients under `policy`. Per-recipient results come back
    /// in order; an `Err` means the connection itself failed and no recipient's fate is known.
    /// Nothing is sent unless the connection was authorized under `policy` (`permits`).
    pub async fn send(
        &mut self,
        policy: &TlsPolicy,
        mail_from: &str,
        recipients: &[String],
        data: &[u8],
    ) -> Result<Vec<RcptResult>, ClientError> {
        self.send_dsn(
            policy,
            mail_from,
            recipients,
            &TransactionDsn::default(),
            false,
            data,
        )
        .await
    }

    /// Like `send`, with RFC 3461 parameters: `dsn.rcpts` holds one entry per recipient (missing
    /// ones mean none). They go on MAIL and RCPT only when the peer offered DSN in its EHLO.
    /// With `requiretls` (RFC 8689) the message goes, with REQUIRETLS on MAIL, only over a
    /// verified connection to a server that offers REQUIRETLS; else `ClientError::RequireTls`
    /// and nothing is sent.
    pub async fn send_dsn(
        &mut self,
        policy: &TlsPolicy,
        mail_from: &str,
        recipients: &[String],
        dsn: &TransactionDsn,
        requiretls: bool,
        data: &[u8],
    ) -> Result<Vec<RcptResult>, ClientError> {
        if !self.permits(policy) {
            return Err(ClientError::NotPermitted(format!(
                "connection to {} [{}] was not authorized under this TLS policy; nothing sent",
                self.name, self.peer
            )));
        }
        if requiretls {
            self.carries_requiretls()?;
        }
        let result = self
            .transaction(mail_from, recipients, dsn, requiretls, data)
            .await;
        if result.is_err() {
            self.broken = true;
        } else {
            self.transactions += 1;
        }
        result
    }

    /// Whether a REQUIRETLS message (RFC 8689 §4.2.1) may go over this connection: its permit
    /// shows a verified certificate (`DeliveryPermit::verified`) and the server offered
    /// REQUIRETLS after STARTTLS. The refusal is the message's permanent failure.
    fn carries_requiretls(&self) -> Result<(), ClientError> {
        let at = format!("{} [{}]", self.name, self.peer);
        match &self.permit {
            Some(permit) if permit.verified() => {}
            permit => {
                let how = permit.as_ref().map_or("not authorized", |p| p.detail());
                return Err(ClientError::RequireTls(Reply::new(
                    550,
                    [5, 7, 10],
                    format!("REQUIRETLS: TLS to {at} is not verified ({how}); message not sent"),
                )));
            }
        }
        if !self.caps.requiretls {
            return Err(ClientError::RequireTls(Reply::new(
                550,
                [5, 7, 30],
                format!("REQUIRETLS support required: {at} does not offer REQUIRETLS"),
            )));
        }
        Ok(())
    }

    async fn transaction(
        &mut self,
        mail_from: &str,
        recipients: &[String],
        dsn: &TransactionDsn,
        requiretls: bool,
        data: &[u8],
    ) -> Result<Vec<RcptResult>, ClientError> {
        let (mail_dsn, rcpt_dsn) = (&dsn.mail, &dsn.rcpts);
        let mut mail = format!("MAIL FROM:<{mail_from}>");
        if self.caps.size.is_some() {
            mail.push_str(&format!(" SIZE={}", data.len()));
        }
        if self.caps.eight_bit_mime && data.iter().any(|&b| b >= 0x80) {
            mail.push_str(" BODY=8BITMIME");
        }
        if self.caps.smtputf8 && (!mail_from.is_ascii() || recipients.iter().any(|r| !r.is_ascii()))
        {
            mail.push_str(" SMTPUTF8");
        }
        let pass_dsn = self.caps.dsn;
        if pass_dsn {
            mail.push_str(&dsn::mail_params(mail_dsn.ret, mail_dsn.envid.as_deref()));
        }
        if requiretls {
            mail.push_str(" REQUIRETLS");
        }
        mail.push_str("\r\n");
        let rcpts: Vec<String> = recipients
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let params = match rcpt_dsn.get(i) {
                    Some(d) if pass_dsn => dsn::rcpt_params(d),
                    _ => String::new(),
                };
                format!("RCPT TO:<{r}>{params}\r\n")
            })
            .collect();

        // With CHUNKING the message goes in one BDAT chunk once a recipient is accepted, so DATA
        // is not part of the pipelined batch.
        let chunking = self.caps.chunking;
        let (mail_reply, rcpt_replies, data_reply) = if self.caps.pipelining {
            let mut batch = mail.into_bytes();
            rcpts
                .iter()
                .for_each(|r| batch.extend_from_slice(r.as_bytes()));
            if !chunking {
                batch.extend_from_slice(b"DATA\r\n");
            }
            self.write(&batch).await?;
            let mail_reply = self.read_reply().await?;
            let mut rcpt_replies = Vec::with_capacity(rcpts.len());
            for _ in &rcpts {
                rcpt_replies.push(self.read_reply().await?);
            }
            let data_reply = match chunking {
                true => None,
                false => Some(self.read_reply().await?),
            };
            (mail_reply, rcpt_replies, data_reply)
        } else {
            self.write(mail.as_bytes()).await?;
            let mail_reply = self.read_reply().await?;
            let mut rcpt_replies = Vec::new();
            if mail_reply.code == 250 {
                for r in &rcpts {
                    self.write(r.as_bytes()).await?;
                    rcpt_replies.push(self.read_reply().await?);
                }
            }
            (mail_reply, rcpt_replies, None)
        };

        if mail_reply.code != 250 {
            if data_reply.as_ref().is_some_and(|r| r.code == 354) {
                self.finish_empty_data().await?;
            }
            return Ok(recipients.iter().map(|_| Err(mail_reply.clone())).collect());
        }
        let any_accepted = rcpt_replies.iter().any(|r| r.is_positive());
        let final_reply = if chunking {
            match any_accepted {
                true => {
                    self.send_chunk(data).await?;
                    self.read_reply().await?
                }
                false => Reply::new(554, [5, 5, 1], "no valid recipients"),
            }
        } else {
            self.data(data_reply, any_accepted, data).await?
        };
        Ok(rcpt_replies
            .into_iter()
            .map(|r| {
                if !r.is_positive() {
                    Err(r)
                } else if final_reply.code == 250 {
                    Ok(final_reply.clone())
                } else {
                    Err(final_reply.clone())
                }
            })
            .collect())
    }

    /// DATA (unless its reply came with the pipelined batch), then the message dot-stuffed piece
    /// by piece; returns the final reply.
    async fn data(
        &mut self,
        data_reply: Option<Reply>,
        any_accepted: bool,
        data: &[u8],
    ) -> Result<Reply, ClientError> {
        let data_reply = match data_reply {
            Some(r) => r,
            None if any_accepted => {
                self.write(b"DATA\r\n").await?;
                self.read_reply().await?
            }
            None => Reply::new(554, [5, 5, 1], "no valid recipients"),
        };
        if data_reply.code != 354 {
            return Ok(data_reply);
        }
        if !any_accepted {
            self.finish_empty_data().await?;
            return Ok(data_reply);
        }
        let mut stuffer = DotStuffer::new();
        let mut wire = Vec::with_capacity(PIECE + PIECE / 32);
        for piece in data.chunks(PIECE) {
            stuffer.push(piece, &mut wire);
            self.write(&wire).await?;
            wire.clear();
        }
        stuffer.finish(&mut wire);
        self.write(&wire).await?;
        self.read_reply().await
    }

    /// The whole message as one BDAT chunk (RFC 3030): as it is, without dot-stuffing.
    async fn send_chunk(&mut self, data: &[u8]) -> Result<(), ClientError> {
        let mut first = format!("BDAT {} LAST\r\n", data.len()).into_bytes();
        let (head, rest) = data.split_at(data.len().min(PIECE));
        first.extend_from_slice(head);
        self.write(&first).await?;
        for piece in rest.chunks(PIECE) {
            self.write(piece).await?;
        }
        Ok(())
    }

    /// A server that said 354 although no recipient was accepted gets an empty message, which it
    /// must refuse; we never send the real content then.
    async fn finish_empty_data(&mut self) -> Result<(), ClientError> {
        self.write(b".\r\n").await?;
        self.read_reply().await.map(drop)
    }

    /// Says QUIT and closes; errors are of no interest any more.
    pub async fn quit(mut self) {
        if self.write(b"QUIT\r\n").await.is_ok() {
            let _ = self.read_reply().await;
        }
        let _ = self.stream.shutdown().await;
    }

    /// The peer offered DSN (RFC 3461) in its EHLO: it takes over notices for what it accepts.
    pub fn offers_dsn(&self) -> bool {
        self.caps.dsn
    }

    /// Can carry another transaction.
    pub fn reusable(&self) -> bool {
        !self.broken
    }

    pub fn tls(&self) -> Option<&TlsFacts> {
        self.tls.as_ref()
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn transactions(&self) -> u32 {
        self.transactions
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        let peer = self.peer;
        let io = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        tokio::time::timeout(self.timeout, io)
            .await
            .map_err(|_| ClientError::Network(format!("write to {peer}: timed out")))?
            .map_err(|e| ClientError::Network(format!("write to {peer}: {e}")))
    }

    async fn read_reply(&mut self) -> Result<Reply, ClientError> {
        loop {
            match parse_reply(&self.buf) {
                Ok(Some((reply, used))) => {
                    self.buf.drain(..used);
                    return Ok(reply);
                }
                Ok(None) => {}
                Err(e) => return Err(ClientError::Protocol(e)),
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(self.timeout, self.stream.read(&mut chunk))
                .await
                .map_err(|_| ClientError::Network(format!("read from {}: timed out", self.peer)))?
                .map_err(|e| ClientError::Network(format!("read from {}: {e}", self.peer)))?;
            if n == 0 {
                return Err(ClientError::Network(format!(
                    "{} closed the connection",
                    self.peer
                )));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

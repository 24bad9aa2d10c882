//! The tokio accept loop: one task per connection, driving the pure session with socket I/O,
//! STARTTLS upgrades, timeouts, the durable enqueue and a graceful shutdown.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::policy::Policy;
use super::receiving::Receiving;
use super::session::{Action, Session, SessionConfig};
use super::Receiver;
use crate::auth::Users;
use crate::live::Live;
use crate::mail::Reply;
use crate::net::accept::{accept_until_shutdown, refuse};
use crate::net::limits::ConnectionLimits;
use crate::net::shutdown::{phase, ShutdownPhase};
use crate::net::{accept_tls, Stream};
use crate::queue::InFlight;
use crate::telemetry::metrics::Direction;
use crate::telemetry::Telemetry;
use crate::tls::policy::TlsFailure;

/// What every connection of a listener shares.
pub struct ServerContext {
    pub session: Arc<SessionConfig>,
    pub policy: Arc<dyn Policy>,
    pub relay_networks: Vec<ipnet::IpNet>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The cleanup stage: rules, then the durable queue write.
    pub cleanup: Arc<dyn Receiver>,
    /// The longest wait for a command, a TLS handshake or a write to the client.
    pub command_timeout: Duration,
    /// The longest wait for the next chunk of message data in DATA.
    pub data_timeout: Duration,
    /// TLS from the first byte (port 465).
    pub implicit_tls: bool,
    /// Who may authenticate (submission listeners).
    pub users: Arc<Users>,
    /// Shared by all listeners of the server.
    pub limits: Arc<ConnectionLimits>,
    /// Message bytes in flight, shared by all listeners (and the queue runner) of the server.
    pub in_flight: Arc<InFlight>,
    /// "smtp", "submission" or "submissions" (the metrics label).
    pub listener_name: &'static str,
    pub telemetry: Arc<Telemetry>,
}

/// How long a session that is being cut may take to write its 421.
const LAST_WRITE: Duration = Duration::from_secs(2);

/// Accepts connections until the shutdown starts, then closes the listening socket (new
/// connections are refused) and waits for open sessions to end. Each connection runs under the
/// context current when it was accepted (a reload replaces `slot`).
pub async fn serve(
    listener: TcpListener,
    slot: Arc<Live<ServerContext>>,
    shutdown: watch::Receiver<ShutdownPhase>,
) {
    let for_sessions = shutdown.clone();
    accept_until_shutdown(listener, shutdown, move |tcp, peer| {
        let ctx = slot.get();
        let admitted = ctx.limits.admit(peer.ip());
        let shutdown = for_sessions.clone();
        async move {
            match admitted {
                Ok(admission) => {
                    handle(tcp, peer, ctx, shutdown).await;
                    drop(admission);
                }
                Err(refused) => {
                    tracing::warn!(client = %peer, reason = %refused, "connection refused");
                    ctx.telemetry.metrics.connection_refused(refused.class());
                    let reply = Reply::new(
                        421,
                        [4, 7, 0],
                        format!("{} Error: {refused}", ctx.session.hostname),
                    );
                    refuse(tcp, &reply.to_bytes()).await;
                }
            }
        }
    })
    .await
}

async fn handle(
    tcp: TcpStream,
    peer: SocketAddr,
    ctx: Arc<ServerContext>,
    shutdown: watch::Receiver<ShutdownPhase>,
) {
    let _ = tcp.set_nodelay(true);
    let relay_allowed = ctx.relay_networks.iter().any(|n| n.contains(&peer.ip()));
    tracing::info!(client = %peer, relay_allowed, "connect");
    ctx.telemetry.metrics.session_opened(ctx.listener_name);
    match converse(Stream::Plain(tcp), peer, relay_allowed, &ctx, shutdown).await {
        Ok(()) => tracing::info!(client = %peer, "disconnect"),
        Err(e) => tracing::info!(client = %peer, error = %e, "disconnect"),
    }
    ctx.telemetry.metrics.session_closed();
}

/// Bytes read at once between messages (commands are short; pipelined ones take a few reads).
const COMMAND_READ: usize = 512;
/// Bytes read at once while message data comes in.
const DATA_READ: usize = 16 * 1024;

/// Runs one SMTP session to its end. The stream is owned here because STARTTLS replaces it.
async fn converse(
    mut stream: Stream,
    peer: SocketAddr,
    relay_allowed: bool,
    ctx: &ServerContext,
    mut shutdown: watch::Receiver<ShutdownPhase>,
) -> Result<(), String> {
    let mut session = Session::new(ctx.session.clone(), ctx.policy.clone(), peer, relay_allowed)
        .with_in_flight(ctx.in_flight.clone());
    // Dropped with the connection, however it ends: a partly received message is removed.
    // Made when message data comes in, so that an idle session does not hold it.
    let mut receiving: Option<Box<Receiving>> = None;
    if ctx.implicit_tls {
        let Some(config) = ctx.tls.clone() else {
            return Err("implicit TLS without a certificate".into());
        };
        let (tls, facts) = Box::pin(upgrade(stream, config, ctx)).await?;
        tracing::info!(client = %peer, version = %facts.version, cipher = %facts.cipher, "TLS established (implicit)");
        ctx.telemetry
            .metrics
            .tls_handshake(Direction::Inbound, &facts.version);
        stream = tls;
        session.implicit_tls(facts);
    }
    let mut pending: VecDeque<Action> = session.greeting().into();
    let mut out: Vec<u8> = Vec::new();
    // An idle session holds only the small command buffer; the large one exists while message
    // data is being received.
    let mut command_buf = [0u8; COMMAND_READ];
    let mut data_buf: Vec<u8> = Vec::new();
    let mut finishing = false;
    loop {
        while let Some(action) = pending.pop_front() {
            match action {
                Action::Send(bytes) => out.extend_from_slice(&bytes),
                Action::Close => {
                    write_out(&mut stream, &mut out, ctx, &mut shutdown).await?;
                    let _ = stream.shutdown().await;
                    return Ok(());
                }
                Action::StartTls => {
                    write_out(&mut stream, &mut out, ctx, &mut shutdown).await?;
                    let Some(config) = ctx.tls.clone() else {
                        return Err("STARTTLS without a certificate".into());
                    };
                    let (tls, facts) = Box::pin(upgrade(stream, config, ctx)).await?;
                    tracing::info!(client = %peer, version = %facts.version, cipher = %facts.cipher, "STARTTLS established");
                    ctx.telemetry
                        .metrics
                        .tls_handshake(Direction::Inbound, &facts.version);
                    stream = tls;
                    pending.extend(session.tls_established(facts));
                }
                Action::Authenticate(creds) => {
                    let users = ctx.users.clone();
                    let user = creds.username.clone();
                    let result = tokio::task::spawn_blocking(move || users.verify(&creds))
                        .await
                        .unwrap_or_else(|_| {
                            Err(Reply::new(
                                454,
                                [4, 7, 0],
                                "Temporary authentication failure",
                            ))
                        });
                    match &result {
                        Ok(name) => tracing::info!(client = %peer, user = %name, "authenticated"),
                        Err(_) => tracing::warn!(client = %peer, %user, "authentication failed"),
                    }
                    pending.extend(session.auth_result(result));
                }
                Action::Data(piece) => {
                    let r = receiving
                        .get_or_insert_with(|| Box::new(Receiving::new(ctx.cleanup.clone())));
                    Box::pin(r.data(&piece)).await
                }
                Action::Discard => {
                    if let Some(mut r) = receiving.take() {
                        Box::pin(r.discard()).await;
                    }
                }
                Action::Deliver(tx) => {
                    let mut r = receiving
                        .take()
                        .unwrap_or_else(|| Box::new(Receiving::new(ctx.cleanup.clone())));
                    let result = Box::pin(r.enqueue(tx)).await;
                    pending.extend(session.delivery_result(result));
                }
            }
        }
        write_out(&mut stream, &mut out, ctx, &mut shutdown).await?;
        match phase(&shutdown) {
            ShutdownPhase::Running => {}
            ShutdownPhase::Draining if session.in_transaction() => {
                if !finishing {
                    finishing = true;
                    tracing::info!(client = %peer, "shutting down: letting the transaction in progress finish");
                }
            }
            ShutdownPhase::Draining | ShutdownPhase::Cut => {
                if session.in_transaction() {
                    tracing::warn!(client = %peer, "shutting down: transaction cut short, nothing of it queued");
                }
                let bye = Reply::new(
                    421,
                    [4, 3, 2],
                    format!("{} Service shutting down", ctx.session.hostname),
                );
                pending.push_back(Action::Send(bye.to_bytes()));
                pending.push_back(Action::Close);
                continue;
            }
        }
        let wait = if session.in_data() {
            ctx.data_timeout
        } else {
            ctx.command_timeout
        };
        let buf: &mut [u8] = if session.in_data() {
            if data_buf.is_empty() {
                data_buf = vec![0u8; DATA_READ];
            }
            &mut data_buf
        } else {
            data_buf = Vec::new();
            &mut command_buf
        };
        let read = tokio::select! {
            r = tokio::time::timeout(wait, stream.read(buf)) => r,
            _ = shutdown.changed() => continue,
        };
        match read {
            Err(_) => pending.extend(session.timeout()),
            Ok(Ok(0)) => return Ok(()),
            Ok(Ok(n)) => pending.extend(session.feed(&buf[..n])),
            Ok(Err(e)) => return Err(format!("read: {e}")),
        }
    }
}

/// Writes the pending replies. A client that does not read them within the command timeout,
/// or until the shutdown's grace period ends, is dropped.
async fn write_out(
    stream: &mut Stream,
    out: &mut Vec<u8>,
    ctx: &ServerContext,
    shutdown: &mut watch::Receiver<ShutdownPhase>,
) -> Result<(), String> {
    if out.is_empty() {
        return Ok(());
    }
    // Once cut, the last words (421) get a short while of their own.
    let cut = phase(shutdown) == ShutdownPhase::Cut;
    let limit = if cut { LAST_WRITE } else { ctx.command_timeout };
    let write = async {
        stream.write_all(out).await?;
        stream.flush().await
    };
    tokio::select! {
        biased;
        r = tokio::time::timeout(limit, write) => match r {
            Ok(r) => r.map_err(|e| format!("write: {e}"))?,
            Err(_) => return Err("write timed out".into()),
        },
        _ = shutdown.wait_for(|p| *p == ShutdownPhase::Cut), if !cut => {
            return Err("write cut short by the shutdown".into())
        }
    }
    out.clear();
    Ok(())
}

/// The server side of a TLS handshake (STARTTLS or implicit TLS) within the command timeout;
/// a failure is counted by its kind and ends the connection.
async fn upgrade(
    stream: Stream,
    config: Arc<rustls::ServerConfig>,
    ctx: &ServerContext,
) -> Result<(Stream, crate::tls::TlsFacts), String> {
    accept_tls(stream, config, ctx.command_timeout)
        .await
        .map_err(|failure| {
            ctx.telemetry
                .metrics
                .tls_failure(Direction::Inbound, &failure);
            match failure {
                TlsFailure::Timeout => "TLS handshake timed out".to_string(),
                other => format!("TLS handshake failed: {other}"),
            }
        })
}

//! The tokio accept loop: one task per connection, driving the pure session with socket I/O,
//! STARTTLS upgrades, timeouts and the durable enqueue.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::limits::ConnectionLimits;
use super::policy::Policy;
use super::session::{Action, Session, SessionConfig};
use super::users::Users;
use crate::cleanup::Cleanup;
use crate::live::Live;
use crate::smtp::proto::Reply;
use crate::smtp::stream::SmtpStream;
use crate::telemetry::metrics::{tls_failure_class, Direction};
use crate::telemetry::Telemetry;

/// What every connection of a listener shares.
pub struct ServerContext {
    pub session: Arc<SessionConfig>,
    pub policy: Arc<dyn Policy>,
    pub relay_networks: Vec<ipnet::IpNet>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub cleanup: Arc<Cleanup>,
    pub idle_timeout: Duration,
    /// TLS from the first byte (port 465).
    pub implicit_tls: bool,
    /// Who may authenticate (submission listeners).
    pub users: Arc<Users>,
    /// Shared by all listeners of the server.
    pub limits: Arc<ConnectionLimits>,
    /// "smtp", "submission" or "submissions" (the metrics label).
    pub listener_name: &'static str,
    pub telemetry: Arc<Telemetry>,
}

/// Accepts connections until `shutdown` turns true, then waits for open sessions to end. Each
/// connection runs under the context current when it was accepted (a reload replaces `slot`).
pub async fn serve(
    listener: TcpListener,
    slot: Arc<Live<ServerContext>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted.map(|a| (a, slot.get())) {
                Ok(((tcp, peer), ctx)) => match ctx.limits.admit(peer.ip()) {
                    Ok(admission) => {
                        let shutdown = shutdown.clone();
                        sessions.spawn(async move {
                            handle(tcp, peer, ctx, shutdown).await;
                            drop(admission);
                        });
                    }
                    Err(reason) => {
                        tracing::warn!(client = %peer, %reason, "connection refused");
                        let class = if reason.contains(" from ") { "per_ip" } else { "total" };
                        ctx.telemetry.metrics.connection_refused(class);
                        let reply = Reply::new(421, [4, 7, 0], format!("{} Error: {reason}", ctx.session.hostname));
                        sessions.spawn(async move {
                            let mut tcp = tcp;
                            let bytes = reply.to_bytes();
                            let _ = tokio::time::timeout(Duration::from_secs(2), tcp.write_all(&bytes)).await;
                            let _ = tcp.shutdown().await;
                        });
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
        while sessions.try_join_next().is_some() {}
    }
    drop(listener);
    while sessions.join_next().await.is_some() {}
}

async fn handle(
    tcp: TcpStream,
    peer: SocketAddr,
    ctx: Arc<ServerContext>,
    shutdown: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let relay_allowed = ctx.relay_networks.iter().any(|n| n.contains(&peer.ip()));
    tracing::info!(client = %peer, relay_allowed, "connect");
    ctx.telemetry.metrics.session_opened(ctx.listener_name);
    match converse(SmtpStream::Plain(tcp), peer, relay_allowed, &ctx, shutdown).await {
        Ok(()) => tracing::info!(client = %peer, "disconnect"),
        Err(e) => {
            if let Some(tls_error) = e.strip_prefix("TLS handshake ") {
                let class = tls_failure_class(tls_error);
                ctx.telemetry.metrics.tls_failure(Direction::Inbound, class);
            }
            tracing::info!(client = %peer, error = %e, "disconnect")
        }
    }
    ctx.telemetry.metrics.session_closed();
}

/// Runs one SMTP session to its end. The stream is owned here because STARTTLS replaces it.
async fn converse(
    mut stream: SmtpStream,
    peer: SocketAddr,
    relay_allowed: bool,
    ctx: &ServerContext,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), String> {
    let mut session = Session::new(ctx.session.clone(), ctx.policy.clone(), peer, relay_allowed);
    if ctx.implicit_tls {
        let Some(config) = ctx.tls.clone() else {
            return Err("implicit TLS without a certificate".into());
        };
        let (tls, facts) = tokio::time::timeout(ctx.idle_timeout, stream.accept_tls(config))
            .await
            .map_err(|_| "TLS handshake timed out".to_string())?
            .map_err(|e| format!("TLS handshake failed: {e}"))?;
        tracing::info!(client = %peer, version = %facts.version, cipher = %facts.cipher, "TLS established (implicit)");
        ctx.telemetry
            .metrics
            .tls_handshake(Direction::Inbound, &facts.version);
        stream = tls;
        session.implicit_tls(facts);
    }
    let mut pending: VecDeque<Action> = session.greeting().into();
    let mut out: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        while let Some(action) = pending.pop_front() {
            match action {
                Action::Send(bytes) => out.extend_from_slice(&bytes),
                Action::Close => {
                    write_out(&mut stream, &mut out).await?;
                    let _ = stream.shutdown().await;
                    return Ok(());
                }
                Action::StartTls => {
                    write_out(&mut stream, &mut out).await?;
                    let Some(config) = ctx.tls.clone() else {
                        return Err("STARTTLS without a certificate".into());
                    };
                    let upgrade = tokio::time::timeout(ctx.idle_timeout, stream.accept_tls(config));
                    let (tls, facts) = upgrade
                        .await
                        .map_err(|_| "TLS handshake timed out".to_string())?
                        .map_err(|e| format!("TLS handshake failed: {e}"))?;
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
                Action::Deliver(tx) => {
                    let cleanup = ctx.cleanup.clone();
                    let result = tokio::task::spawn_blocking(move || cleanup.enqueue(&tx))
                        .await
                        .unwrap_or_else(|_| {
                            Err(Reply::new(451, [4, 3, 0], "Error: internal error"))
                        });
                    pending.extend(session.delivery_result(result));
                }
            }
        }
        write_out(&mut stream, &mut out).await?;
        let read = tokio::select! {
            r = tokio::time::timeout(ctx.idle_timeout, stream.read(&mut buf)) => r,
            _ = shutdown.changed() => {
                let bye = Reply::new(421, [4, 3, 2], format!("{} Service shutting down", ctx.session.hostname));
                pending.push_back(Action::Send(bye.to_bytes()));
                pending.push_back(Action::Close);
                continue;
            }
        };
        match read {
            Err(_) => pending.extend(session.timeout()),
            Ok(Ok(0)) => return Ok(()),
            Ok(Ok(n)) => pending.extend(session.feed(&buf[..n])),
            Ok(Err(e)) => return Err(format!("read: {e}")),
        }
    }
}

async fn write_out(stream: &mut SmtpStream, out: &mut Vec<u8>) -> Result<(), String> {
    if out.is_empty() {
        return Ok(());
    }
    stream
        .write_all(out)
        .await
        .map_err(|e| format!("write: {e}"))?;
    stream.flush().await.map_err(|e| format!("write: {e}"))?;
    out.clear();
    Ok(())
}

//! The IMAP accept loop: one task per connection driving the pure session with socket I/O,
//! STARTTLS or implicit TLS, password checks with a growing delay after failures, the
//! autologout timer, IDLE polling and a graceful shutdown.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::session::{Action, Session};
use super::SessionConfig;
use crate::auth::Users;
use crate::net::accept::{accept_until_shutdown, refuse};
use crate::net::limits::ConnectionLimits;
use crate::net::shutdown::{phase, ShutdownPhase};
use crate::net::{accept_tls, Stream};
use crate::store::folders::changes;
use crate::store::stream::{MessageChunks, MessageSource};
use crate::store::{Folders, StoreError};
use crate::telemetry::metrics::Direction;
use crate::telemetry::Telemetry;

/// What every connection of an IMAP listener shares.
pub struct ImapContext {
    pub session: Arc<SessionConfig>,
    pub store: Arc<dyn Folders>,
    pub users: Arc<Users>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// TLS from the first byte (imaps).
    pub implicit_tls: bool,
    /// Shared with the SMTP listeners.
    pub limits: Arc<ConnectionLimits>,
    /// The longest wait for a TLS handshake or a write to the client.
    pub command_timeout: Duration,
    /// Autologout after this long without a command (RFC 9051: at least 30 minutes).
    pub idle_timeout: Duration,
    pub failures: Arc<LoginFailures>,
    /// "imap" or "imaps" (the metrics label).
    pub listener_name: &'static str,
    pub telemetry: Arc<Telemetry>,
}

/// Read buffer of a session between commands, and while a client sends a lot at once.
const SMALL_READ: usize = 1024;
const LARGE_READ: usize = 16 * 1024;

/// How often a session in IDLE looks for changes made by other processes (changes made by this
/// one wake it at once, see `store::folders::changes`).
const IDLE_POLL: Duration = Duration::from_secs(30);

/// Consecutive failed logins per client address: each failure is answered after a delay that
/// grows with their number; past `MAX_FAILURES` the address gets no more password checks until
/// `LOCKOUT` has passed since its last failure.
#[derive(Default)]
pub struct LoginFailures {
    by_ip: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

pub const MAX_FAILURES: u32 = 10;
pub const LOCKOUT: Duration = Duration::from_secs(300);
const MAX_DELAY: Duration = Duration::from_secs(5);

impl LoginFailures {
    /// Whether the address may try a password now.
    pub fn allowed(&self, ip: IpAddr) -> bool {
        let Ok(map) = self.by_ip.lock() else {
            return true;
        };
        match map.get(&ip) {
            Some((n, last)) => *n < MAX_FAILURES || last.elapsed() > LOCKOUT,
            None => true,
        }
    }

    /// Records a failure; returns how many in a row and how long to wait before answering.
    pub fn failed(&self, ip: IpAddr) -> (u32, Duration) {
        let Ok(mut map) = self.by_ip.lock() else {
            return (1, MAX_DELAY);
        };
        if map.len() > 100_000 {
            map.retain(|_, (_, last)| last.elapsed() < LOCKOUT);
        }
        let entry = map.entry(ip).or_insert((0, Instant::now()));
        if entry.1.elapsed() > LOCKOUT {
            entry.0 = 0;
        }
        entry.0 += 1;
        entry.1 = Instant::now();
        (entry.0, (Duration::from_secs(1) * entry.0).min(MAX_DELAY))
    }

    pub fn succeeded(&self, ip: IpAddr) {
        if let Ok(mut map) = self.by_ip.lock() {
            map.remove(&ip);
        }
    }
}

/// Accepts connections until the shutdown starts, then stops accepting and waits for the
/// sessions, which say BYE.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<ImapContext>,
    shutdown: watch::Receiver<ShutdownPhase>,
) {
    let for_sessions = shutdown.clone();
    accept_until_shutdown(listener, shutdown, move |tcp, peer| {
        let admitted = ctx.limits.admit(peer.ip());
        let (ctx, shutdown) = (ctx.clone(), for_sessions.clone());
        async move {
            match admitted {
                Ok(admission) => {
                    handle(tcp, peer, ctx, shutdown).await;
                    drop(admission);
                }
                Err(refused) => {
                    tracing::warn!(client = %peer, reason = %refused, "IMAP connection refused");
                    ctx.telemetry.metrics.connection_refused(refused.class());
                    refuse(tcp, format!("* BYE {refused}\r\n").as_bytes()).await;
                }
            }
        }
    })
    .await
}

async fn handle(
    tcp: TcpStream,
    peer: SocketAddr,
    ctx: Arc<ImapContext>,
    shutdown: watch::Receiver<ShutdownPhase>,
) {
    let _ = tcp.set_nodelay(true);
    tracing::info!(client = %peer, listener = ctx.listener_name, "IMAP connect");
    ctx.telemetry.metrics.imap_session(ctx.listener_name);
    match converse(Stream::Plain(tcp), peer, &ctx, shutdown).await {
        Ok(()) => tracing::info!(client = %peer, "IMAP disconnect"),
        Err(e) => tracing::info!(client = %peer, error = %e, "IMAP disconnect"),
    }
}

async fn converse(
    mut stream: Stream,
    peer: SocketAddr,
    ctx: &ImapContext,
    mut shutdown: watch::Receiver<ShutdownPhase>,
) -> Result<(), String> {
    if ctx.implicit_tls {
        stream = upgrade(stream, ctx).await?;
    }
    let mut session = Session::new(ctx.session.clone(), ctx.store.clone(), ctx.implicit_tls);
    let mut pending: Vec<Action> = session.greeting();
    let mut out = Vec::new();
    let mut buf = vec![0u8; SMALL_READ];
    let mut last_command = Instant::now();
    let mut news: Option<(String, tokio::sync::watch::Receiver<u64>)> = None;
    loop {
        for action in std::mem::take(&mut pending) {
            match action {
                Action::Send(bytes) => out.extend_from_slice(&bytes),
                Action::Close => {
                    write_out(&mut stream, &mut out, ctx).await?;
                    let _ = stream.shutdown().await;
                    return Ok(());
                }
                Action::StartTls => {
                    write_out(&mut stream, &mut out, ctx).await?;
                    stream = upgrade(stream, ctx).await?;
                    session.tls_established();
                }
                Action::Stream {
                    head,
                    source,
                    skip,
                    len,
                } => {
                    write_out(&mut stream, &mut out, ctx).await?;
                    out = head;
                    write_out(&mut stream, &mut out, ctx).await?;
                    if let Err(e) = stream_text(&mut stream, source, skip, len, ctx).await {
                        // The literal was announced and cannot be completed: only closing the
                        // connection tells the client that what it got is not the message.
                        tracing::warn!(client = %peer, error = %e, "IMAP FETCH stopped midway");
                        return Err(e);
                    }
                    ctx.telemetry.metrics.imap_streamed();
                    out.extend_from_slice(b")\r\n");
                }
                Action::Authenticate(creds) => {
                    let result = check(ctx, peer, creds).await;
                    let (s, actions) = blocking(session, move |s| s.auth_result(result)).await?;
                    session = s;
                    pending.extend(actions);
                }
            }
        }
        if !pending.is_empty() {
            continue;
        }
        write_out(&mut stream, &mut out, ctx).await?;
        if phase(&shutdown) != ShutdownPhase::Running {
            pending = session.shutdown();
            continue;
        }
        let until_logout = ctx.idle_timeout.saturating_sub(last_command.elapsed());
        // Subscribed from the first turn after a SELECT on: a change made between then and an
        // IDLE is seen by the poll that starts the IDLE, or wakes it at once.
        match session.selected_mailbox() {
            Some(m) if news.as_ref().is_some_and(|(n, _)| n == m) => {}
            Some(m) => news = Some((m.to_string(), changes::subscribe(m))),
            None => news = None,
        }
        let idle_news = match news.as_mut() {
            Some((_, rx)) if session.idling() => Some(rx),
            _ => None,
        };
        let wait = if idle_news.is_some() {
            IDLE_POLL.min(until_logout)
        } else {
            until_logout
        };
        let changed = async {
            match idle_news {
                Some(rx) => rx.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        let read = tokio::select! {
            r = tokio::time::timeout(wait, stream.read(&mut buf)) => r,
            _ = shutdown.changed() => continue,
            true = changed => {
                let (s, actions) = blocking(session, |s| s.poll()).await?;
                session = s;
                pending = actions;
                continue;
            }
        };
        match read {
            Err(_) if last_command.elapsed() >= ctx.idle_timeout => {
                tracing::info!(client = %peer, "IMAP autologout");
                pending = session.timeout();
            }
            Err(_) => {
                let (s, actions) = blocking(session, |s| s.poll()).await?;
                session = s;
                pending = actions;
            }
            Ok(Ok(0)) => return Ok(()),
            Ok(Ok(n)) => {
                last_command = Instant::now();
                let data = buf[..n].to_vec();
                // Commands are short; a client sending more (an APPEND literal) gets big reads
                // until it stops, and an idle session keeps only the small buffer.
                let size = if n == buf.len() {
                    LARGE_READ
                } else {
                    SMALL_READ
                };
                if size != buf.len() {
                    buf = vec![0u8; size];
                }
                let (s, actions) = blocking(session, move |s| s.feed(&data)).await?;
                session = s;
                pending = actions;
            }
            Ok(Err(e)) => return Err(format!("read: {e}")),
        }
    }
}

/// Runs session work (it reads the store) off the reactor.
async fn blocking(
    mut session: Session,
    work: impl FnOnce(&mut Session) -> Vec<Action> + Send + 'static,
) -> Result<(Session, Vec<Action>), String> {
    tokio::task::spawn_blocking(move || {
        let actions = work(&mut session);
        (session, actions)
    })
    .await
    .map_err(|e| format!("session task failed: {e}"))
}

/// Checks a password off the reactor; failures are delayed, counted and logged (never the
/// password).
async fn check(
    ctx: &ImapContext,
    peer: SocketAddr,
    creds: crate::auth::Credentials,
) -> Result<String, ()> {
    let user = creds.username.clone();
    if !ctx.failures.allowed(peer.ip()) {
        tracing::warn!(client = %peer, user = ?user, "IMAP login refused: too many failures from this address");
        ctx.telemetry.metrics.imap_login(false);
        tokio::time::sleep(MAX_DELAY).await;
        return Err(());
    }
    let users = ctx.users.clone();
    let result = tokio::task::spawn_blocking(move || users.verify(&creds))
        .await
        .map_err(|_| ())
        .and_then(|r| r.map_err(|_| ()));
    match &result {
        Ok(name) => {
            ctx.failures.succeeded(peer.ip());
            ctx.telemetry.metrics.imap_login(true);
            tracing::info!(client = %peer, user = %name, "IMAP login");
        }
        Err(()) => {
            let (failures, delay) = ctx.failures.failed(peer.ip());
            ctx.telemetry.metrics.imap_login(false);
            tracing::warn!(client = %peer, user = ?user, failures, delay_ms = delay.as_millis() as u64, "IMAP login failed");
            tokio::time::sleep(delay).await;
        }
    }
    result
}

/// Plaintext handed from the store to the socket per blocking call (four chunks).
const STREAM_BATCH: usize = 256 * 1024;

/// Sends `len` bytes of a message's text from offset `skip`, read, authenticated and decrypted
/// off the reactor one batch at a time: the session holds at most one batch of it.
async fn stream_text(
    stream: &mut Stream,
    source: MessageSource,
    skip: u64,
    len: u64,
    ctx: &ImapContext,
) -> Result<(), String> {
    let mut chunks = tokio::task::spawn_blocking(move || source.range(skip, len))
        .await
        .map_err(|e| format!("reader task failed: {e}"))?
        .map_err(|e| e.to_string())?;
    let mut left = len;
    let mut batch = Vec::with_capacity(STREAM_BATCH);
    while left > 0 {
        let (c, b, result) = tokio::task::spawn_blocking(move || {
            batch.clear();
            let result = fill(&mut chunks, &mut batch);
            (chunks, batch, result)
        })
        .await
        .map_err(|e| format!("reader task failed: {e}"))?;
        (chunks, batch) = (c, b);
        result.map_err(|e| e.to_string())?;
        if batch.is_empty() {
            return Err(format!("message ended {left} bytes early"));
        }
        left = left.saturating_sub(batch.len() as u64);
        write_out(stream, &mut batch, ctx).await?;
    }
    Ok(())
}

/// Appends pieces to `batch` until it holds about `STREAM_BATCH` bytes or the range ends.
fn fill(chunks: &mut MessageChunks, batch: &mut Vec<u8>) -> Result<(), StoreError> {
    while batch.len() < STREAM_BATCH {
        match chunks.next_chunk()? {
            Some(piece) => batch.extend_from_slice(piece),
            None => break,
        }
    }
    Ok(())
}

async fn write_out(
    stream: &mut Stream,
    out: &mut Vec<u8>,
    ctx: &ImapContext,
) -> Result<(), String> {
    if out.is_empty() {
        return Ok(());
    }
    let write = async {
        stream.write_all(out).await?;
        stream.flush().await
    };
    match tokio::time::timeout(ctx.command_timeout, write).await {
        Ok(r) => r.map_err(|e| format!("write: {e}"))?,
        Err(_) => return Err("write timed out".into()),
    }
    ctx.telemetry.metrics.imap_bytes(out.len());
    out.clear();
    Ok(())
}

async fn upgrade(stream: Stream, ctx: &ImapContext) -> Result<Stream, String> {
    let Some(config) = ctx.tls.clone() else {
        return Err("TLS without a certificate".into());
    };
    match accept_tls(stream, config, ctx.command_timeout).await {
        Ok((tls, facts)) => {
            ctx.telemetry
                .metrics
                .tls_handshake(Direction::Inbound, &facts.version);
            Ok(tls)
        }
        Err(failure) => {
            ctx.telemetry
                .metrics
                .tls_failure(Direction::Inbound, &failure);
            Err(format!("TLS handshake failed: {failure}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_logins_wait_longer_each_time_and_an_address_is_cut_off() {
        let f = LoginFailures::default();
        let (a, b): (IpAddr, IpAddr) = ([192, 0, 2, 1].into(), [192, 0, 2, 2].into());
        let delays: Vec<Duration> = (0..MAX_FAILURES).map(|_| f.failed(a).1).collect();
        assert_eq!(delays[0], Duration::from_secs(1));
        assert_eq!(delays[1], Duration::from_secs(2));
        assert!(delays.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*delays.last().unwrap(), MAX_DELAY);
        assert!(
            !f.allowed(a),
            "no more password checks after {MAX_FAILURES} failures"
        );
        assert!(f.allowed(b), "other addresses are not concerned");
        f.succeeded(a);
        assert!(f.allowed(a));
        assert_eq!(f.failed(a), (1, Duration::from_secs(1)));
    }
}

//! The accept loop every listener shares: connections are taken until the shutdown starts and
//! each becomes a session task (the protocol decides, when the connection arrives, whether the
//! connection limits admit it); then accepting stops and the sessions in flight are waited for.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::shutdown::{phase, ShutdownPhase};

/// Runs `session(connection, peer)` for every connection accepted until the shutdown leaves
/// `Running`; returns when every session has ended. A session's task is reaped as soon as it
/// ends (a finished task keeps its whole allocation until joined: some KiB per session, which
/// would stay after a crowd of idle sessions closed until the next connection came).
pub async fn accept_until_shutdown<F, S>(
    listener: TcpListener,
    mut shutdown: watch::Receiver<ShutdownPhase>,
    mut session: F,
) where
    F: FnMut(TcpStream, SocketAddr) -> S,
    S: Future<Output = ()> + Send + 'static,
{
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    sessions.spawn(session(tcp, peer));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            _ = shutdown.changed() => if phase(&shutdown) != ShutdownPhase::Running { break },
        }
        while sessions.try_join_next().is_some() {}
    }
    drop(listener);
    while sessions.join_next().await.is_some() {}
}

/// Says `words` (the protocol's refusal: SMTP 421, IMAP BYE) to a connection the limits did
/// not admit, giving it at most 2 s, and closes it.
pub async fn refuse(mut tcp: TcpStream, words: &[u8]) {
    let _ = tokio::time::timeout(Duration::from_secs(2), tcp.write_all(words)).await;
    let _ = tcp.shutdown().await;
}

//! A dedicated connection that `LISTEN`s on one channel and hands each notification to a
//! callback, reconnecting with backoff when the database goes away.
//!
//! Notifications sent while no connection listens are lost: after a reconnect the callback hears
//! [`Heard::Resumed`], so that its user can act as if anything may have changed meanwhile.

use std::future::poll_fn;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, Connection};

use super::{tls, DbError, PgSettings, PgTls};

/// The first wait before connecting again; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often a quiet connection is checked (a connection dropped without a word is found out).
const CHECK_EVERY: Duration = Duration::from_secs(30);

/// What the listening connection heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard<'a> {
    /// A notification on the channel, with its payload.
    Notification(&'a str),
    /// Listening again after the connection was lost: notifications may have been missed.
    Resumed,
}

/// Listens on `channel` for as long as the task runs (it never returns), calling `on` for every
/// notification and once after each reconnect. Logs a warning when the connection is lost or
/// cannot be made (once until it is back) and an info line when it is back.
pub(super) async fn run(
    settings: PgSettings,
    location: String,
    channel: &'static str,
    limit: Duration,
    on: impl Fn(Heard<'_>) + Send + Sync + 'static,
) {
    let mut backoff = MIN_BACKOFF;
    let mut listened_before = false;
    let mut down = false;
    loop {
        let mut started = false;
        let lost = listen_once(&settings, channel, limit, |heard| {
            if !started {
                started = true;
                if down {
                    tracing::info!(database = %location, channel, "listening for changes again");
                    down = false;
                }
                backoff = MIN_BACKOFF;
                if listened_before {
                    on(Heard::Resumed);
                }
                listened_before = true;
            }
            if let Some(h) = heard {
                on(h);
            }
        })
        .await;
        if !down {
            tracing::warn!(
                database = %location,
                channel,
                error = %lost,
                "not listening for changes made by other nodes (retrying; until then they are \
                 seen by polling)"
            );
            down = true;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection: connects, listens, and passes on what it hears (`None` once, when listening
/// started) until the connection fails; returns why.
async fn listen_once(
    settings: &PgSettings,
    channel: &str,
    limit: Duration,
    mut on: impl FnMut(Option<Heard<'_>>),
) -> DbError {
    let (client, mut heard) = match tokio::time::timeout(limit, connect(settings)).await {
        Ok(Ok(connected)) => connected,
        Ok(Err(e)) => return e,
        Err(_) => return DbError::Timeout(limit),
    };
    let listen = format!("LISTEN \"{channel}\"");
    match tokio::time::timeout(limit, client.batch_execute(&listen)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return e.into(),
        Err(_) => return DbError::Timeout(limit),
    }
    on(None);
    loop {
        tokio::select! {
            message = heard.recv() => match message {
                Some(Ok(payload)) => on(Some(Heard::Notification(&payload))),
                Some(Err(e)) => return e,
                None => return DbError::Pool("the listening connection closed".into()),
            },
            _ = tokio::time::sleep(CHECK_EVERY) => {
                match tokio::time::timeout(limit, client.simple_query("")).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return e.into(),
                    Err(_) => return DbError::Timeout(limit),
                }
            }
        }
    }
}

/// A connection of its own (not from the pool), with the pool's settings; what the server sends
/// unasked comes out of the receiver: notification payloads, then the error that ended it.
async fn connect(
    settings: &PgSettings,
) -> Result<(Client, mpsc::UnboundedReceiver<Result<String, DbError>>), DbError> {
    let mut config = settings.connect_config()?;
    config.connect_timeout(settings.connect_timeout);
    config.keepalives_idle(CHECK_EVERY);
    match settings.tls {
        PgTls::Disable => {
            let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
            Ok((client, drive(connection)))
        }
        PgTls::Prefer | PgTls::Require => {
            let connector = tls::connector(settings.ca_file.as_deref())?;
            let (client, connection) = config.connect(connector).await?;
            Ok((client, drive(connection)))
        }
    }
}

/// Drives the connection on a task of its own, sending on the notifications' payloads.
fn drive<S, T>(mut connection: Connection<S, T>) -> mpsc::UnboundedReceiver<Result<String, DbError>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if tx.send(Ok(n.payload().to_string())).is_err() {
                        return;
                    }
                }
                Some(Ok(_notice)) => {}
                Some(Err(e)) => {
                    let _ = tx.send(Err(e.into()));
                    return;
                }
                None => return,
            }
        }
    });
    rx
}

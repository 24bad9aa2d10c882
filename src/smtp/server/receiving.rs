//! Message content on its way from a session to the spool: gathered into 64 KiB pieces and
//! written to a sealed staging file off the async reactor, so a session holds a bounded amount
//! of it in memory whatever the message size.

use std::sync::Arc;

use super::transaction::Transaction;
use super::Receiver;
use crate::mail::Reply;
use crate::queue::Staging;

/// Content gathered before it is written.
const PIECE: usize = 64 * 1024;

/// The content of the transaction in progress on one connection.
pub struct Receiving {
    cleanup: Arc<dyn Receiver>,
    staging: Option<Staging>,
    buf: Vec<u8>,
    /// A write failed: the rest is dropped and the transaction refused.
    failed: bool,
}

/// What a failed staging write is answered with (the same as a failed queue file write).
fn write_error() -> Reply {
    Reply::new(451, [4, 3, 0], "Error: queue file write error")
}

impl Receiving {
    pub fn new(cleanup: Arc<dyn Receiver>) -> Receiving {
        Receiving {
            cleanup,
            staging: None,
            buf: Vec::new(),
            failed: false,
        }
    }

    /// More content of the transaction in progress.
    pub async fn data(&mut self, piece: &[u8]) {
        if self.failed {
            return;
        }
        self.buf.extend_from_slice(piece);
        if self.buf.len() >= PIECE {
            self.flush().await;
        }
    }

    /// The content so far is refused or abandoned: its staging file is removed.
    pub async fn discard(&mut self) {
        self.buf.clear();
        self.failed = false;
        if let Some(staging) = self.staging.take() {
            let _ = tokio::task::spawn_blocking(move || drop(staging)).await;
        }
    }

    /// The content is complete: it is written, staged and queued for `tx` in one blocking step
    /// (one hand-off to the blocking pool per message, not one per stage). Returns the queue id,
    /// or the reply when the content could not be written or the message was refused.
    pub async fn enqueue(&mut self, tx: Box<Transaction>) -> Result<String, Reply> {
        let failed = std::mem::take(&mut self.failed);
        let staging = self.staging.take();
        let buf = std::mem::take(&mut self.buf);
        if failed {
            return Err(write_error());
        }
        let cleanup = self.cleanup.clone();
        let queued = tokio::task::spawn_blocking(move || {
            let mut staging = match staging {
                Some(staging) => staging,
                None => cleanup.stage().map_err(|e| e.to_string())?,
            };
            if !buf.is_empty() {
                staging.write(&buf).map_err(|e| e.to_string())?;
            }
            let staged = staging.finish().map_err(|e| e.to_string())?;
            Ok::<_, String>(cleanup.enqueue(&tx, staged))
        })
        .await;
        match queued {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "queue write failed; message refused with 451");
                Err(write_error())
            }
            Err(e) => {
                tracing::error!(error = %e, "queue write panicked; message refused with 451");
                Err(write_error())
            }
        }
    }

    /// Writes what is gathered (creating the staging file first if needed).
    async fn flush(&mut self) {
        if self.failed || self.buf.is_empty() {
            return;
        }
        let cleanup = self.cleanup.clone();
        let staging = self.staging.take();
        let buf = std::mem::take(&mut self.buf);
        let written = tokio::task::spawn_blocking(move || {
            let mut staging = match staging {
                Some(staging) => staging,
                None => cleanup.stage().map_err(|e| (e.to_string(), Vec::new()))?,
            };
            match staging.write(&buf) {
                Ok(()) => Ok((staging, buf)),
                Err(e) => Err((e.to_string(), buf)),
            }
        })
        .await;
        match written {
            Ok(Ok((staging, mut buf))) => {
                self.staging = Some(staging);
                buf.clear();
                self.buf = buf;
            }
            Ok(Err((e, _))) => {
                tracing::error!(error = %e, "queue write failed; message refused with 451");
                self.failed = true;
            }
            Err(e) => {
                tracing::error!(error = %e, "queue write panicked; message refused with 451");
                self.failed = true;
            }
        }
    }
}

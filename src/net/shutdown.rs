//! Shutdown in phases, watched by every listener and session of the server.

use tokio::sync::watch;

/// How far a shutdown has gone. Listeners and sessions watch it; a closed channel (the server
/// dropped) counts as `Cut`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum ShutdownPhase {
    #[default]
    Running,
    /// Listeners are closed; an idle session is told 421 4.3.2 at once, a session in a
    /// transaction may finish it and is told 421 4.3.2 after its reply.
    Draining,
    /// The grace period is over: every open session is told 421 4.3.2 and closed; message
    /// content not completely received is not queued.
    Cut,
}

/// The phase now; a closed channel (the server dropped) counts as `Cut`.
pub fn phase(rx: &watch::Receiver<ShutdownPhase>) -> ShutdownPhase {
    if rx.has_changed().is_err() {
        return ShutdownPhase::Cut;
    }
    *rx.borrow()
}

//! Connection plumbing shared by every listener and client: the plaintext-or-TLS stream, the
//! TLS upgrade (STARTTLS or implicit), connection limits and the shutdown phases. SMTP uses it
//! today; any other listener (IMAP, the licensing service) uses the same pieces.

pub mod accept;
pub mod limits;
pub mod shutdown;
pub mod stream;

use std::sync::Arc;
use std::time::Duration;

pub use limits::{Admission, ConnectionLimits};
pub use shutdown::ShutdownPhase;
pub use stream::Stream;

use crate::tls::policy::TlsFailure;
use crate::tls::TlsFacts;

/// The server side of a TLS handshake within `timeout`. Consumes the plaintext stream: on
/// failure the connection is gone, never silently left in clear. The failure is typed, for the
/// caller's metrics and logs.
pub async fn accept_tls(
    stream: Stream,
    config: Arc<rustls::ServerConfig>,
    timeout: Duration,
) -> Result<(Stream, TlsFacts), TlsFailure> {
    match tokio::time::timeout(timeout, stream.accept_tls(config)).await {
        Err(_) => Err(TlsFailure::Timeout),
        Ok(Err(e)) => Err(TlsFailure::from_handshake(&e)),
        Ok(Ok(upgraded)) => Ok(upgraded),
    }
}

//! The licensing service's HTTPS transport: TLS 1.2+ through rustls (a client certificate is
//! asked for, not required: the tenant's own users may use their password instead), HTTP/1.1
//! through hyper, and bounds on everything a client controls: connections in total and per
//! address, handshake and header time, the whole exchange's time, and the request size.
//!
//! The handshake proves the client holds the key of the certificate it presents; whether that
//! certificate names a reader the tenant trusts is the handler's question (see
//! [`super::identity::ReaderTrust`]). Every answer is JSON; a refusal says why in `reason`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls_pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::Credentials;
use crate::net::accept::accept_until_shutdown;
use crate::net::{accept_tls, ConnectionLimits, ShutdownPhase};

/// What one client may ask of the service.
#[derive(Clone, Copy, Debug)]
pub struct ServiceLimits {
    /// The largest request body, in bytes.
    pub max_request: usize,
    /// Connections open at once, in total and from one address.
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// The TLS handshake and the request headers must each arrive within this.
    pub handshake_timeout: Duration,
    /// A connection is closed after this, whatever it is doing.
    pub connection_timeout: Duration,
}

impl Default for ServiceLimits {
    fn default() -> Self {
        ServiceLimits {
            max_request: 64 * 1024,
            max_connections: 512,
            max_connections_per_ip: 64,
            handshake_timeout: Duration::from_secs(10),
            connection_timeout: Duration::from_secs(60),
        }
    }
}

/// A request as the handler sees it.
#[derive(Debug)]
pub struct ServiceRequest {
    pub method: Method,
    pub path: String,
    pub peer: SocketAddr,
    /// The certificate chain the client presented (possession of its key proven by the
    /// handshake; trust not yet checked). Empty when it presented none.
    pub client_chain: Vec<CertificateDer<'static>>,
    /// `Authorization: Basic` credentials, if given.
    pub credentials: Option<Credentials>,
    pub body: Bytes,
}

/// The handler's answer: a status and a JSON document.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceResponse {
    pub status: StatusCode,
    pub body: serde_json::Value,
}

impl ServiceResponse {
    pub fn ok(body: serde_json::Value) -> ServiceResponse {
        ServiceResponse {
            status: StatusCode::OK,
            body,
        }
    }

    /// A refusal: `{"error": code, "reason": reason}`.
    pub fn refused(status: StatusCode, code: &str, reason: impl Into<String>) -> ServiceResponse {
        ServiceResponse {
            status,
            body: serde_json::json!({ "error": code, "reason": reason.into() }),
        }
    }
}

/// Answers requests. Blocking (it signs and decrypts): called off the async reactor.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, request: ServiceRequest) -> ServiceResponse;
}

/// The service's TLS configuration: TLS 1.2+ with the server's suites, HTTP/1.1 by ALPN, and a
/// client certificate asked for (any chain; its key must sign the handshake).
pub fn tls_config(
    key: &crate::tls::CertifiedKey,
    min: crate::tls::TlsMinVersion,
) -> Result<Arc<rustls::ServerConfig>, crate::tls::TlsError> {
    let mut config = (*crate::tls::server_config(key, min, true, true)?).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves HTTPS on `listener` until the shutdown starts, then lets open exchanges finish within
/// the connection timeout.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    handler: Arc<dyn Handler>,
    limits: ServiceLimits,
    shutdown: watch::Receiver<ShutdownPhase>,
) {
    let admitted = ConnectionLimits::new(limits.max_connections, limits.max_connections_per_ip);
    accept_until_shutdown(listener, shutdown, move |tcp, peer| {
        let admission = admitted.admit(peer.ip());
        let (tls, handler) = (tls.clone(), handler.clone());
        async move {
            let _admission = match admission {
                Ok(a) => a,
                Err(refused) => {
                    tracing::warn!(client = %peer, reason = %refused, "licensing connection refused");
                    return;
                }
            };
            let exchange = connection(tcp, peer, tls, handler, limits);
            if tokio::time::timeout(limits.connection_timeout, exchange)
                .await
                .is_err()
            {
                tracing::info!(client = %peer, "licensing connection timed out");
            }
        }
    })
    .await
}

async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    handler: Arc<dyn Handler>,
    limits: ServiceLimits,
) {
    let _ = tcp.set_nodelay(true);
    let (stream, facts) = match accept_tls(
        crate::net::Stream::Plain(tcp),
        tls,
        limits.handshake_timeout,
    )
    .await
    {
        Ok(upgraded) => upgraded,
        Err(failure) => {
            tracing::info!(client = %peer, %failure, "licensing TLS handshake failed");
            return;
        }
    };
    let chain = Arc::new(facts.peer_certificates);
    let service = hyper::service::service_fn(move |req| {
        let (handler, chain) = (handler.clone(), chain.clone());
        async move {
            Ok::<_, Infallible>(exchange(req, peer, &chain, handler, limits.max_request).await)
        }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.handshake_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = served {
        tracing::debug!(client = %peer, error = %e, "licensing connection ended");
    }
}

/// Reads one request within its bounds, asks the handler, and writes the JSON answer.
async fn exchange(
    req: Request<Incoming>,
    peer: SocketAddr,
    chain: &[CertificateDer<'static>],
    handler: Arc<dyn Handler>,
    max_request: usize,
) -> Response<Full<Bytes>> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_request as u64) {
        return json(too_large(max_request));
    }
    let credentials = match basic_credentials(req.headers().get(header::AUTHORIZATION)) {
        Ok(c) => c,
        Err(reason) => {
            return json(ServiceResponse::refused(
                StatusCode::BAD_REQUEST,
                "bad-request",
                reason,
            ))
        }
    };
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, max_request).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return json(too_large(max_request))
        }
        Err(e) => {
            return json(ServiceResponse::refused(
                StatusCode::BAD_REQUEST,
                "bad-request",
                format!("the request body could not be read: {e}"),
            ))
        }
    };
    let request = ServiceRequest {
        method: parts.method,
        path: parts.uri.path().to_string(),
        peer,
        client_chain: chain.to_vec(),
        credentials,
        body,
    };
    let answer = tokio::task::spawn_blocking(move || handler.handle(request)).await;
    json(answer.unwrap_or_else(|_| {
        ServiceResponse::refused(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal-error",
            "the request could not be handled",
        )
    }))
}

fn too_large(max: usize) -> ServiceResponse {
    ServiceResponse::refused(
        StatusCode::PAYLOAD_TOO_LARGE,
        "request-too-large",
        format!("requests are limited to {max} bytes"),
    )
}

/// `Authorization: Basic base64(user:password)`; other schemes are refused.
fn basic_credentials(value: Option<&HeaderValue>) -> Result<Option<Credentials>, String> {
    let Some(value) = value else { return Ok(None) };
    let bad = || "Authorization must be Basic base64(user:password)".to_string();
    let text = value.to_str().map_err(|_| bad())?;
    let (scheme, encoded) = text.trim().split_once(' ').ok_or_else(bad)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(bad());
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let (username, password) = decoded.split_once(':').ok_or_else(bad)?;
    Ok(Some(Credentials {
        username: username.to_string(),
        password: password.to_string(),
    }))
}

fn json(answer: ServiceResponse) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(answer.body.to_string())));
    *response.status_mut() = answer.status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_read_and_other_schemes_refused() {
        let v = HeaderValue::from_static("Basic YWxpY2VAY29udG9zby50ZXN0OnM6Y3JldA==");
        let c = basic_credentials(Some(&v)).unwrap().unwrap();
        assert_eq!(c.username, "alice@contoso.test");
        assert_eq!(c.password, "s:cret");
        assert_eq!(basic_credentials(None).unwrap(), None);
        for bad in ["Bearer abc", "Basic !!!", "Basic", "Basic bm9jb2xvbg=="] {
            let v = HeaderValue::from_str(bad).unwrap();
            assert!(basic_credentials(Some(&v)).is_err(), "{bad}");
        }
    }
}

//! Fetching a policy file (RFC 8461 §3.3): `GET https://mta-sts.<domain>/.well-known/mta-sts.txt`
//! over TLS 1.2+ with the server's certificate verified (PKIX) for the policy host, no redirect
//! followed, a `text/plain` answer of at most [`MAX_POLICY_SIZE`] bytes, all within
//! [`FETCH_TIMEOUT`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;

use super::policy::{parse_policy, Policy};
use crate::dns::Resolver;
use crate::tls::policy::TrustAnchors;

/// The path of the policy file on the policy host.
pub const POLICY_PATH: &str = "/.well-known/mta-sts.txt";
/// The largest policy file read (RFC 8461 §3.3 suggests 64 KiB).
pub const MAX_POLICY_SIZE: usize = 64 * 1024;
/// Time for the whole fetch: name lookup, connection, handshake, answer.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why no policy came from the policy host; the domain is then treated as having none (unless
/// a cached policy is still valid).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("policy host {host}: {reason}")]
    Unreachable { host: String, reason: String },
    #[error("policy host {host} answered {status}{}", redirect_note(*.status))]
    Status { host: String, status: u16 },
    #[error("policy host {host}: content type {found:?} is not text/plain")]
    ContentType { host: String, found: String },
    #[error("policy host {host}: the policy is larger than {MAX_POLICY_SIZE} bytes")]
    TooLarge { host: String },
    #[error("policy host {host}: no answer within {} s", FETCH_TIMEOUT.as_secs())]
    Timeout { host: String },
    #[error("policy host {host}: {error}")]
    Invalid {
        host: String,
        error: super::policy::PolicyError,
    },
}

fn redirect_note(status: u16) -> &'static str {
    if (300..400).contains(&status) {
        " (redirects are not followed)"
    } else {
        ""
    }
}

/// The TLS configuration of policy fetches: TLS 1.2+, PKIX against `anchors`, HTTP/1.1.
pub fn client_config(anchors: &TrustAnchors) -> Result<Arc<ClientConfig>, rustls::Error> {
    let versions = [&rustls::version::TLS13, &rustls::version::TLS12];
    let mut config = ClientConfig::builder_with_provider(crate::tls::provider())
        .with_protocol_versions(&versions)?
        .with_root_certificates(anchors.roots.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Fetches and parses the policy of `domain` from `mta-sts.<domain>` on `port` (443 outside
/// tests), its addresses found through `resolver`.
pub async fn fetch(
    resolver: &Resolver,
    tls: Arc<ClientConfig>,
    domain: &str,
    port: u16,
) -> Result<Policy, FetchError> {
    let host = format!("mta-sts.{domain}");
    match tokio::time::timeout(FETCH_TIMEOUT, fetch_from(resolver, tls, &host, port)).await {
        Ok(result) => result,
        Err(_) => Err(FetchError::Timeout { host }),
    }
}

async fn fetch_from(
    resolver: &Resolver,
    tls: Arc<ClientConfig>,
    host: &str,
    port: u16,
) -> Result<Policy, FetchError> {
    let unreachable = |reason: String| FetchError::Unreachable {
        host: host.to_string(),
        reason,
    };
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| unreachable("not a valid host name".into()))?;
    let addrs = resolver
        .host_addresses(host)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let mut last = String::from("no address");
    let mut stream = None;
    for ip in addrs {
        match tokio::net::TcpStream::connect(SocketAddr::new(ip, port)).await {
            Ok(tcp) => {
                let connector = tokio_rustls::TlsConnector::from(tls.clone());
                match connector.connect(name.clone(), tcp).await {
                    Ok(s) => {
                        stream = Some(s);
                        break;
                    }
                    Err(e) => last = format!("TLS with {ip}: {e}"),
                }
            }
            Err(e) => last = format!("connecting to {ip} port {port}: {e}"),
        }
    }
    let stream = stream.ok_or_else(|| unreachable(last))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(format!("HTTP: {e}")))?;
    let driver = tokio::spawn(conn);
    let request = Request::builder()
        .method(Method::GET)
        .uri(POLICY_PATH)
        .header(header::HOST, host)
        .header(header::ACCEPT, HeaderValue::from_static("text/plain"))
        .body(Empty::<Bytes>::new())
        .map_err(|e| unreachable(format!("HTTP request: {e}")))?;
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| unreachable(format!("HTTP: {e}")))?;
        // RFC 8461 §3.3: 3xx redirects are not followed; only a 200 carries a policy.
        if response.status() != StatusCode::OK {
            return Err(FetchError::Status {
                host: host.to_string(),
                status: response.status().as_u16(),
            });
        }
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        if !is_text_plain(&content_type) {
            return Err(FetchError::ContentType {
                host: host.to_string(),
                found: content_type,
            });
        }
        let body = Limited::new(response.into_body(), MAX_POLICY_SIZE)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    FetchError::TooLarge {
                        host: host.to_string(),
                    }
                } else {
                    unreachable(format!("reading the policy: {e}"))
                }
            })?
            .to_bytes();
        parse_policy(&body).map_err(|error| FetchError::Invalid {
            host: host.to_string(),
            error,
        })
    }
    .await;
    driver.abort();
    result
}

/// The media type is `text/plain`, in any case, with or without parameters (`charset=utf-8`).
pub fn is_text_plain(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("text/plain"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_type_alone_decides() {
        assert!(is_text_plain("text/plain"));
        assert!(is_text_plain("Text/Plain; charset=utf-8"));
        assert!(!is_text_plain("text/html"));
        assert!(!is_text_plain("text/plainx"));
        assert!(!is_text_plain(""));
    }

    #[test]
    fn redirects_say_they_are_not_followed() {
        let e = FetchError::Status {
            host: "mta-sts.example.test".into(),
            status: 301,
        };
        assert_eq!(
            e.to_string(),
            "policy host mta-sts.example.test answered 301 (redirects are not followed)"
        );
    }
}

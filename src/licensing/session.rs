//! A reader's persistent connection to the licensing service: one TLS connection (one
//! handshake, one client-certificate proof) carrying several `POST /v1/use-license` requests
//! over HTTP/1.1 keep-alive, for a reader that asks for many use licenses in a row.
//!
//! The server is verified and the reader authenticated exactly as in [`super::client`] (the
//! same `ClientConfig`); every request is still decided, logged and answered on its own. When
//! the service closes the connection (its connection time limit, or a shutdown), the next
//! request opens a new one. As with [`super::client`], nothing here trusts the answer: the caller
//! verifies the use license before using it.

use std::sync::Arc;

use base64::Engine;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;

use super::client::{ClientError, ServiceUrl, CONNECT_TIMEOUT, EXCHANGE_TIMEOUT, MAX_ANSWER};

/// One open connection: the request sender and the task driving the connection.
struct Open {
    sender: SendRequest<Full<Bytes>>,
    driver: tokio::task::JoinHandle<()>,
}

/// A persistent HTTPS connection to one licensing service.
pub struct Session {
    url: ServiceUrl,
    tls: Arc<ClientConfig>,
    open: Option<Open>,
    connections: usize,
    resumed: usize,
}

impl Session {
    /// A session to `url`; the connection is opened by the first request.
    pub fn new(url: ServiceUrl, tls: Arc<ClientConfig>) -> Session {
        Session {
            url,
            tls,
            open: None,
            connections: 0,
            resumed: 0,
        }
    }

    /// TLS connections opened so far, and how many of them resumed an earlier TLS session.
    pub fn connections(&self) -> (usize, usize) {
        (self.connections, self.resumed)
    }

    /// Asks for a use license for the publishing license `license` (with its `signature`) on
    /// the open connection, opening one first if there is none; within `EXCHANGE_TIMEOUT`.
    /// Returns the use license's bytes (not yet verified).
    pub async fn use_license(
        &mut self,
        license: &[u8],
        signature: &[u8],
    ) -> Result<Vec<u8>, ClientError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let body = serde_json::json!({
            "license": b64.encode(license),
            "signature": b64.encode(signature),
        })
        .to_string();
        let result = tokio::time::timeout(EXCHANGE_TIMEOUT, self.exchange(body)).await;
        let result = result.unwrap_or_else(|_| {
            Err(self.unreachable(format!("no answer within {} s", EXCHANGE_TIMEOUT.as_secs())))
        });
        if result.is_err() {
            // After a failure the connection's state is unknown: the next request starts afresh.
            self.close();
        }
        result
    }

    /// Closes the connection (if open).
    pub fn close(&mut self) {
        if let Some(open) = self.open.take() {
            open.driver.abort();
        }
    }

    async fn exchange(&mut self, body: String) -> Result<Vec<u8>, ClientError> {
        if self.open.as_ref().is_none_or(|o| o.sender.is_closed()) {
            self.close();
            self.open = Some(self.connect().await?);
        }
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.url.endpoint())
            .header(header::HOST, authority(&self.url))
            .header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )
            .header(header::ACCEPT, HeaderValue::from_static("application/json"))
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| self.unreachable(format!("HTTP request: {e}")))?;
        let Some(open) = self.open.as_mut() else {
            return Err(self.unreachable("no connection"));
        };
        let sent = async {
            open.sender.ready().await?;
            open.sender.send_request(request).await
        };
        let response = sent
            .await
            .map_err(|e| self.unreachable(format!("HTTP: {e}")))?;
        let status = response.status();
        let json = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim()
                    .to_ascii_lowercase()
                    .starts_with("application/json")
            });
        let bytes = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| self.bad_answer(format!("reading the answer: {e}")))?
            .to_bytes();
        self.interpret(status, json, &bytes)
    }

    async fn connect(&mut self) -> Result<Open, ClientError> {
        let name = ServerName::try_from(self.url.host.clone())
            .map_err(|_| self.unreachable("not a host name or IP address"))?;
        let connect = async {
            let tcp = tokio::net::TcpStream::connect((self.url.host.as_str(), self.url.port))
                .await
                .map_err(|e| self.unreachable(e.to_string()))?;
            let _ = tcp.set_nodelay(true);
            tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| self.unreachable(format!("TLS: {e}")))
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| {
                self.unreachable(format!(
                    "no connection within {} s",
                    CONNECT_TIMEOUT.as_secs()
                ))
            })??;
        self.connections += 1;
        if stream.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
            self.resumed += 1;
        }
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.unreachable(format!("HTTP: {e}")))?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Open { sender, driver })
    }

    /// A `200` JSON answer's `use_license`, or the service's refusal.
    fn interpret(
        &self,
        status: StatusCode,
        json: bool,
        bytes: &[u8],
    ) -> Result<Vec<u8>, ClientError> {
        let value: serde_json::Value = match json.then(|| serde_json::from_slice(bytes)) {
            Some(Ok(value)) => value,
            _ => return Err(self.bad_answer(format!("HTTP {status} without a JSON body"))),
        };
        let text = |field: &str| value.get(field).and_then(|v| v.as_str());
        if status != StatusCode::OK {
            return match text("reason") {
                Some(reason) => Err(ClientError::Refused {
                    status: status.as_u16(),
                    code: text("error").map_or_else(|| status.as_u16().to_string(), Into::into),
                    reason: reason.into(),
                }),
                None => Err(self.bad_answer(format!("HTTP {status} without a reason"))),
            };
        }
        let encoded = text("use_license").ok_or_else(|| self.bad_answer("no use_license"))?;
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| self.bad_answer("use_license is not base64"))
    }

    fn unreachable(&self, reason: impl Into<String>) -> ClientError {
        ClientError::Unreachable {
            url: self.url.url.clone(),
            reason: reason.into(),
        }
    }

    fn bad_answer(&self, reason: impl Into<String>) -> ClientError {
        ClientError::BadAnswer {
            url: self.url.url.clone(),
            reason: reason.into(),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.close();
    }
}

/// The `Host` header value for `url`.
fn authority(url: &ServiceUrl) -> String {
    let host = if url.host.contains(':') {
        format!("[{}]", url.host)
    } else {
        url.host.clone()
    };
    if url.port == 443 {
        host
    } else {
        format!("{host}:{}", url.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_json_200_with_a_use_license_is_one() {
        let url = ServiceUrl::parse("https://[::1]:9443").unwrap();
        assert_eq!(authority(&url), "[::1]:9443");
        let tls = Arc::new(
            ClientConfig::builder_with_provider(crate::tls::provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        );
        let s = Session::new(url, tls);
        let ok = br#"{"use_license":"AAEC"}"#;
        assert_eq!(s.interpret(StatusCode::OK, true, ok).unwrap(), [0, 1, 2]);
        assert!(matches!(
            s.interpret(StatusCode::OK, false, ok),
            Err(ClientError::BadAnswer { .. })
        ));
        assert!(matches!(
            s.interpret(StatusCode::OK, true, br#"{"use_license":"!"}"#),
            Err(ClientError::BadAnswer { .. })
        ));
        let refused = br#"{"error":"revoked","reason":"the message was revoked"}"#;
        match s.interpret(StatusCode::FORBIDDEN, true, refused) {
            Err(ClientError::Refused { status, code, .. }) => {
                assert_eq!((status, code.as_str()), (403, "revoked"))
            }
            other => panic!("{other:?}"),
        }
    }
}

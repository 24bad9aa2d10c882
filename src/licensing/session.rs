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

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;

use super::client::{self, Answer, ClientError, ServiceUrl, EXCHANGE_TIMEOUT};

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
    /// The answer is not yet verified.
    pub async fn use_license(
        &mut self,
        license: &[u8],
        signature: &[u8],
    ) -> Result<Answer, ClientError> {
        let body = client::request_body(license, signature, None);
        let result = tokio::time::timeout(EXCHANGE_TIMEOUT, self.exchange(body)).await;
        let result = result.unwrap_or_else(|_| {
            Err(client::unreachable(
                &self.url,
                format!("no answer within {} s", EXCHANGE_TIMEOUT.as_secs()),
            ))
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

    async fn exchange(&mut self, body: String) -> Result<Answer, ClientError> {
        if self.open.as_ref().is_none_or(|o| o.sender.is_closed()) {
            self.close();
            self.open = Some(self.connect().await?);
        }
        let request = client::build_request(&self.url, body, None)?;
        let url = &self.url;
        let Some(open) = self.open.as_mut() else {
            return Err(client::unreachable(url, "no connection"));
        };
        let sent = async {
            open.sender.ready().await?;
            open.sender.send_request(request).await
        };
        let response = sent
            .await
            .map_err(|e| client::unreachable(url, format!("HTTP: {e}")))?;
        client::read_answer(url, response).await
    }

    async fn connect(&mut self) -> Result<Open, ClientError> {
        let stream = client::connect(&self.url, self.tls.clone()).await?;
        self.connections += 1;
        if stream.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
            self.resumed += 1;
        }
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| client::unreachable(&self.url, format!("HTTP: {e}")))?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Open { sender, driver })
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.close();
    }
}

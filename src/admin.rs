//! The admin endpoint (`[admin] listen`): `GET /metrics` (Prometheus/OpenMetrics text),
//! `GET /healthz` (queue writable, listeners up) and `POST /reload` (the same as SIGHUP).
//!
//! HTTP/1.1 through hyper; meant for loopback or a management network. Web pages must not be able
//! to drive it: every request must name the endpoint itself in `Host` (no DNS rebinding) and
//! carry no `Origin` (no cross-origin requests), and `POST /reload` needs the bearer token of
//! `[admin] token_file` (without one it is refused). The GET endpoints change nothing.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::AdminToken;
use crate::queue::QueueStore;
use crate::telemetry::Telemetry;

/// Applies the configuration file again; `Ok` says what changed, `Err` why it was refused.
pub type ReloadFn = dyn Fn() -> Result<String, String> + Send + Sync;

/// The token `POST /reload` requires right now (a reload may change it); `None`: refused.
pub type TokenFn = dyn Fn() -> Option<AdminToken> + Send + Sync;

/// What the endpoint reads and does.
pub struct AdminState {
    /// `server.hostname`: `Host: <hostname>:<port>` is accepted besides the address itself.
    pub hostname: String,
    pub telemetry: Arc<Telemetry>,
    pub queue: Arc<dyn QueueStore>,
    pub reload: Arc<ReloadFn>,
    pub token: Arc<TokenFn>,
}

/// Serves until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let state = state.clone();
                    let Ok(local) = tcp.local_addr() else { continue };
                    connections.spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let state = state.clone();
                            async move {
                                Ok::<_, Infallible>(secured(&state, peer, local, req).await)
                            }
                        });
                        let conn = hyper::server::conn::http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(Duration::from_secs(10))
                            .serve_connection(TokioIo::new(tcp), service);
                        let _ = tokio::time::timeout(Duration::from_secs(60), conn).await;
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
        while connections.try_join_next().is_some() {}
    }
    connections.abort_all();
}

/// Refuses what a web page could have sent, then routes.
async fn secured(
    state: &AdminState,
    peer: std::net::SocketAddr,
    local: std::net::SocketAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if let Err(refusal) = check_request(req.headers(), req.uri(), local, &state.hostname) {
        tracing::warn!(client = %peer, method = %req.method(), path = req.uri().path(),
            reason = refusal.reason, "admin request refused");
        return with_security_headers(text(refusal.status, refusal.text(local, &state.hostname)));
    }
    with_security_headers(route(state, peer, req).await)
}

/// Why a request is refused before it is routed.
#[derive(Debug, PartialEq, Eq)]
struct Refusal {
    status: StatusCode,
    reason: &'static str,
}

impl Refusal {
    fn text(&self, local: std::net::SocketAddr, hostname: &str) -> String {
        if self.status == StatusCode::MISDIRECTED_REQUEST {
            let port = local.port();
            format!(
                "{}: use Host {local}, localhost:{port} or {hostname}:{port}\n",
                self.reason
            )
        } else {
            format!("{}\n", self.reason)
        }
    }
}

/// `Host` (exactly one, and the request target's authority if it has one) must name this
/// endpoint: 400 without one, 421 when it names another. A request a browser makes for a web
/// page (`Origin`, or `Sec-Fetch-Site` other than `none`) gets 403.
fn check_request(
    headers: &HeaderMap,
    uri: &hyper::Uri,
    local: std::net::SocketAddr,
    hostname: &str,
) -> Result<(), Refusal> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let (Some(host), None) = (hosts.next(), hosts.next()) else {
        return Err(Refusal {
            status: StatusCode::BAD_REQUEST,
            reason: "exactly one Host header is required",
        });
    };
    let names_us = |h: &str| host_allowed(h, local, hostname);
    let authority_ok = uri.authority().is_none_or(|a| names_us(a.as_str()));
    if !host.to_str().is_ok_and(names_us) || !authority_ok {
        return Err(Refusal {
            status: StatusCode::MISDIRECTED_REQUEST,
            reason: "the Host header does not name this endpoint",
        });
    }
    let from_page = headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() != b"none");
    if headers.contains_key(header::ORIGIN) || from_page {
        return Err(Refusal {
            status: StatusCode::FORBIDDEN,
            reason: "requests from web pages are refused (Origin header)",
        });
    }
    Ok(())
}

/// Whether `host` (a Host header value) names the endpoint on `local`: the address itself
/// (`127.0.0.1:9025`, `[::1]:9025`), `localhost` or `hostname`, with the endpoint's port (which
/// may be left out only when it is 80). Names compare without case.
fn host_allowed(host: &str, local: std::net::SocketAddr, hostname: &str) -> bool {
    let (name, port) = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((ip, "")) => (ip, None),
            Some((ip, port)) => match port.strip_prefix(':') {
                Some(port) => (ip, Some(port)),
                None => return false,
            },
            None => return false,
        },
        None => match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        },
    };
    let port_ok = match port {
        None => local.port() == 80,
        Some(p) => {
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse() == Ok(local.port())
        }
    };
    let bracketed = host.starts_with('[');
    let name_ok = match name.parse::<std::net::IpAddr>() {
        Ok(ip) => ip == local.ip().to_canonical() && bracketed == ip.is_ipv6(),
        Err(_) => {
            !bracketed
                && (name.eq_ignore_ascii_case("localhost") || name.eq_ignore_ascii_case(hostname))
        }
    };
    port_ok && name_ok
}

/// `nosniff` and `no-store` on every answer: nothing here is a script, and nothing is cached.
fn with_security_headers(mut response: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn route(
    state: &AdminState,
    peer: std::net::SocketAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => metrics(state).await,
        (&Method::GET, "/healthz") => health(state).await,
        (&Method::POST, "/reload") => match authorize(state, req.headers()) {
            Ok(()) => reload(state).await,
            Err(refused) => {
                tracing::warn!(client = %peer, "admin /reload refused: {}", refused.1);
                refused.into_response()
            }
        },
        (_, "/metrics" | "/healthz" | "/reload") => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "GET /metrics, GET /healthz, POST /reload\n".into(),
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

async fn metrics(state: &AdminState) -> Response<Full<Bytes>> {
    let queue = state.queue.clone();
    match tokio::task::spawn_blocking(move || queue.counts()).await {
        Ok(Ok(counts)) => {
            for (name, n) in counts {
                state.telemetry.metrics.set_queue(name, n);
            }
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot count the queue for /metrics"),
        Err(_) => {}
    }
    if let Some(n) = state.queue.directory_fsyncs() {
        state.telemetry.metrics.set_queue_fsyncs(n);
    }
    let body = state.telemetry.metrics.render();
    Response::builder()
        .header(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

async fn health(state: &AdminState) -> Response<Full<Bytes>> {
    let queue = state.queue.clone();
    let probe = tokio::task::spawn_blocking(move || {
        queue.probe_write()?;
        queue.counts()
    })
    .await;
    let (status, body) = match probe {
        Ok(Ok(counts)) => {
            let queue: serde_json::Map<String, serde_json::Value> = counts
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.into()))
                .collect();
            (
                StatusCode::OK,
                serde_json::json!({"status": "ok", "hostname": state.hostname, "queue": queue}),
            )
        }
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "failing", "hostname": state.hostname,
                "problem": format!("queue not writable: {e}")}),
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "failing", "hostname": state.hostname,
                "problem": format!("health check failed: {e}")}),
        ),
    };
    json(status, &body)
}

/// Why `POST /reload` was not authorized: the status and the text of the answer.
struct Unauthorized(StatusCode, &'static str);

impl Unauthorized {
    fn into_response(self) -> Response<Full<Bytes>> {
        let mut response = json(
            self.0,
            &serde_json::json!({"status": "unauthorized", "reason": self.1}),
        );
        let challenge = match self.0 {
            StatusCode::UNAUTHORIZED if self.1 == WRONG_TOKEN => {
                Some("Bearer realm=\"sealpost admin\", error=\"invalid_token\"")
            }
            StatusCode::UNAUTHORIZED => Some("Bearer realm=\"sealpost admin\""),
            _ => None,
        };
        if let Some(value) = challenge {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(value));
        }
        response
    }
}

const WRONG_TOKEN: &str = "the bearer token does not match [admin] token_file";

/// `POST /reload` needs `Authorization: Bearer <token>` with the token of `[admin] token_file`;
/// without a configured token file it is refused whatever the request says.
fn authorize(state: &AdminState, headers: &HeaderMap) -> Result<(), Unauthorized> {
    let Some(token) = (state.token)() else {
        return Err(Unauthorized(
            StatusCode::FORBIDDEN,
            "POST /reload is disabled: configure [admin] token_file (or send SIGHUP)",
        ));
    };
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let presented = match (values.next(), values.next()) {
        (Some(value), None) => bearer(value),
        _ => None,
    };
    let Some(presented) = presented else {
        return Err(Unauthorized(
            StatusCode::UNAUTHORIZED,
            "POST /reload needs Authorization: Bearer <the token of [admin] token_file>",
        ));
    };
    if token.matches(presented) {
        Ok(())
    } else {
        Err(Unauthorized(StatusCode::UNAUTHORIZED, WRONG_TOKEN))
    }
}

/// The credentials of `Bearer <token>` (the scheme in any case, RFC 9110 §11.1).
fn bearer(value: &HeaderValue) -> Option<&str> {
    let (scheme, token) = value.to_str().ok()?.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

async fn reload(state: &AdminState) -> Response<Full<Bytes>> {
    let reload = state.reload.clone();
    match tokio::task::spawn_blocking(move || reload()).await {
        Ok(Ok(summary)) => json(
            StatusCode::OK,
            &serde_json::json!({"status": "applied", "summary": summary}),
        ),
        Ok(Err(reason)) => json(
            StatusCode::UNPROCESSABLE_ENTITY,
            &serde_json::json!({"status": "refused", "reason": reason}),
        ),
        Err(e) => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &serde_json::json!({"status": "refused", "reason": format!("reload failed: {e}")}),
        ),
    }
}

fn json(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut text = body.to_string();
    text.push('\n');
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(text)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// A small HTTP/1.1 client for the CLI (`sealpost reload`, `sealpost demo`): sends one
/// request to the admin endpoint, with `token` as a bearer token if given, and returns the
/// status and body.
pub async fn request(
    addr: std::net::SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<(StatusCode, String)> {
    use http_body_util::BodyExt;
    let tcp = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow::anyhow!("{addr}: connection timed out"))?
        .map_err(|e| anyhow::anyhow!("{addr}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    let driver = tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, addr.to_string());
    if let Some(token) = token {
        let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| anyhow::anyhow!("the admin token is not printable ASCII"))?;
        value.set_sensitive(true);
        req = req.header(header::AUTHORIZATION, value);
    }
    let req = req.body(Full::new(Bytes::new()))?;
    let response = tokio::time::timeout(Duration::from_secs(60), sender.send_request(req))
        .await
        .map_err(|_| anyhow::anyhow!("{addr}: no answer within 60 s"))??;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    driver.abort();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTNAME: &str = "mx.contoso.test";

    fn allowed(host: &str, local: &str) -> bool {
        host_allowed(host, local.parse().unwrap(), HOSTNAME)
    }

    #[test]
    fn host_must_name_the_endpoint_itself() {
        for host in [
            "127.0.0.1:9025",
            "localhost:9025",
            "LocalHost:9025",
            "mx.contoso.test:9025",
            "MX.Contoso.Test:9025",
        ] {
            assert!(allowed(host, "127.0.0.1:9025"), "{host}");
        }
        assert!(allowed("[::1]:9025", "[::1]:9025"));
        assert!(
            allowed("localhost", "127.0.0.1:80"),
            "port 80 may be left out"
        );
        for host in [
            "evil.test:9025",
            "127.0.0.1",
            "127.0.0.1:9026",
            "127.0.0.2:9025",
            "localhost",
            "localhost:",
            "localhost:+9025",
            "localhost:09025x",
            "mx.contoso.test.evil.test:9025",
            "[127.0.0.1]:9025",
            "[::1]:9025",
            "::1:9025",
            "[::1]9025",
            "",
            ":9025",
        ] {
            assert!(!allowed(host, "127.0.0.1:9025"), "{host}");
        }
        assert!(!allowed("127.0.0.1:9025", "[::1]:9025"));
        // A dual-stack listener sees IPv4 clients on an IPv4-mapped address.
        assert!(allowed("127.0.0.1:9025", "[::ffff:127.0.0.1]:9025"));
        assert!(!allowed("[::1]", "[::1]:9025"));
    }

    fn check(headers: &[(&str, &str)], uri: &str) -> Result<(), StatusCode> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let uri: hyper::Uri = uri.parse().unwrap();
        check_request(&map, &uri, "127.0.0.1:9025".parse().unwrap(), HOSTNAME).map_err(|r| r.status)
    }

    #[test]
    fn requests_from_web_pages_and_other_hosts_are_refused() {
        let host = ("host", "127.0.0.1:9025");
        assert_eq!(check(&[host], "/metrics"), Ok(()));
        assert_eq!(
            check(&[host, ("sec-fetch-site", "none")], "/metrics"),
            Ok(())
        );
        assert_eq!(check(&[], "/metrics"), Err(StatusCode::BAD_REQUEST));
        assert_eq!(
            check(&[host, ("host", "127.0.0.1:9025")], "/metrics"),
            Err(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            check(&[("host", "evil.test:9025")], "/metrics"),
            Err(StatusCode::MISDIRECTED_REQUEST)
        );
        assert_eq!(
            check(&[host], "http://evil.test:9025/metrics"),
            Err(StatusCode::MISDIRECTED_REQUEST),
            "an absolute request target names the host too"
        );
        assert_eq!(check(&[host], "http://localhost:9025/metrics"), Ok(()));
        for page in [
            ("origin", "http://evil.test"),
            ("origin", "null"),
            ("sec-fetch-site", "cross-site"),
        ] {
            assert_eq!(
                check(&[host, page], "/reload"),
                Err(StatusCode::FORBIDDEN),
                "{page:?}"
            );
        }
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_needs_a_token() {
        let value = |v: &str| HeaderValue::from_str(v).unwrap();
        assert_eq!(bearer(&value("Bearer abc")), Some("abc"));
        assert_eq!(bearer(&value("bearer  abc")), Some("abc"));
        assert_eq!(bearer(&value("Basic abc")), None);
        assert_eq!(bearer(&value("Bearer ")), None);
        assert_eq!(bearer(&value("Bearerabc")), None);
    }
}

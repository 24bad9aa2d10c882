//! The admin endpoint (`[admin] listen`): `GET /metrics` (Prometheus/OpenMetrics text),
//! `GET /healthz` (queue writable, listeners up) and `POST /reload` (the same as SIGHUP).
//!
//! HTTP/1.1 through hyper; meant for loopback or a management network (there is no
//! authentication, and the configuration check warns when the address is not loopback).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::queue::Spool;
use crate::telemetry::Telemetry;

/// Applies the configuration file again; `Ok` says what changed, `Err` why it was refused.
pub type ReloadFn = dyn Fn() -> Result<String, String> + Send + Sync;

/// What the endpoint reads and does.
pub struct AdminState {
    pub hostname: String,
    pub telemetry: Arc<Telemetry>,
    pub spool: Arc<Spool>,
    pub reload: Arc<ReloadFn>,
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
                Ok((tcp, _peer)) => {
                    let state = state.clone();
                    connections.spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let state = state.clone();
                            async move { Ok::<_, Infallible>(route(&state, req).await) }
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

async fn route(state: &AdminState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => metrics(state).await,
        (&Method::GET, "/healthz") => health(state).await,
        (&Method::POST, "/reload") => reload(state).await,
        (_, "/metrics" | "/healthz" | "/reload") => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "GET /metrics, GET /healthz, POST /reload\n".into(),
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

async fn metrics(state: &AdminState) -> Response<Full<Bytes>> {
    let spool = state.spool.clone();
    match tokio::task::spawn_blocking(move || spool.counts()).await {
        Ok(Ok(counts)) => {
            for (name, n) in counts {
                state.telemetry.metrics.set_queue(name, n);
            }
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot count the queue for /metrics"),
        Err(_) => {}
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
    let spool = state.spool.clone();
    let probe = tokio::task::spawn_blocking(move || {
        spool.probe_write()?;
        spool.counts()
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
/// request to the admin endpoint and returns the status and body.
pub async fn request(
    addr: std::net::SocketAddr,
    method: Method,
    path: &str,
) -> anyhow::Result<(StatusCode, String)> {
    use http_body_util::BodyExt;
    let tcp = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow::anyhow!("{addr}: connection timed out"))?
        .map_err(|e| anyhow::anyhow!("{addr}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    let driver = tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .body(Full::new(Bytes::new()))?;
    let response = tokio::time::timeout(Duration::from_secs(60), sender.send_request(req))
        .await
        .map_err(|_| anyhow::anyhow!("{addr}: no answer within 60 s"))??;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    driver.abort();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

//! `[admin]` (the metrics, health and reload endpoint) and `[trace]` (the message trace log).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;

/// `[admin]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// e.g. "127.0.0.1:9025"
    pub listen: Option<String>,
}

/// `[trace]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrace {
    /// Default true.
    pub enabled: Option<bool>,
    /// Default `<data_dir>/trace.jsonl`; relative paths are relative to the config file.
    pub path: Option<String>,
}

/// The validated operations settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Operations {
    /// Where `/metrics`, `/healthz` and `/reload` are served; `None` = no admin listener.
    pub admin_listen: Option<SocketAddr>,
    /// The JSON-lines message trace log; `None` = no trace.
    pub trace_log: Option<PathBuf>,
}

pub(super) fn validate(
    file: &Path,
    config_dir: &Path,
    data_dir: &Path,
    admin: Option<&RawAdmin>,
    trace: Option<&RawTrace>,
) -> Result<Operations, ConfigError> {
    let err = |key: &str, problem: String| ConfigError {
        file: file.to_path_buf(),
        key: key.to_string(),
        problem,
    };
    let admin_listen = match admin.and_then(|a| a.listen.as_deref()) {
        None => None,
        Some(text) => {
            let addr = text.trim().parse::<SocketAddr>().map_err(|_| {
                err(
                    "admin.listen",
                    format!("not an address:port: {text:?} (e.g. \"127.0.0.1:9025\")"),
                )
            })?;
            if !addr.ip().is_loopback() {
                tracing::warn!(%addr, "admin.listen is not a loopback address: /metrics and /reload are reachable from the network without authentication");
            }
            Some(addr)
        }
    };
    let trace = trace.unwrap_or(&RawTrace {
        enabled: None,
        path: None,
    });
    let trace_log = match (trace.enabled.unwrap_or(true), trace.path.as_deref()) {
        (false, _) => None,
        (true, None) => Some(data_dir.join("trace.jsonl")),
        (true, Some(p)) if p.trim().is_empty() => {
            return Err(err("trace.path", "empty path".into()))
        }
        (true, Some(p)) => {
            let p = Path::new(p.trim());
            Some(if p.is_absolute() {
                p.to_path_buf()
            } else {
                config_dir.join(p)
            })
        }
    };
    Ok(Operations {
        admin_listen,
        trace_log,
    })
}

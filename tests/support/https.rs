//! HTTPS requests from Python's `ssl` module (`https_client.py`) to a service on loopback that
//! presents the fixture certificate of mx.contoso.test.

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn pki() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pki")
}

/// What came back: the status line, the JSON body (null when there is none) and the TLS version.
pub struct Answer {
    pub status: String,
    pub body: serde_json::Value,
    pub version: String,
}

/// One request; `identity` names a fixture S/MIME certificate presented as the client certificate.
pub fn request(
    port: u16,
    identity: Option<&str>,
    method: &str,
    path: &str,
    authorization: &str,
    body: &str,
) -> Answer {
    let file = |ext: &str| match identity {
        Some(a) => pki().join(format!("smime/{a}.{ext}")).display().to_string(),
        None => String::new(),
    };
    let out = Command::new("python3")
        .arg("-c")
        .arg(include_str!("https_client.py"))
        .arg(port.to_string())
        .arg(pki().join("ca.crt"))
        .arg(file("crt"))
        .arg(file("key"))
        .args([method, path, authorization, body])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    Answer {
        status: lines.next().unwrap_or_default().to_string(),
        body: serde_json::from_str(lines.next().unwrap_or("null")).unwrap_or_default(),
        version: lines.next().unwrap_or_default().to_string(),
    }
}

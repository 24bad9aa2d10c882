//! The admin endpoint from outside: a minimal HTTP/1.1 client over std sockets, a reader of the
//! OpenMetrics text, and signals and log waits for `sealpost serve` child processes.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One HTTP answer.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    /// Header lines as sent, names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpAnswer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `method path` (no body) with `Connection: close` and reads the whole answer.
pub fn http(addr: SocketAddr, method: &str, path: &str) -> HttpAnswer {
    http_with(addr, method, path, &[], "")
}

/// Like [`http`], with extra header lines (a `Host` among them replaces the default one,
/// `host:port` of `addr`) and a body.
pub fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpAnswer {
    let mut tcp = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    tcp.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    let mut request = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("Host: {addr}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    tcp.write_all(request.as_bytes()).expect("send request");
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).expect("read answer");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split(' ');
    assert_eq!(
        parts.next(),
        Some("HTTP/1.1"),
        "status line {status_line:?}"
    );
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    HttpAnswer {
        status,
        headers,
        body: String::from_utf8(body).expect("UTF-8 body"),
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .expect("chunk size");
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// The sum of the samples of metric `name` (the full sample name, e.g.
/// `sealpost_messages_received_total`) whose labels include all of `labels`; `None` when no sample
/// matches. Panics on a sample line that does not parse.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut sum = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("sample line {line:?}"));
        let (sample, label_text) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}').expect("closing brace")),
            None => (series, ""),
        };
        if sample != name {
            continue;
        }
        let have: Vec<(&str, &str)> = label_text
            .split(',')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').expect("label=value");
                (k, v.trim_matches('"'))
            })
            .collect();
        if labels.iter().all(|l| have.contains(l)) {
            let v: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("value of {line:?}"));
            *sum.get_or_insert(0.0) += v;
        }
    }
    sum
}

/// `GET /metrics` until `check` accepts the text (the counters of work done in the background
/// move a moment after the test sees its effect); panics with the last text after `timeout`.
pub fn metrics_until(admin: SocketAddr, timeout: Duration, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let answer = http(admin, "GET", "/metrics");
        assert_eq!(answer.status, 200, "{}", answer.body);
        if check(&answer.body) {
            return answer.body;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never matched:\n{}",
            answer.body
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Writes an admin token file (mode 0600) and returns its path.
pub fn write_token(path: &Path, token: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("{token}\n")).expect("write token file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
    path.to_path_buf()
}

/// Sends SIGHUP to a process.
pub fn hup(pid: u32) {
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -HUP {pid}");
}

/// The log file `ServeProcess::start` writes the server's standard error to.
pub fn serve_log(config: &Path) -> PathBuf {
    config.with_extension(format!("{}.log", std::process::id()))
}

/// Waits until `log` holds `needle` at least `count` times; returns the log.
pub fn wait_log(log: &Path, needle: &str, count: usize, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.matches(needle).count() >= count {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "log lacks {count}× {needle:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until something accepts connections on `addr` (`ServeProcess::start` waits for the SMTP
/// port only; the admin endpoint is bound a moment later).
pub fn wait_listening(addr: SocketAddr, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

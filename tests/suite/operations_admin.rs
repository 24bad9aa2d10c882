//! The admin endpoint cannot be driven by a web page, over real sockets against the server that
//! `app::start` runs: `POST /reload` needs the bearer token of `[admin] token_file` (401 without
//! or with a wrong one, 403 when no token file is configured), any request with an `Origin`
//! header is refused (a cross-origin "simple" POST), and a `Host` that does not name the endpoint
//! (DNS rebinding) is refused for the GET endpoints too.

use crate::support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use support::admin::{http, http_with, metric, write_token, HttpAnswer};
use support::domains::{free_port, load, send, DomainSpec};

const TOKEN: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0-admin-test";
const MESSAGE: &[u8] = b"From: <alice@contoso.test>\r\nSubject: admin\r\n\r\nhello\r\n";

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// One request from a blocking thread (the server runs on the test's runtime).
async fn call(
    admin: SocketAddr,
    method: &'static str,
    path: &'static str,
    headers: &[(&str, &str)],
    body: &'static str,
) -> HttpAnswer {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        http_with(admin, method, path, &headers, body)
    })
    .await
    .unwrap()
}

/// `sealpost_config_reloads_total` with `result`, 0 when absent.
async fn reloads(admin: SocketAddr, result: &'static str) -> f64 {
    let text = tokio::task::spawn_blocking(move || http(admin, "GET", "/metrics").body)
        .await
        .unwrap();
    metric(
        &text,
        "sealpost_config_reloads_total",
        &[("result", result)],
    )
    .unwrap_or(0.0)
}

/// The RCPT reply code for dave@contoso.test: 550 until a reload adds the mailbox.
async fn dave(addr: SocketAddr) -> u16 {
    let (replies, _) = send(addr, "alice@contoso.test", &["dave@contoso.test"], MESSAGE).await;
    match &replies[0] {
        Ok(r) => r.code,
        Err(r) => r.code,
    }
}

/// Writes `contoso.toml` with an admin endpoint (and the token file, if given); returns its spec.
fn contoso(dir: &Path, port: u16, admin: SocketAddr, token_file: Option<&Path>) -> DomainSpec {
    let mut admin_toml = format!("[admin]\nlisten = \"{admin}\"\n");
    if let Some(file) = token_file {
        admin_toml.push_str(&format!("token_file = \"{}\"\n", file.display()));
    }
    let spec = DomainSpec::new("contoso", &["alice@contoso.test"], port).toml(&admin_toml);
    spec.write(dir);
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_needs_the_token_and_web_pages_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (port, admin_port) = (free_port(), free_port());
    let admin = loopback(admin_port);
    let token_file = write_token(&dir.path().join("admin.token"), TOKEN);
    let mut spec = contoso(dir.path(), port, admin, Some(&token_file));
    let server = sealpost::app::start(load(&dir.path().join("contoso.toml")))
        .await
        .unwrap();
    let addr = server.local_addrs()[0];
    // The next configuration knows dave; only an applied reload makes him a recipient.
    spec.mailboxes.push("dave@contoso.test");
    spec.write(dir.path());
    let bearer = format!("Bearer {TOKEN}");

    // No token: 401 with a Bearer challenge, and nothing reloaded.
    let answer = call(admin, "POST", "/reload", &[], "").await;
    assert_eq!(answer.status, 401, "{}", answer.body);
    assert_eq!(
        answer.header("www-authenticate"),
        Some("Bearer realm=\"sealpost admin\"")
    );
    assert!(answer.body.contains("token_file"), "{}", answer.body);
    // Wrong tokens, or the token under another scheme: 401, invalid_token when one was given.
    for auth in [
        "Bearer wrong-token",
        &format!("Bearer {TOKEN}x"),
        &format!("Basic {TOKEN}"),
    ] {
        let answer = call(admin, "POST", "/reload", &[("Authorization", auth)], "").await;
        assert_eq!(answer.status, 401, "{auth}: {}", answer.body);
        assert!(
            answer
                .header("www-authenticate")
                .is_some_and(|v| v.starts_with("Bearer")),
            "{auth}: {:?}",
            answer.headers
        );
        assert!(!answer.body.contains(TOKEN), "{}", answer.body);
    }
    // A cross-origin "simple" POST, as a web page on this host can send it: 403. With the token
    // too (which a page could only send after a CORS preflight): still 403.
    let simple = [
        ("Origin", "http://evil.test"),
        ("Content-Type", "text/plain"),
    ];
    let answer = call(admin, "POST", "/reload", &simple, "reload").await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    let with_token = [simple[0], simple[1], ("Authorization", bearer.as_str())];
    let answer = call(admin, "POST", "/reload", &with_token, "reload").await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert!(answer.body.contains("Origin"), "{}", answer.body);
    // DNS rebinding: evil.test resolving to 127.0.0.1 sends its own name as Host.
    let rebound = [("Host", format!("evil.test:{admin_port}"))];
    let rebound = [(rebound[0].0, rebound[0].1.as_str())];
    for path in ["/metrics", "/healthz"] {
        let answer = call(admin, "GET", path, &rebound, "").await;
        assert_eq!(answer.status, 421, "{path}: {}", answer.body);
        assert!(
            !answer.body.contains("sealpost_"),
            "{path}: {}",
            answer.body
        );
        assert!(!answer.body.contains("hostname"), "{path}: {}", answer.body);
    }
    let with_token = [rebound[0], ("Authorization", bearer.as_str())];
    let answer = call(admin, "POST", "/reload", &with_token, "").await;
    assert_eq!(answer.status, 421, "{}", answer.body);

    assert_eq!(reloads(admin, "applied").await, 0.0);
    assert_eq!(reloads(admin, "refused").await, 0.0);
    assert_eq!(dave(addr).await, 550, "no reload was applied");

    // The endpoint's own names work.
    for host in [
        admin.to_string(),
        format!("localhost:{admin_port}"),
        format!("MX.contoso.test:{admin_port}"),
    ] {
        let answer = call(admin, "GET", "/healthz", &[("Host", &host)], "").await;
        assert_eq!(answer.status, 200, "{host}: {}", answer.body);
        assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
    }
    let answer = call(admin, "GET", "/metrics", &[], "").await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    // The token, in a header of its own: applied.
    let auth = [("Authorization", bearer.as_str())];
    let answer = call(admin, "POST", "/reload", &auth, "").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body.contains("\"applied\""), "{}", answer.body);
    assert_eq!(reloads(admin, "applied").await, 1.0);
    assert_eq!(dave(addr).await, 250, "the reload was applied");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_file_reload_is_refused_whatever_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (port, admin_port) = (free_port(), free_port());
    let admin = loopback(admin_port);
    let mut spec = contoso(dir.path(), port, admin, None);
    let server = sealpost::app::start(load(&dir.path().join("contoso.toml")))
        .await
        .unwrap();
    spec.mailboxes.push("dave@contoso.test");
    spec.write(dir.path());
    for auth in [None, Some("Bearer "), Some("Bearer anything")] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        let answer = call(admin, "POST", "/reload", &headers, "").await;
        assert_eq!(answer.status, 403, "{auth:?}: {}", answer.body);
        assert!(
            answer.body.contains("configure [admin] token_file"),
            "{}",
            answer.body
        );
    }
    assert_eq!(reloads(admin, "applied").await, 0.0);
    assert_eq!(dave(server.local_addrs()[0]).await, 550);
    // SIGHUP's equivalent in-process still works.
    server.reload().expect("reload");
    assert_eq!(dave(server.local_addrs()[0]).await, 250);
    tokio::time::timeout(Duration::from_secs(30), server.shutdown())
        .await
        .expect("shutdown");
}

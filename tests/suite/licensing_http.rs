//! The licensing service's HTTPS transport over real TLS on loopback, driven by Python's `ssl`
//! module: a reader's S/MIME certificate presented as a TLS client certificate reaches the
//! handler and proves the principal; requests over the size limit, bad credentials headers and
//! clients without a certificate get JSON refusals.

use crate::support::https;

use std::sync::Arc;

use rustls_pki_types::UnixTime;
use sealpost::licensing::http::{
    serve, tls_config, Handler, ServiceLimits, ServiceRequest, ServiceResponse,
};
use sealpost::licensing::identity::{DomainTrust, ReaderTrust};
use sealpost::mail::DomainSet;
use sealpost::net::ShutdownPhase;
use sealpost::tls::TlsMinVersion;

use https::pki;

/// A POST to /v1/echo with `body_len` bytes.
fn ask(
    port: u16,
    identity: Option<&str>,
    body_len: usize,
    auth: &str,
) -> (String, serde_json::Value, String) {
    let a = https::request(
        port,
        identity,
        "POST",
        "/v1/echo",
        auth,
        &"x".repeat(body_len),
    );
    (a.status, a.body, a.version)
}

/// Says who asked (or why nobody is proven), with what.
struct Echo {
    trust: ReaderTrust,
}

impl Handler for Echo {
    fn handle(&self, r: ServiceRequest) -> ServiceResponse {
        let principal = match self.trust.principal(&r.client_chain, UnixTime::now()) {
            Ok(p) => p,
            Err(e) => format!("refused: {e}"),
        };
        ServiceResponse::ok(serde_json::json!({
            "principal": principal,
            "method": r.method.as_str(),
            "path": r.path,
            "body": r.body.len(),
            "user": r.credentials.map(|c| c.username),
        }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_prove_who_they_are_over_real_https() {
    let key = sealpost::tls::load_certified_key(
        &pki().join("mx.contoso.test.crt"),
        &pki().join("mx.contoso.test.key"),
    )
    .unwrap();
    let tls = tls_config(&key, TlsMinVersion::Tls12).unwrap();
    let trust = ReaderTrust::new(vec![DomainTrust {
        domains: DomainSet::new(["fabrikam.test"]),
        anchors: sealpost::tls::load_trust_anchors(&pki().join("ca.crt")).unwrap(),
    }]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let limits = ServiceLimits {
        max_request: 4096,
        ..ServiceLimits::default()
    };
    let (stop, stopped) = tokio::sync::watch::channel(ShutdownPhase::Running);
    let server = tokio::spawn(serve(
        listener,
        tls,
        Arc::new(Echo { trust }),
        limits,
        stopped,
    ));

    let run = move || {
        // bob's S/MIME certificate as the TLS client certificate: the handler proves him.
        let (status, body, version) = ask(port, Some("bob@fabrikam.test"), 100, "");
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(body["principal"], "bob@fabrikam.test");
        assert_eq!(body["path"], "/v1/echo");
        assert_eq!(body["body"], 100);
        assert!(version == "TLSv1.3" || version == "TLSv1.2", "{version}");
        // alice's certificate chains to the same CA, which is trusted for fabrikam.test only.
        let (_, body, _) = ask(port, Some("alice@contoso.test"), 0, "");
        let p = body["principal"].as_str().unwrap();
        assert!(
            p.starts_with("refused: no certificate authority is trusted"),
            "{p}"
        );
        // No certificate: the connection is served, and nobody is proven.
        let (status, body, _) = ask(port, None, 0, "Basic YWxpY2VAY29udG9zby50ZXN0OnB3");
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(
            body["principal"],
            "refused: no client certificate presented"
        );
        assert_eq!(body["user"], "alice@contoso.test");
        // Over the size limit: refused before the handler, with a JSON reason.
        let (status, body, _) = ask(port, Some("bob@fabrikam.test"), 5000, "");
        assert_eq!(status, "HTTP/1.1 413 Payload Too Large");
        assert_eq!(body["error"], "request-too-large");
        assert_eq!(body["reason"], "requests are limited to 4096 bytes");
        // A malformed Authorization header.
        let (status, body, _) = ask(port, None, 0, "Bearer token");
        assert_eq!(status, "HTTP/1.1 400 Bad Request");
        assert_eq!(body["error"], "bad-request");
    };
    tokio::task::spawn_blocking(run).await.unwrap();

    // Plaintext HTTP gets no answer: the port speaks TLS only.
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ =
        tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    assert!(
        !buf.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&buf)
    );

    stop.send(ShutdownPhase::Draining).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), server)
        .await
        .expect("the service stops after the shutdown starts")
        .unwrap();
}

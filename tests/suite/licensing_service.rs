//! The licensing service end to end over real HTTPS on loopback: alice's message protected for
//! bob; bob, proving himself with his own S/MIME certificate (no tenant key anywhere on his
//! side), gets a use license and opens the message with it and his own private key. dave (not
//! a recipient, e.g. holding a forwarded copy) is refused, a client without a certificate is
//! refused, and so are a revoked and an expired message. Requests come from Python's `ssl`.

use crate::support::https;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use sealpost::crypto::keys::DecryptKey;
use sealpost::crypto::rms::{
    extract_container, license_for, parse_container, protect, unprotect_with_use_license,
    TenantKeys, UseLicense,
};
use sealpost::licensing::access::MemoryAccessLog;
use sealpost::licensing::http::{serve, tls_config, ServiceLimits};
use sealpost::licensing::identity::{DomainTrust, ReaderTrust};
use sealpost::licensing::revocations::RevocationStore;
use sealpost::licensing::service::{LicensingService, USE_LICENSE_PATH};
use sealpost::mail::DomainSet;
use sealpost::net::ShutdownPhase;
use sealpost::rules::RmsProtect;
use sealpost::tls::TlsMinVersion;

use https::pki;

const URL: &str = "https://127.0.0.1:8443";
const MESSAGE: &[u8] = b"From: alice@contoso.test\r\nTo: bob@fabrikam.test\r\nMessage-ID: <m1@contoso.test>\r\nSubject: plans\r\n\r\nfor bob only\r\n";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn tenant() -> TenantKeys {
    TenantKeys::load_dir(&fixtures().join("keys/tenant")).unwrap()
}

/// alice's message protected for bob, issued at `issued`, expiring `expires_after` later.
fn protected(message: &[u8], issued: SystemTime, expires_after: Option<Duration>) -> Vec<u8> {
    let action = RmsProtect {
        template: "do-not-forward".into(),
        rights: Default::default(),
        expires_after,
    };
    let request = license_for(
        &action,
        "alice@contoso.test",
        &["bob@fabrikam.test".into()],
        Some("<m1@contoso.test>"),
        issued,
    )
    .with_licensing_url(Some(URL.into()));
    protect(message, tenant().active().unwrap(), request).unwrap()
}

/// The JSON body a reader sends: the publishing license and its signature from the message.
fn ask_body(message: &[u8]) -> String {
    let container = extract_container(message).unwrap();
    let framed = parse_container(&container).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    serde_json::json!({
        "license": b64.encode(framed.license),
        "signature": b64.encode(framed.signature),
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bob_opens_with_a_use_license_and_nobody_else_does() {
    let key = sealpost::tls::load_certified_key(
        &pki().join("mx.contoso.test.crt"),
        &pki().join("mx.contoso.test.key"),
    )
    .unwrap();
    let trust = ReaderTrust::new(vec![DomainTrust {
        domains: DomainSet::new(["fabrikam.test", "contoso.test"]),
        anchors: sealpost::tls::load_trust_anchors(&pki().join("ca.crt")).unwrap(),
    }]);
    let revocations = Arc::new(RevocationStore::in_memory());
    let access = Arc::new(MemoryAccessLog::default());
    let service = LicensingService {
        trust,
        tenant_keys: tenant(),
        url: URL.into(),
        validity: Duration::from_secs(30 * 86400),
        revocations: revocations.clone(),
        access: access.clone(),
        passwords: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let tls = tls_config(&key, TlsMinVersion::Tls12).unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(ShutdownPhase::Running);
    let server = tokio::spawn(serve(
        listener,
        tls,
        Arc::new(service),
        ServiceLimits::default(),
        stopped,
    ));

    let now = SystemTime::now();
    let message = protected(MESSAGE, now, None);
    let expired = protected(
        MESSAGE,
        now - Duration::from_secs(3 * 86400),
        Some(Duration::from_secs(86400)),
    );
    let run = move || {
        let post = |who: Option<&str>, body: &str| {
            https::request(port, who, "POST", USE_LICENSE_PATH, "", body)
        };
        // bob: a use license, and with it and his own key the message opens.
        let a = post(Some("bob@fabrikam.test"), &ask_body(&message));
        assert_eq!(a.status, "HTTP/1.1 200 OK", "{}", a.body);
        assert_eq!(a.body["principal"], "bob@fabrikam.test");
        assert!(
            a.version == "TLSv1.3" || a.version == "TLSv1.2",
            "{}",
            a.version
        );
        assert!(
            a.body["rights"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r == "VIEW"),
            "{}",
            a.body
        );
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(a.body["use_license"].as_str().unwrap())
            .unwrap();
        let use_license = UseLicense::decode(&bytes).unwrap();
        let bob = DecryptKey::from_pem(&pki().join("smime/bob@fabrikam.test.key"), None).unwrap();
        let tenant_public = tenant().active().unwrap().public();
        // The service names the key it signed with: the one the message names.
        let served = sealpost::crypto::rms::TenantPublicKey::from_pem(
            a.body["tenant_key"].as_str().unwrap(),
        )
        .unwrap();
        assert_eq!(served.id(), tenant_public.id());
        let (_, plain) = unprotect_with_use_license(
            &message,
            &use_license,
            &bob,
            &tenant_public,
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(plain, MESSAGE);
        // Another reader's key cannot open bob's use license.
        let dave_key =
            DecryptKey::from_pem(&pki().join("smime/dave@fabrikam.test.key"), None).unwrap();
        assert!(unprotect_with_use_license(
            &message,
            &use_license,
            &dave_key,
            &tenant_public,
            SystemTime::now()
        )
        .is_err());

        // dave, with the same message (a forwarded copy): no rights.
        let a = post(Some("dave@fabrikam.test"), &ask_body(&message));
        assert_eq!(a.status, "HTTP/1.1 403 Forbidden");
        assert_eq!(a.body["error"], "no-rights");
        assert_eq!(
            a.body["reason"],
            "dave@fabrikam.test has no rights on this message"
        );
        assert!(a.body.get("use_license").is_none());

        // Nobody proven: refused before any decision.
        let a = post(None, &ask_body(&message));
        assert_eq!(a.status, "HTTP/1.1 401 Unauthorized");
        assert_eq!(a.body["error"], "unauthenticated");

        // Expired protection.
        let a = post(Some("bob@fabrikam.test"), &ask_body(&expired));
        assert_eq!(a.status, "HTTP/1.1 403 Forbidden");
        assert_eq!(a.body["error"], "expired");
        assert!(
            a.body["reason"]
                .as_str()
                .unwrap()
                .starts_with("expired on "),
            "{}",
            a.body
        );

        // A tampered publishing license, malformed bodies, wrong paths and methods.
        let mut body: serde_json::Value = serde_json::from_str(&ask_body(&message)).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut license = b64.decode(body["license"].as_str().unwrap()).unwrap();
        let last = license.len() - 1;
        license[last] ^= 1;
        body["license"] = b64.encode(&license).into();
        let a = post(Some("bob@fabrikam.test"), &body.to_string());
        assert_eq!(a.status, "HTTP/1.1 400 Bad Request");
        assert_eq!(a.body["error"], "bad-license");
        let a = post(Some("bob@fabrikam.test"), "{\"license\": 1}");
        assert_eq!(a.body["error"], "bad-request");
        let a = https::request(
            port,
            Some("bob@fabrikam.test"),
            "GET",
            USE_LICENSE_PATH,
            "",
            "",
        );
        assert_eq!(a.status, "HTTP/1.1 405 Method Not Allowed");
        let a = https::request(
            port,
            Some("bob@fabrikam.test"),
            "POST",
            "/v1/other",
            "",
            "{}",
        );
        assert_eq!(a.status, "HTTP/1.1 404 Not Found");
        message
    };
    let message = tokio::task::spawn_blocking(run).await.unwrap();

    // Revoked: the next request is refused, without a restart.
    revocations
        .revoke(
            "<m1@contoso.test>",
            SystemTime::now() - Duration::from_secs(1),
        )
        .unwrap();
    let a = tokio::task::spawn_blocking(move || {
        https::request(
            port,
            Some("bob@fabrikam.test"),
            "POST",
            USE_LICENSE_PATH,
            "",
            &ask_body(&message),
        )
    })
    .await
    .unwrap();
    assert_eq!(a.status, "HTTP/1.1 403 Forbidden");
    assert_eq!(a.body["error"], "revoked");
    assert!(
        a.body["reason"]
            .as_str()
            .unwrap()
            .starts_with("revoked on "),
        "{}",
        a.body
    );

    // Every request that reached a decision is in the access log, the Message-ID hashed.
    let log = access.0.lock().unwrap().clone();
    let m1 = sealpost::licensing::access::message_hash("<m1@contoso.test>");
    let seen: Vec<(&str, &str, &str)> = log
        .iter()
        .map(|a| (a.outcome.as_str(), a.code.as_str(), a.principal.as_str()))
        .collect();
    assert_eq!(
        &seen[..4],
        [
            ("granted", "", "bob@fabrikam.test"),
            ("refused", "no-rights", "dave@fabrikam.test"),
            ("refused", "unauthenticated", ""),
            ("refused", "expired", "bob@fabrikam.test"),
        ]
    );
    assert!(log[..4].iter().all(|a| a.message == m1), "{log:?}");
    assert!(log[0].client.starts_with("127.0.0.1:"));
    assert_eq!(log[0].detail, "VIEW,REPLY,REPLYALL");
    let last = log.last().unwrap();
    assert_eq!(
        (last.code.as_str(), last.message.as_str()),
        ("revoked", m1.as_str())
    );
    assert!(!log.iter().any(|a| a.detail.contains("for bob only")));

    stop.send(ShutdownPhase::Draining).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap();
}

//! The tenant's own users prove themselves to the licensing service with their `[[user]]` name
//! and password (HTTP Basic, over TLS only) and send their own RSA public key, to which the
//! content key is wrapped. Over real HTTPS on loopback with Python's `ssl` as the client: carol
//! of contoso.test opens alice's message with a password and her own key; a wrong password, an
//! unknown user, a user outside the tenant's domains, a certificate and a password at once, a
//! password without a key and a certificate with a key are each refused with their reason; and a
//! service that takes no passwords says so. Every request is in the access log, no password is.

use crate::support;
use crate::support::https;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use sealpost::auth::Users;
use sealpost::crypto::keys::DecryptKey;
use sealpost::crypto::rms::{extract_container, unprotect_with_use_license, UseLicense};
use sealpost::licensing::access::MemoryAccessLog;
use sealpost::licensing::http::{serve, tls_config, ServiceLimits};
use sealpost::licensing::identity::{DomainTrust, ReaderTrust};
use sealpost::licensing::revocations::RevocationStore;
use sealpost::licensing::service::{LicensingService, PasswordReaders, USE_LICENSE_PATH};
use sealpost::mail::DomainSet;
use sealpost::net::ShutdownPhase;
use sealpost::tls::TlsMinVersion;
use x509_cert::der::{Decode, Encode};

use https::pki;
use support::rms::{protected, request_body, tenant};

const URL: &str = "https://127.0.0.1:8443";
const MESSAGE: &[u8] = b"From: alice@contoso.test\r\nTo: carol@contoso.test\r\nMessage-ID: <pw@contoso.test>\r\nSubject: plans\r\n\r\nfor carol only\r\n";
const CAROL_PASSWORD: &str = "correct horse battery staple";

/// The PEM public key of a fixture reader (what `openssl pkey -pubout` writes).
fn public_key_pem(who: &str) -> String {
    let pem = std::fs::read(pki().join(format!("smime/{who}.crt"))).unwrap();
    let (_, der) = x509_cert::der::pem::decode_vec(&pem).unwrap();
    let cert = x509_cert::Certificate::from_der(&der).unwrap();
    let spki = cert
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .unwrap();
    x509_cert::der::pem::encode_string("PUBLIC KEY", x509_cert::der::pem::LineEnding::LF, &spki)
        .unwrap()
}

fn basic(user: &str, password: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    format!("Basic {}", b64.encode(format!("{user}:{password}")))
}

/// A service with bob's CA trusted for fabrikam.test and, if `passwords`, contoso.test's users.
async fn start(
    passwords: bool,
) -> (
    u16,
    Arc<MemoryAccessLog>,
    tokio::sync::watch::Sender<ShutdownPhase>,
) {
    let key = sealpost::tls::load_certified_key(
        &pki().join("mx.contoso.test.crt"),
        &pki().join("mx.contoso.test.key"),
    )
    .unwrap();
    let mut hashes = BTreeMap::new();
    let hash = |p: &str| sealpost::auth::hash_password(p).unwrap();
    hashes.insert("carol@contoso.test".to_string(), hash(CAROL_PASSWORD));
    hashes.insert("dave@fabrikam.test".to_string(), hash("dave's"));
    hashes.insert("relay".to_string(), hash("relay's"));
    let access = Arc::new(MemoryAccessLog::default());
    let service = LicensingService {
        trust: ReaderTrust::new(vec![DomainTrust {
            domains: DomainSet::new(["fabrikam.test"]),
            anchors: sealpost::tls::load_trust_anchors(&pki().join("ca.crt")).unwrap(),
        }]),
        tenant_keys: tenant(),
        url: URL.into(),
        validity: Duration::from_secs(30 * 86400),
        revocations: Arc::new(RevocationStore::in_memory()),
        access: access.clone(),
        passwords: passwords.then(|| PasswordReaders {
            users: Users::new(hashes),
            domains: DomainSet::new(["contoso.test"]),
        }),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::watch::channel(ShutdownPhase::Running);
    tokio::spawn(serve(
        listener,
        tls_config(&key, TlsMinVersion::Tls12).unwrap(),
        Arc::new(service),
        ServiceLimits::default(),
        stopped,
    ));
    (port, access, stop)
}

fn message() -> Vec<u8> {
    let recipients = ["carol@contoso.test", "bob@fabrikam.test"];
    protected(MESSAGE, &recipients, "<pw@contoso.test>", URL)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carol_opens_with_her_password_and_her_own_key() {
    let (port, access, stop) = start(true).await;
    let message = message();
    let carol_key = public_key_pem("carol@contoso.test");
    let answers = tokio::task::spawn_blocking({
        let message = message.clone();
        move || {
            let post = |who: Option<&str>, auth: &str, key: Option<&str>| {
                let body = request_body(&message, key);
                https::request(port, who, "POST", USE_LICENSE_PATH, auth, &body)
            };
            let carol = basic("Carol@Contoso.test", CAROL_PASSWORD);
            vec![
                post(None, &carol, Some(&carol_key)),
                post(
                    None,
                    &basic("carol@contoso.test", "not-carols-password"),
                    Some(&carol_key),
                ),
                post(None, &basic("nobody@contoso.test", "x"), Some(&carol_key)),
                post(
                    None,
                    &basic("dave@fabrikam.test", "dave's"),
                    Some(&carol_key),
                ),
                post(None, &basic("relay", "relay's"), Some(&carol_key)),
                post(Some("bob@fabrikam.test"), &carol, Some(&carol_key)),
                post(None, &carol, None),
                post(Some("bob@fabrikam.test"), "", Some(&carol_key)),
                post(
                    None,
                    &carol,
                    Some("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"),
                ),
            ]
        }
    })
    .await
    .unwrap();
    let _ = stop.send(ShutdownPhase::Draining);

    let ok = &answers[0];
    assert_eq!(ok.status, "HTTP/1.1 200 OK", "{}", ok.body);
    assert_eq!(ok.body["principal"], "carol@contoso.test");
    assert!(ok.version.starts_with("TLSv1."), "{}", ok.version);
    let b64 = base64::engine::general_purpose::STANDARD;
    let bytes = b64
        .decode(ok.body["use_license"].as_str().unwrap())
        .unwrap();
    let use_license = UseLicense::decode(&bytes).unwrap();
    use_license.verify_with(&tenant()).unwrap();
    let carol = DecryptKey::from_pem(&pki().join("smime/carol@contoso.test.key"), None).unwrap();
    let public = tenant().active().unwrap().public();
    let container = extract_container(&message).unwrap();
    let (_, original) =
        unprotect_with_use_license(&container, &use_license, &carol, &public, SystemTime::now())
            .unwrap();
    assert_eq!(original, MESSAGE);

    let expect = |i: usize, status: &str, code: &str, reason: &str| {
        let a = &answers[i];
        assert_eq!(a.status, status, "request {i}: {}", a.body);
        assert_eq!(a.body["error"], code, "request {i}: {}", a.body);
        let said = a.body["reason"].as_str().unwrap();
        assert!(said.contains(reason), "request {i}: {said}");
        assert!(a.body.get("use_license").is_none());
    };
    let unauthorized = "HTTP/1.1 401 Unauthorized";
    let bad = "HTTP/1.1 400 Bad Request";
    // A wrong password and an unknown name read the same: names are not disclosed.
    expect(
        1,
        unauthorized,
        "unauthenticated",
        "wrong user name or password",
    );
    expect(
        2,
        unauthorized,
        "unauthenticated",
        "wrong user name or password",
    );
    expect(
        3,
        unauthorized,
        "unauthenticated",
        "dave@fabrikam.test is not an address of this tenant",
    );
    expect(
        4,
        unauthorized,
        "unauthenticated",
        "relay is not an address of this tenant",
    );
    expect(
        5,
        bad,
        "bad-request",
        "a certificate or a password, not both",
    );
    expect(
        6,
        bad,
        "bad-request",
        "sends its RSA public key as reader_key",
    );
    expect(
        7,
        bad,
        "bad-request",
        "reader_key is only for password readers",
    );
    expect(8, bad, "bad-certificate", "cannot be used");

    let log = access.0.lock().unwrap();
    assert_eq!(
        log.len(),
        answers.len(),
        "every request is in the access log"
    );
    assert_eq!(log[0].outcome, "granted");
    assert_eq!(log[0].principal, "carol@contoso.test");
    assert_eq!(log[0].detail, "VIEW,REPLY,REPLYALL (by password)");
    assert_eq!(log[1].principal, "carol@contoso.test");
    assert_eq!(log[1].code, "unauthenticated");
    for entry in log.iter() {
        let line = serde_json::to_string(entry).unwrap();
        assert!(
            !line.contains(CAROL_PASSWORD) && !line.contains("not-carols-password"),
            "{line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_without_passwords_says_so() {
    let (port, access, stop) = start(false).await;
    let message = message();
    let a = tokio::task::spawn_blocking(move || {
        let key = public_key_pem("carol@contoso.test");
        let auth = basic("carol@contoso.test", CAROL_PASSWORD);
        https::request(
            port,
            None,
            "POST",
            USE_LICENSE_PATH,
            &auth,
            &request_body(&message, Some(&key)),
        )
    })
    .await
    .unwrap();
    let _ = stop.send(ShutdownPhase::Draining);
    assert_eq!(a.status, "HTTP/1.1 401 Unauthorized", "{}", a.body);
    assert!(
        a.body["reason"]
            .as_str()
            .unwrap()
            .contains("does not take passwords"),
        "{}",
        a.body
    );
    assert_eq!(access.0.lock().unwrap()[0].outcome, "refused");
}

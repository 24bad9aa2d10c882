//! `sealpost decrypt --identity` through the real binary against the licensing service started
//! in-process on 127.0.0.1. The service presents a certificate for IP 127.0.0.1 from a CA made
//! here (passed with --ca), so the URL written in the message verifies for real. bob opens
//! alice's message and the use license is cached; dave is refused with the service's reason; a
//! wrong CA fails the service's verification; a revoked message is refused; with the service
//! stopped bob still opens the message from the cache, and a tampered cache entry is ignored
//! (refreshed while the service runs, a failure once it is gone).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use sealpost::crypto::rms::{license_for, protect, TenantKeys};
use sealpost::licensing::access::MemoryAccessLog;
use sealpost::licensing::http::{serve, tls_config, ServiceLimits};
use sealpost::licensing::identity::{DomainTrust, ReaderTrust};
use sealpost::licensing::revocations::RevocationStore;
use sealpost::licensing::service::LicensingService;
use sealpost::mail::DomainSet;
use sealpost::net::ShutdownPhase;
use sealpost::rules::RmsProtect;
use sealpost::tls::TlsMinVersion;

const MESSAGE: &[u8] = b"From: alice@contoso.test\r\nTo: bob@fabrikam.test\r\nMessage-ID: <m1@contoso.test>\r\nSubject: plans\r\n\r\nfor bob only\r\n";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn smime(who: &str, ext: &str) -> String {
    fixtures()
        .join(format!("pki/smime/{who}.{ext}"))
        .display()
        .to_string()
}

fn tenant() -> TenantKeys {
    TenantKeys::load_dir(&fixtures().join("keys/tenant")).unwrap()
}

/// A CA (`ca.crt`) and a service certificate for IP 127.0.0.1 (`service.crt`/`service.key`).
fn service_pki(dir: &Path) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "licensing test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca, ca_key).unwrap();
    std::fs::write(dir.join("ca.crt"), ca.pem()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "licensing.contoso.test");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &ca).unwrap();
    std::fs::write(dir.join("service.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("service.key"), key.serialize_pem()).unwrap();
}

fn protected(url: Option<String>) -> Vec<u8> {
    let action = RmsProtect {
        template: "do-not-forward".into(),
        rights: Default::default(),
        expires_after: None,
    };
    let request = license_for(
        &action,
        "alice@contoso.test",
        &["bob@fabrikam.test".into()],
        Some("<m1@contoso.test>"),
        SystemTime::now(),
    )
    .with_licensing_url(url);
    protect(MESSAGE, tenant().active().unwrap(), request).unwrap()
}

/// Runs `sealpost decrypt MESSAGE --identity WHO.crt --key WHO.key ARGS...` with its own cache
/// home; a read-only copy of nothing else from the environment.
fn decrypt(home: &Path, message: &Path, who: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sealpost"))
        .arg("decrypt")
        .arg(message)
        .args([
            "--identity",
            &smime(who, "crt"),
            "--key",
            &smime(who, "key"),
        ])
        .args(args)
        .env("HOME", home)
        .env("XDG_CACHE_HOME", home.join("cache"))
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Flips one bit inside the signed part of the cached use license.
fn tamper(entry: &Path) {
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(entry).unwrap()).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut bytes = b64.decode(json["use_license"].as_str().unwrap()).unwrap();
    bytes[40] ^= 1;
    json["use_license"] = b64.encode(&bytes).into();
    std::fs::write(entry, json.to_string()).unwrap();
}

fn only_file(dir: &Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

#[test]
fn readers_open_through_the_licensing_service_and_the_cache() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    service_pki(dir);
    let ca = dir.join("ca.crt").display().to_string();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let url = format!("https://127.0.0.1:{port}");
    let key = sealpost::tls::load_certified_key(&dir.join("service.crt"), &dir.join("service.key"))
        .unwrap();
    let revocations = Arc::new(RevocationStore::in_memory());
    let access = Arc::new(MemoryAccessLog::default());
    let service = LicensingService {
        trust: ReaderTrust::new(vec![DomainTrust {
            domains: DomainSet::new(["fabrikam.test", "contoso.test"]),
            anchors: sealpost::tls::load_trust_anchors(&fixtures().join("pki/ca.crt")).unwrap(),
        }]),
        tenant_keys: tenant(),
        url: url.clone(),
        validity: Duration::from_secs(30 * 86400),
        revocations: revocations.clone(),
        access: access.clone(),
        passwords: None,
    };
    let (stop, stopped) = tokio::sync::watch::channel(ShutdownPhase::Running);
    let server = rt.spawn(serve(
        listener,
        tls_config(&key, TlsMinVersion::Tls12).unwrap(),
        Arc::new(service),
        ServiceLimits::default(),
        stopped,
    ));

    let message = dir.join("protected.eml");
    std::fs::write(&message, protected(Some(url.clone()))).unwrap();
    let home = dir.join("home");
    std::fs::create_dir(&home).unwrap();
    let cache = home.join("cache/sealpost/licenses");

    // bob: the service grants, the message opens, the use license lands in the default cache.
    let o = decrypt(&home, &message, "bob@fabrikam.test", &["--ca", &ca]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout, MESSAGE);
    let err = stderr(&o);
    assert!(
        err.contains(&format!("use license from {url} (valid until ")),
        "{err}"
    );
    assert!(err.contains("bob@fabrikam.test holds: VIEW"), "{err}");
    let entry = only_file(&cache);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&entry), 0o600);
    assert_eq!(mode(&cache), 0o700);
    let cached: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&entry).unwrap()).unwrap();
    assert_eq!(cached["principal"], "bob@fabrikam.test");
    assert_eq!(cached["licensing_url"], url.as_str());

    // dave holds a forwarded copy: refused with the service's reason, nothing written.
    let out = dir.join("dave.eml");
    let o = decrypt(
        &home,
        &message,
        "dave@fabrikam.test",
        &["--ca", &ca, "--out", out.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(14), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("dave@fabrikam.test has no rights on this message"),
        "{}",
        stderr(&o)
    );
    assert!(o.stdout.is_empty());
    assert!(!out.exists());

    // The service's certificate does not chain to the given CA: no exchange at all.
    let empty = dir.join("empty-cache");
    let o = decrypt(
        &home,
        &message,
        "bob@fabrikam.test",
        &[
            "--ca",
            &fixtures().join("pki/ca.crt").display().to_string(),
            "--license-cache",
            empty.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(15), "{}", stderr(&o));
    assert!(stderr(&o).contains("TLS"), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
    assert!(!empty.exists() || std::fs::read_dir(&empty).unwrap().count() == 0);

    // A tampered cache entry is ignored and replaced by a fresh use license.
    tamper(&entry);
    let o = decrypt(&home, &message, "bob@fabrikam.test", &["--ca", &ca]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout, MESSAGE);
    let err = stderr(&o);
    assert!(err.contains("ignoring the cached use license"), "{err}");
    assert!(err.contains(&format!("use license from {url}")), "{err}");

    // Revoked: the next request is refused (a reader without a cached use license).
    revocations
        .revoke(
            "<m1@contoso.test>",
            SystemTime::now() - Duration::from_secs(1),
        )
        .unwrap();
    let other = dir.join("other-cache");
    let o = decrypt(
        &home,
        &message,
        "bob@fabrikam.test",
        &["--ca", &ca, "--license-cache", other.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(14), "{}", stderr(&o));
    assert!(stderr(&o).contains("revoked on "), "{}", stderr(&o));
    assert!(o.stdout.is_empty());

    // The service stops: bob's cached use license still opens the message, with no network.
    stop.send(ShutdownPhase::Draining).unwrap();
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), server).await })
        .unwrap()
        .unwrap();
    let o = decrypt(&home, &message, "bob@fabrikam.test", &["--ca", &ca]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout, MESSAGE);
    let err = stderr(&o);
    assert!(err.contains("use license from the cache "), "{err}");
    assert!(!err.contains("ignoring"), "{err}");

    // Tampered with the service gone: ignored, and the service cannot be reached.
    tamper(&entry);
    let o = decrypt(&home, &message, "bob@fabrikam.test", &["--ca", &ca]);
    assert_eq!(o.status.code(), Some(15), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("ignoring the cached use license"),
        "{}",
        stderr(&o)
    );
    assert!(o.stdout.is_empty());

    // A message that names no licensing service: only the tenant key opens it.
    let v1 = dir.join("v1.eml");
    std::fs::write(&v1, protected(None)).unwrap();
    let o = decrypt(&home, &v1, "bob@fabrikam.test", &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("names no licensing service"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("--tenant-key"), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
}

#[test]
fn identity_conflicts_with_the_other_key_options() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_sealpost"))
            .arg("decrypt")
            .args(args)
            .output()
            .unwrap()
    };
    let crt = smime("bob@fabrikam.test", "crt");
    let key = smime("bob@fabrikam.test", "key");
    for extra in [
        vec!["--tenant-key", "x"],
        vec!["--cert", crt.as_str()],
        vec!["--pkcs12", "x"],
    ] {
        let mut args = vec!["--identity", crt.as_str(), "--key", key.as_str()];
        args.extend(extra);
        assert_eq!(run(&args).status.code(), Some(2), "{args:?}");
    }
    assert_eq!(run(&["--identity", crt.as_str()]).status.code(), Some(2));
    let help = run(&["--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("super-user path"), "{help}");
    assert!(help.contains(" 14  "), "{help}");
    assert!(help.contains(" 15  "), "{help}");
}

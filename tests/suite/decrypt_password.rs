//! `sealpost decrypt --user NAME --service URL` through the real binary: one of the tenant's own
//! users opens a protected message with a password instead of a certificate, against the
//! licensing service started in-process on 127.0.0.1 with contoso's fixture certificate for it
//! (`fixtures/pki/licensing.contoso.test.crt`, verified with the fixture CA). The reader's key is
//! made on first use beside the cache (0600) and the use license is cached, so the message opens
//! again with the service stopped; a wrong password is refused with the service's reason; and a
//! message naming another service than --service is refused before the password is sent.

use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use sealpost::auth::Users;
use sealpost::crypto::rms::TenantKeys;
use sealpost::licensing::access::MemoryAccessLog;
use sealpost::licensing::http::{serve, tls_config, ServiceLimits};
use sealpost::licensing::identity::ReaderTrust;
use sealpost::licensing::revocations::RevocationStore;
use sealpost::licensing::service::{LicensingService, PasswordReaders};
use sealpost::mail::DomainSet;
use sealpost::net::ShutdownPhase;
use sealpost::tls::TlsMinVersion;
use support::rms::protected;

const MESSAGE: &[u8] = b"From: alice@contoso.test\r\nTo: carol@contoso.test\r\nMessage-ID: <pw1@contoso.test>\r\nSubject: plans\r\n\r\nfor carol only\r\n";
const PASSWORD: &str = "carol's long passphrase";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// Runs `sealpost decrypt MESSAGE --user carol@contoso.test ARGS...`, the password (if any) in
/// SEALPOST_PASSWORD.
fn decrypt(message: &Path, password: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sealpost"));
    command
        .arg("decrypt")
        .arg(message)
        .args(["--user", "carol@contoso.test"])
        .args(["--ca", &path_str(&fixtures().join("pki/ca.crt"))])
        .args(args)
        .env_remove("SEALPOST_PASSWORD");
    if let Some(p) = password {
        command.env("SEALPOST_PASSWORD", p);
    }
    command.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn carol_opens_with_her_password_then_offline_from_the_cache() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
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
    let pki = fixtures().join("pki");
    let key = sealpost::tls::load_certified_key(
        &pki.join("licensing.contoso.test.crt"),
        &pki.join("licensing.contoso.test.key"),
    )
    .unwrap();
    let mut hashes = std::collections::BTreeMap::new();
    hashes.insert(
        "carol@contoso.test".to_string(),
        sealpost::auth::hash_password(PASSWORD).unwrap(),
    );
    let access = Arc::new(MemoryAccessLog::default());
    let service = LicensingService {
        trust: ReaderTrust::new(Vec::new()),
        tenant_keys: TenantKeys::load_dir(&fixtures().join("keys/tenant")).unwrap(),
        url: url.clone(),
        validity: Duration::from_secs(30 * 86400),
        revocations: Arc::new(RevocationStore::in_memory()),
        access: access.clone(),
        passwords: Some(PasswordReaders {
            users: Users::new(hashes),
            domains: DomainSet::new(["contoso.test"]),
        }),
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
    std::fs::write(
        &message,
        protected(MESSAGE, &["carol@contoso.test"], "<pw1@contoso.test>", &url),
    )
    .unwrap();
    let cache = dir.join("cache");
    let password_file = dir.join("password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let cache_arg = ["--license-cache", &path_str(&cache)];
    let from_file = ["--password-file", &path_str(&password_file)];

    // The password from a file: a key is made, the service grants, the message opens.
    let args = [&["--service", &url][..], &cache_arg, &from_file].concat();
    let o = decrypt(&message, None, &args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout, MESSAGE);
    let err = stderr(&o);
    assert!(err.contains("made a reader key"), "{err}");
    assert!(
        err.contains(&format!("use license from {url} (valid until ")),
        "{err}"
    );
    assert!(err.contains("carol@contoso.test holds: VIEW"), "{err}");
    let keys: Vec<_> = std::fs::read_dir(cache.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(keys.len(), 1);
    let mode = std::fs::metadata(&keys[0]).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(access.0.lock().unwrap().len(), 1);
    assert_eq!(
        access.0.lock().unwrap()[0].detail,
        "VIEW,REPLY,REPLYALL (by password)"
    );

    // A wrong password (from the environment): the service's reason, nothing on stdout.
    let other_cache = ["--license-cache", &path_str(&dir.join("other"))];
    let args = [&["--service", &url][..], &other_cache].concat();
    let o = decrypt(&message, Some("not it"), &args);
    assert_eq!(o.status.code(), Some(14), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("wrong user name or password"),
        "{}",
        stderr(&o)
    );
    assert!(o.stdout.is_empty());

    // The message names another service than the one the reader trusts with its password: no
    // request at all.
    let elsewhere = "https://127.0.0.1:1";
    let args = [&["--service", elsewhere][..], &other_cache].concat();
    let o = decrypt(&message, Some(PASSWORD), &args);
    assert_eq!(o.status.code(), Some(16), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "names the licensing service {url}, not {elsewhere}"
        )),
        "{err}"
    );
    assert!(o.stdout.is_empty());
    assert_eq!(
        access.0.lock().unwrap().len(),
        2,
        "the password was not sent"
    );

    // No password given: a usage error before anything is sent.
    let args = [&["--service", &url][..], &other_cache].concat();
    let o = decrypt(&message, None, &args);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("SEALPOST_PASSWORD"), "{}", stderr(&o));

    // The service stopped: the cached use license and the kept key open the message offline.
    let _ = stop.send(ShutdownPhase::Draining);
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), server).await })
        .unwrap()
        .unwrap();
    let args = [&["--service", &url][..], &cache_arg, &from_file].concat();
    let o = decrypt(&message, None, &args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout, MESSAGE);
    assert!(
        stderr(&o).contains("use license from the cache"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("made a reader key"), "{}", stderr(&o));
}

#[test]
fn user_goes_with_service_and_not_with_other_proofs() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_sealpost"))
            .arg("decrypt")
            .args(args)
            .output()
            .unwrap()
    };
    let crt = path_str(&fixtures().join("pki/smime/carol@contoso.test.crt"));
    let user = ["--user", "carol@contoso.test"];
    let service = ["--service", "https://127.0.0.1:8443"];
    for args in [
        user.to_vec(),
        [&user[..], &service, &["--identity", &crt]].concat(),
        [&user[..], &service, &["--tenant-key", "x"]].concat(),
        [&user[..], &service, &["--pkcs12", "x"]].concat(),
        service.to_vec(),
        vec!["--key", "k", "--password-file", "p"],
    ] {
        let o = run(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(o.stdout.is_empty());
    }
    let help = run(&["--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains(" 16  "), "{help}");
    assert!(help.contains("SEALPOST_PASSWORD"), "{help}");
}

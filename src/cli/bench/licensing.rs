//! `sealpost bench licensing`: use licenses issued per second by the licensing service, and
//! their latency, with many readers asking at once, next to what the RSA work of one request
//! allows on this machine (`openssl speed rsa2048`).
//!
//! The service runs in this process on loopback with the fixture tenant key, a certificate for
//! 127.0.0.1 from a CA made for the run, and bob@fabrikam.test's fixture certificate trusted as
//! every reader's identity. Every request is a new TLS connection (as `sealpost decrypt
//! --identity` makes it), is decided in full (license signature, revocations, rights) and is
//! written to a hash-chained audit log file, fsynced, before the answer.

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::crypto::rms::{
    extract_container, license_for, parse_container, protect, TenantKeys, UseLicense,
};
use crate::licensing::access::{Access, AccessLog};
use crate::licensing::client::{client_config, request_use_license, ServiceUrl};
use crate::licensing::http::{serve, tls_config, ServiceLimits};
use crate::licensing::identity::{DomainTrust, ReaderTrust};
use crate::licensing::revocations::RevocationStore;
use crate::licensing::service::LicensingService;
use crate::mail::DomainSet;
use crate::net::ShutdownPhase;
use crate::rules::RmsProtect;
use crate::store::audit::AuditLog;

pub struct Params {
    pub readers: usize,
    pub requests: usize,
}

/// The access log as the service keeps it: one hash-chained line per request, fsynced.
struct FileAccessLog(AuditLog);

impl AccessLog for FileAccessLog {
    fn record(&self, access: &Access) -> Result<(), String> {
        let reason = serde_json::to_string(access).map_err(|e| e.to_string())?;
        self.0
            .append(crate::licensing::access::EVENT, "", "", "bench", &reason)
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

pub async fn run(fixtures: &Path, base: &Path, p: Params) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(base)?;
    let pki = base.join("pki");
    crate::crypto::pki::generate(&pki, &["127.0.0.1"])?;
    let key =
        crate::tls::load_certified_key(&pki.join("127.0.0.1.crt"), &pki.join("127.0.0.1.key"))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("https://127.0.0.1:{}", listener.local_addr()?.port());
    let tenant = TenantKeys::load_dir(&fixtures.join("keys/tenant"))?;
    let service = LicensingService {
        trust: ReaderTrust::new(vec![DomainTrust {
            domains: DomainSet::new(["fabrikam.test"]),
            anchors: crate::tls::load_trust_anchors(&fixtures.join("pki/ca.crt"))?,
        }]),
        tenant_keys: TenantKeys::load_dir(&fixtures.join("keys/tenant"))?,
        url: url.clone(),
        validity: Duration::from_secs(30 * 86400),
        revocations: Arc::new(RevocationStore::open(base)),
        access: Arc::new(FileAccessLog(AuditLog::new(&base.join("audit")))),
        passwords: None,
    };
    let (stop, stopped) = tokio::sync::watch::channel(ShutdownPhase::Running);
    // Every reader comes from 127.0.0.1 here: the per-address limit (meant for one client
    // among many) would refuse the load itself, so only the total limit applies.
    let defaults = ServiceLimits::default();
    let limits = ServiceLimits {
        max_connections_per_ip: defaults.max_connections,
        ..defaults
    };
    let server = tokio::spawn(serve(
        listener,
        tls_config(&key, crate::tls::TlsMinVersion::Tls12)?,
        Arc::new(service),
        limits,
        stopped,
    ));

    let action = RmsProtect {
        template: "do-not-forward".into(),
        rights: Default::default(),
        expires_after: None,
    };
    let request = license_for(
        &action,
        "alice@contoso.test",
        &["bob@fabrikam.test".into()],
        Some("<bench@contoso.test>"),
        SystemTime::now(),
    )
    .with_licensing_url(Some(url.clone()));
    let active = tenant
        .active()
        .ok_or_else(|| anyhow::anyhow!("no active tenant key"))?;
    let public = Arc::new(active.public());
    let message = protect(b"Subject: bench\r\n\r\nbody\r\n", active, request)?;
    let container = extract_container(&message)?.into_owned();
    let framed = parse_container(&container)?;
    let (license, signature) = (framed.license.to_vec(), framed.signature.to_vec());
    let identity = crate::tls::load_certified_key(
        &fixtures.join("pki/smime/bob@fabrikam.test.crt"),
        &fixtures.join("pki/smime/bob@fabrikam.test.key"),
    )?;
    let tls = client_config(Some(&pki.join("ca.crt")), &identity)?;
    let target = ServiceUrl::parse(&url)?;

    let next = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(p.requests)));
    let failures = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..p.readers.max(1) {
        let (next, latencies, failures) = (next.clone(), latencies.clone(), failures.clone());
        let (tls, target, license, signature) = (
            tls.clone(),
            target.clone(),
            license.clone(),
            signature.clone(),
        );
        let public = public.clone();
        readers.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < p.requests {
                let t = Instant::now();
                let answer = request_use_license(&target, tls.clone(), &license, &signature).await;
                let good = answer
                    .ok()
                    .and_then(|a| UseLicense::decode(&a.use_license).ok());
                match good.filter(|u| u.verify(&public).is_ok()) {
                    Some(_) => latencies
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(t.elapsed()),
                    None => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    while readers.join_next().await.is_some() {}
    let elapsed = started.elapsed();
    let _ = stop.send(ShutdownPhase::Draining);
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;

    let mut l = std::mem::take(&mut *latencies.lock().unwrap_or_else(|e| e.into_inner()));
    l.sort();
    let pct = |q: f64| l.get(((l.len() as f64 * q) as usize).min(l.len().saturating_sub(1)));
    let ms = |d: Option<&Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    let rate = l.len() as f64 / elapsed.as_secs_f64();
    outln!(
        "licensing bench: {} requests by {} concurrent readers, a new TLS connection each",
        p.requests,
        p.readers
    );
    outln!(
        "  use licenses issued:   {} in {:.2} s   {rate:.1} /s   ({} failed)",
        l.len(),
        elapsed.as_secs_f64(),
        failures.load(Ordering::Relaxed)
    );
    outln!(
        "  latency:               p50 {:.1} ms   p99 {:.1} ms",
        ms(pct(0.50)),
        ms(pct(0.99))
    );
    match openssl_rsa2048() {
        Some((sign, verify)) => {
            // Per request: one RSA sign (the use license), one RSA decrypt (the content key,
            // a private-key operation like a sign) and one RSA encrypt (to the reader, a
            // public-key operation like a verify).
            let one_core = 1.0 / (2.0 / sign + 1.0 / verify);
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            outln!(
                "  RSA bound (openssl speed rsa2048: {sign:.0} sign/s, {verify:.0} verify/s): \
                 {one_core:.0} /s per core, {:.0} /s on {cores} cores; achieved {:.0}% of it",
                one_core * cores,
                100.0 * rate / (one_core * cores)
            );
        }
        None => outln!("  RSA bound: openssl not found (install openssl for the comparison)"),
    }
    Ok(ExitCode::from(u8::from(
        failures.load(Ordering::Relaxed) > 0,
    )))
}

/// RSA-2048 signs and verifies per second on one core, from `openssl speed`.
fn openssl_rsa2048() -> Option<(f64, f64)> {
    let out = std::process::Command::new("openssl")
        .args(["speed", "-seconds", "2", "rsa2048"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("rsa 2048 bits"))?;
    let fields: Vec<f64> = line
        .split_whitespace()
        .filter_map(|f| f.parse::<f64>().ok())
        .collect();
    // "rsa 2048 bits 0.000329s 0.000020s 3039.1 50335.9": the last two are per second.
    match fields[..] {
        [.., sign, verify] if sign > 0.0 && verify > 0.0 => Some((sign, verify)),
        _ => None,
    }
}

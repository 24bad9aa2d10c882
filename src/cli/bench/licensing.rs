//! `sealpost bench licensing`: use licenses issued per second by the licensing service, and
//! their latency, with many readers asking at once, next to what the RSA work of one request
//! allows on this machine (`openssl speed rsa2048`).
//!
//! The service runs in this process on loopback with the fixture tenant key, a certificate for
//! 127.0.0.1 from a CA made for the run, and bob@fabrikam.test's fixture certificate trusted as
//! every reader's identity. Two ways of asking are measured, each on its own line: a new TLS
//! connection per request (as `sealpost decrypt --identity` makes it; TLS sessions are resumed
//! where the service offers it), and readers that keep one connection open for all their
//! requests (HTTP/1.1 keep-alive, [`crate::licensing::session`]). Either way every request is
//! decided in full (license signature, revocations, rights) and recorded in the access log
//! exactly as `serve` does it (the store's hash-chained audit log, fsynced, and its anchor in
//! the store's index) before the answer; requests arriving together share one audit fsync.

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::crypto::rms::{
    extract_container, license_for, parse_container, protect, TenantKeys, UseLicense,
};
use crate::licensing::access::StoreAccessLog;
use crate::licensing::client::{client_config, request_use_license, ServiceUrl};
use crate::licensing::http::{serve, tls_config, ServiceLimits};
use crate::licensing::identity::{DomainTrust, ReaderTrust};
use crate::licensing::revocations::RevocationStore;
use crate::licensing::service::LicensingService;
use crate::licensing::session::Session;
use crate::mail::DomainSet;
use crate::net::ShutdownPhase;
use crate::rules::RmsProtect;

pub struct Params {
    pub readers: usize,
    pub requests: usize,
    pub modes: Vec<Mode>,
}

/// How readers reach the service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// A new TLS connection for every request.
    NewConnection,
    /// One connection per reader for all its requests (HTTP/1.1 keep-alive).
    KeepAlive,
}

impl Mode {
    fn describe(self) -> &'static str {
        match self {
            Mode::NewConnection => "a new TLS connection per request",
            Mode::KeepAlive => "one kept-alive TLS connection per reader",
        }
    }
}

/// What the readers of one run need.
#[derive(Clone)]
struct Readers {
    tls: Arc<rustls::ClientConfig>,
    target: ServiceUrl,
    license: Arc<Vec<u8>>,
    signature: Arc<Vec<u8>>,
    public: Arc<crate::crypto::rms::TenantPublicKey>,
}

/// One mode's figures.
struct Outcome {
    granted: Vec<Duration>,
    failed: usize,
    elapsed: Duration,
    connections: usize,
    resumed: usize,
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
    // The access log exactly as `serve` keeps it: contoso's mailbox store (its audit log, and
    // the anchor in its index), in a data directory of this run.
    // (A copy of the fixtures with its key files 0600, as `demo` stages them.)
    let staged = crate::cli::demo::stage_fixtures(fixtures, base)?;
    let config =
        crate::config::Config::load(&staged.join("contoso.toml"), Some(&base.join("data")))?;
    let store = crate::store::EncryptedStore::open(&config, "licensing")?;
    let service = LicensingService {
        trust: ReaderTrust::new(vec![DomainTrust {
            domains: DomainSet::new(["fabrikam.test"]),
            anchors: crate::tls::load_trust_anchors(&fixtures.join("pki/ca.crt"))?,
        }]),
        tenant_keys: TenantKeys::load_dir(&fixtures.join("keys/tenant"))?,
        url: url.clone(),
        validity: Duration::from_secs(30 * 86400),
        revocations: Arc::new(RevocationStore::open(base)),
        access: Arc::new(StoreAccessLog(store)),
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
    let readers = Readers {
        tls: client_config(Some(&pki.join("ca.crt")), &identity)?,
        target: ServiceUrl::parse(&url)?,
        license: Arc::new(license),
        signature: Arc::new(signature),
        public,
    };
    let mut outcomes = Vec::new();
    for mode in &p.modes {
        outcomes.push((*mode, measure(*mode, &readers, &p).await));
    }
    let _ = stop.send(ShutdownPhase::Draining);
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;

    let bound = super::openssl_speed::rsa2048(2).map(|(sign, verify)| {
        // Per request: one RSA sign (the use license), one RSA decrypt (the content key,
        // a private-key operation like a sign) and one RSA encrypt (to the reader, a
        // public-key operation like a verify).
        let one_core = 1.0 / (2.0 / sign + 1.0 / verify);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        (sign, verify, one_core, cores)
    });
    outln!(
        "licensing bench: {} requests by {} concurrent readers in each mode",
        p.requests,
        p.readers
    );
    let mut failed = 0;
    for (mode, o) in &outcomes {
        failed += o.failed;
        let rate = o.granted.len() as f64 / o.elapsed.as_secs_f64();
        let pct = |q: f64| {
            let i = ((o.granted.len() as f64 * q) as usize).min(o.granted.len().saturating_sub(1));
            o.granted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        outln!("  {}:", mode.describe());
        outln!(
            "    use licenses issued: {} in {:.2} s   {rate:.1} /s   ({} failed)",
            o.granted.len(),
            o.elapsed.as_secs_f64(),
            o.failed
        );
        outln!(
            "    latency:             p50 {:.1} ms   p99 {:.1} ms",
            pct(0.50),
            pct(0.99)
        );
        if *mode == Mode::KeepAlive {
            outln!(
                "    TLS connections:     {} ({} resumed)",
                o.connections,
                o.resumed
            );
        }
        if let Some((_, _, one_core, cores)) = bound {
            outln!(
                "    of the RSA bound:    {:.0}%",
                100.0 * rate / (one_core * cores)
            );
        }
    }
    match bound {
        Some((sign, verify, one_core, cores)) => outln!(
            "  RSA bound (openssl speed rsa2048: {sign:.0} sign/s, {verify:.0} verify/s): \
             {one_core:.0} /s per core, {:.0} /s on {cores} cores",
            one_core * cores
        ),
        None => outln!("  RSA bound: openssl not found (install openssl for the comparison)"),
    }
    Ok(ExitCode::from(u8::from(failed > 0)))
}

/// Runs `p.requests` requests by `p.readers` concurrent readers in `mode`.
async fn measure(mode: Mode, r: &Readers, p: &Params) -> Outcome {
    let next = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(p.requests)));
    let failures = Arc::new(AtomicUsize::new(0));
    let requests = p.requests;
    let started = Instant::now();
    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..p.readers.max(1) {
        let (next, latencies, failures, r) =
            (next.clone(), latencies.clone(), failures.clone(), r.clone());
        readers.spawn(async move {
            let mut session = Session::new(r.target.clone(), r.tls.clone());
            while next.fetch_add(1, Ordering::Relaxed) < requests {
                let t = Instant::now();
                let answer = match mode {
                    Mode::NewConnection => {
                        request_use_license(&r.target, r.tls.clone(), &r.license, &r.signature)
                            .await
                            .map(|a| a.use_license)
                    }
                    Mode::KeepAlive => session
                        .use_license(&r.license, &r.signature)
                        .await
                        .map(|a| a.use_license),
                };
                let good = answer.ok().and_then(|a| UseLicense::decode(&a).ok());
                match good.filter(|u| u.verify(&r.public).is_ok()) {
                    Some(_) => latencies
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(t.elapsed()),
                    None => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            session.connections()
        });
    }
    let (mut connections, mut resumed) = (0, 0);
    while let Some(joined) = readers.join_next().await {
        if let Ok((c, r)) = joined {
            connections += c;
            resumed += r;
        }
    }
    let elapsed = started.elapsed();
    let mut granted = std::mem::take(&mut *latencies.lock().unwrap_or_else(|e| e.into_inner()));
    granted.sort();
    Outcome {
        granted,
        failed: failures.load(Ordering::Relaxed),
        elapsed,
        connections,
        resumed,
    }
}

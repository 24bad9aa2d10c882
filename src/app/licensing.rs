//! Running the licensing service (`[rms.licensing] listen`) beside the SMTP listeners: bound
//! before anything starts, so a busy port stops `serve` with the file and key named; a reload
//! replaces what it decides with (its address and certificate change only at a restart).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::licensing::access::{AccessLog, StoreAccessLog};
use crate::licensing::http::{
    serve, tls_config, Handler, ServiceLimits, ServiceRequest, ServiceResponse,
};
use crate::licensing::identity::{DomainTrust, ReaderTrust};
use crate::licensing::revocations::RevocationStore;
use crate::licensing::service::{LicensingService, PasswordReaders};
use crate::live::Live;
use crate::net::ShutdownPhase;
use crate::tls::TlsMinVersion;

/// The service in force; a reload replaces it (trust, passwords, tenant keys, URL, validity)
/// while requests under way finish with the one they started with.
pub(crate) struct LiveService(Live<LicensingService>);

impl Handler for LiveService {
    fn handle(&self, request: ServiceRequest) -> ServiceResponse {
        self.0.get().handle(request)
    }
}

impl LiveService {
    /// Builds the service `config` describes, keeping the access log and revocations (they
    /// live in the data directory, which a reload does not change), and swaps it in. On any
    /// error nothing changes. Returns what only a restart applies.
    pub(crate) fn reload(&self, config: &Config, current: &Config) -> anyhow::Result<Vec<&str>> {
        let Some(service) = config
            .rms_licensing
            .as_ref()
            .and_then(|l| l.service.as_ref())
        else {
            return Ok(vec!["rms.licensing (the service stops at a restart)"]);
        };
        let running = self.0.get();
        let rebuilt = build_service(config, running.revocations.clone(), running.access.clone())?;
        let mut later = Vec::new();
        let before = current
            .rms_licensing
            .as_ref()
            .and_then(|l| l.service.as_ref());
        if before.map(|b| b.listen) != Some(service.listen) {
            later.push("rms.licensing.listen");
        }
        if before.map(|b| &b.key.chain) != Some(&service.key.chain) {
            later.push("rms.licensing.certificate");
        }
        self.0.replace(Arc::new(rebuilt));
        Ok(later)
    }
}

/// A bound, ready service.
pub(crate) struct Prepared {
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    pub(crate) service: Arc<LiveService>,
}

impl Prepared {
    pub(crate) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub(crate) async fn serve(self, shutdown: watch::Receiver<ShutdownPhase>) {
        serve(
            self.listener,
            self.tls,
            self.service,
            ServiceLimits::default(),
            shutdown,
        )
        .await
    }
}

/// Binds the service's port and loads what it decides with, when the configuration runs it.
pub(crate) async fn prepare(config: &Config) -> anyhow::Result<Option<Prepared>> {
    let Some(service) = config
        .rms_licensing
        .as_ref()
        .and_then(|l| l.service.as_ref())
    else {
        return Ok(None);
    };
    // Its own handle on the store, for the access log (the audit log the store's events share).
    let store = crate::store::EncryptedStore::open(config, "licensing")
        .context("the licensing service's access log (the store's audit log)")?;
    let built = build_service(
        config,
        Arc::new(RevocationStore::open(&config.data_dir)),
        Arc::new(StoreAccessLog(store)),
    )?;
    let tls = tls_config(&service.key, TlsMinVersion::Tls12)?;
    let listener = TcpListener::bind(service.listen).await.with_context(|| {
        format!(
            "{}: rms.licensing.listen: cannot listen on {}",
            config.path.display(),
            service.listen
        )
    })?;
    Ok(Some(Prepared {
        listener,
        tls,
        service: Arc::new(LiveService(Live::new(Arc::new(built)))),
    }))
}

/// The service `config` describes, with the given revocations and access log.
fn build_service(
    config: &Config,
    revocations: Arc<RevocationStore>,
    access: Arc<dyn AccessLog>,
) -> anyhow::Result<LicensingService> {
    let file = config.path.display();
    let (Some(licensing), Some(service)) = (
        config.rms_licensing.as_ref(),
        config
            .rms_licensing
            .as_ref()
            .and_then(|l| l.service.as_ref()),
    ) else {
        anyhow::bail!("{file}: the configuration runs no licensing service");
    };
    let Some(dir) = &config.rms_tenant_key_dir else {
        anyhow::bail!("{file}: rms.licensing.listen: the service needs [rms] tenant_key_dir");
    };
    let tenant_keys = crate::crypto::rms::TenantKeys::load_dir_with(dir, config.pkcs11.as_ref())
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))
        .context("rms.tenant_key_dir")?;
    let trust = ReaderTrust::new(
        service
            .trust
            .iter()
            .map(|t| DomainTrust {
                domains: t.domains.clone(),
                anchors: t.anchors.clone(),
            })
            .collect(),
    );
    Ok(LicensingService {
        trust,
        tenant_keys,
        url: licensing.url.clone(),
        validity: licensing.use_license_validity,
        revocations,
        access,
        passwords: (service.passwords && !config.users.is_empty()).then(|| PasswordReaders {
            users: crate::auth::Users::new(config.users.clone()),
            domains: config.local_domains.clone(),
        }),
    })
}

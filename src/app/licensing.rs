//! Running the licensing service (`[rms.licensing] listen`) beside the SMTP listeners: bound
//! before anything starts, so a busy port stops `serve` with the file and key named.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::licensing::access::StoreAccessLog;
use crate::licensing::http::{serve, tls_config, ServiceLimits};
use crate::licensing::identity::{DomainTrust, ReaderTrust};
use crate::licensing::revocations::RevocationStore;
use crate::licensing::service::{LicensingService, PasswordReaders};
use crate::net::ShutdownPhase;
use crate::tls::TlsMinVersion;

/// A bound, ready service.
pub(crate) struct Prepared {
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    service: Arc<LicensingService>,
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
    let Some(licensing) = &config.rms_licensing else {
        return Ok(None);
    };
    let Some(service) = &licensing.service else {
        return Ok(None);
    };
    let file = config.path.display();
    let Some(dir) = &config.rms_tenant_key_dir else {
        anyhow::bail!("{file}: rms.licensing.listen: the service needs [rms] tenant_key_dir");
    };
    let tenant_keys = crate::crypto::rms::TenantKeys::load_dir(dir)
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
    // Its own handle on the store, for the access log (the audit log the store's events share).
    let store = crate::store::EncryptedStore::open(config, "licensing")
        .context("the licensing service's access log (the store's audit log)")?;
    let tls = tls_config(&service.key, TlsMinVersion::Tls12)?;
    let listener = TcpListener::bind(service.listen).await.with_context(|| {
        format!(
            "{file}: rms.licensing.listen: cannot listen on {}",
            service.listen
        )
    })?;
    Ok(Some(Prepared {
        listener,
        tls,
        service: Arc::new(LicensingService {
            trust,
            tenant_keys,
            url: licensing.url.clone(),
            validity: licensing.use_license_validity,
            revocations: Arc::new(RevocationStore::open(&config.data_dir)),
            access: Arc::new(StoreAccessLog(store)),
            passwords: (service.passwords && !config.users.is_empty()).then(|| PasswordReaders {
                users: crate::auth::Users::new(config.users.clone()),
                domains: config.local_domains.clone(),
            }),
        }),
    }))
}

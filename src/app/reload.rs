//! Hot reload (SIGHUP, `sealpost reload`, `POST /reload`): the configuration file is read and
//! checked again and every part built from it — certificates, connectors, rules, encryption
//! keys, mailboxes, limits of new sessions — is built anew before anything is replaced. A
//! configuration that does not load, or whose files do not, is refused and the running one stays.
//! Sessions and deliveries already under way finish under the configuration they started with.

use std::sync::{Arc, Mutex};

use super::build::{build, Shared};
use crate::config::Config;
use crate::delivery::runner::Runner;
use crate::live::Live;
use crate::smtp::server::listener::ServerContext;
use crate::store::MailStore;

/// Everything a reload replaces.
pub struct Reloader {
    pub(crate) config: Live<Config>,
    pub(crate) slots: Vec<Arc<Live<ServerContext>>>,
    pub(crate) cleanup: Live<crate::cleanup::Cleanup>,
    pub(crate) store: Live<dyn MailStore>,
    pub(crate) runner: Arc<Runner>,
    pub(crate) shared: Shared,
    /// The licensing service, when this server runs one.
    pub(crate) licensing: Option<Arc<super::licensing::LiveService>>,
    /// One reload at a time.
    pub(crate) busy: Mutex<()>,
}

impl Reloader {
    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.config.get()
    }

    /// Reads the configuration file again (same path, same data_dir) and applies it.
    pub fn reload_from_disk(&self) -> Result<String, String> {
        let current = self.config.get();
        let loaded =
            Config::load(&current.path, Some(&current.data_dir)).map_err(|e| e.to_string());
        let result = loaded.and_then(|new| self.apply(new));
        self.shared.telemetry.metrics.reload(result.is_ok());
        result
    }

    /// Builds everything from `new`, then swaps it in; on any error nothing changes.
    pub fn apply(&self, new: Config) -> Result<String, String> {
        let _busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.config.get();
        let parts = build(&new, &self.shared).map_err(|e| format!("{e:#}"))?;
        let store_changed = new.encryption_policies != current.encryption_policies
            || new.mailbox_policies != current.mailbox_policies
            || new.store != current.store;
        let store = if store_changed {
            crate::store::open_store(&new).map_err(|e| format!("mailbox store: {e}"))?
        } else {
            self.store.get()
        };

        let mut later = Vec::new();
        if new.listeners != current.listeners {
            later.push("listener addresses");
        }
        if new.operations.admin_listen != current.operations.admin_listen {
            later.push("admin.listen");
        }
        if new.operations.trace_log != current.operations.trace_log {
            later.push("[trace]");
        }
        if new.shutdown_timeout != current.shutdown_timeout {
            later.push("server.shutdown_timeout");
        }
        if new.delivery.concurrency != current.delivery.concurrency {
            later.push("delivery.concurrency");
        }
        if new.limits.max_connections != current.limits.max_connections
            || new.limits.max_connections_per_ip != current.limits.max_connections_per_ip
        {
            later.push("connection limits");
        }
        if new.limits.max_in_flight_size != current.limits.max_in_flight_size {
            later.push("limits.max_in_flight_size");
        }
        if parts.contexts.len() != self.slots.len() {
            return Err("the number of [[listener]] entries changed: restart to apply".into());
        }
        let runs_licensing = new
            .rms_licensing
            .as_ref()
            .is_some_and(|l| l.service.is_some());
        if self.licensing.is_none() && runs_licensing {
            later.push("rms.licensing (the service starts at a restart)");
        }
        // Built and swapped before the rest: if it fails, nothing has changed.
        if let Some(live) = &self.licensing {
            let stays = live
                .reload(&new, &current)
                .map_err(|e| format!("licensing service: {e:#}"))?;
            later.extend(stays);
        }

        let new = Arc::new(new);
        for (slot, ctx) in self.slots.iter().zip(parts.contexts) {
            slot.replace(ctx);
        }
        self.cleanup.replace(parts.cleanup);
        self.store.replace(store.clone());
        self.runner.replace(new.clone(), store, parts.remote);
        self.config.replace(new.clone());

        let mut summary = format!(
            "{} rules, {} outbound and {} inbound connectors, {} mailboxes, certificate {}",
            new.rules.len(),
            new.outbound_connectors.len(),
            new.inbound_connectors.len(),
            new.mailboxes.len(),
            new.tls
                .as_ref()
                .map(|t| t.certificate.display().to_string())
                .unwrap_or_else(|| "none".into()),
        );
        if store_changed {
            summary.push_str("; mailbox store reopened with the new encryption policies");
        }
        if !later.is_empty() {
            summary.push_str(&format!(
                "; unchanged until a restart: {}",
                later.join(", ")
            ));
        }
        Ok(summary)
    }
}

//! The daily TLS-RPT run of a serving process: once the UTC day is over, the sessions of that
//! day (and any earlier ones not reported yet) are reported to the domains that ask for it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::reload::Reloader;
use crate::queue::QueueStore;
use crate::report::tlsrpt::journal::day_start;
use crate::report::tlsrpt::send::{Outcome, Sender};
use crate::report::tlsrpt::SessionJournal;

/// How often the process looks whether a day has ended (and syncs the journal).
const CHECK_EVERY: Duration = Duration::from_secs(600);

pub(super) async fn daily(
    reloader: Arc<Reloader>,
    queue: Arc<dyn QueueStore>,
    recorder: Arc<dyn SessionJournal>,
    wake: Arc<crate::queue::Wake>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let config = reloader.config();
        if config.tls_report.enabled {
            let until = day_start(chrono::Utc::now().timestamp());
            let journal = recorder.clone();
            let last = tokio::task::spawn_blocking(move || journal.daily_until()).await;
            match last.map_err(anyhow::Error::from).and_then(|r| r) {
                Ok(last) if last.is_none_or(|u| u < until) => {
                    let journal = recorder.clone();
                    let _ = tokio::task::spawn_blocking(move || journal.sync()).await;
                    let resolver = crate::dns::Resolver::new(&config.nameservers).ok();
                    let sender = Sender {
                        journal: recorder.clone(),
                        submitter: crate::report::tlsrpt::send::submitter(&config),
                        queue: queue.clone(),
                        resolver: resolver.as_ref(),
                    };
                    match sender.run(until, true).await {
                        Ok(outcomes) => {
                            if outcomes.iter().any(|o| matches!(o, Outcome::Sent { .. })) {
                                wake.look();
                            }
                        }
                        Err(e) => tracing::error!(error = %e, "daily TLS reports failed"),
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, journal = %recorder.location(), "cannot read the TLS-RPT state")
                }
            }
        }
        let journal = recorder.clone();
        let _ = tokio::task::spawn_blocking(move || journal.sync()).await;
        tokio::select! {
            _ = tokio::time::sleep(CHECK_EVERY) => {}
            _ = shutdown.changed() => break,
        }
    }
    recorder.sync();
}

//! `sealpost serve`: run the server until SIGINT or SIGTERM.

use std::process::ExitCode;

use super::ConfigArgs;

pub fn run(args: ConfigArgs) -> anyhow::Result<ExitCode> {
    let config = match args.load() {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    super::runtime()?.block_on(async move {
        let server = crate::app::start(config).await?;
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT: shutting down"); break; }
                _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
                _ = hup.recv() => reload_rules(&server, &args),
            }
        }
        // A second SIGINT or SIGTERM ends the grace period for transactions in flight.
        let again = async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::warn!("second signal: not waiting any longer");
        };
        server.shutdown_unless(again).await;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// SIGHUP: reads the configuration again and applies its transport rules; a bad file keeps the
/// rules in force and says why. Open sessions are not touched.
fn reload_rules(server: &crate::app::Server, args: &ConfigArgs) {
    match crate::config::Config::load(&args.config, args.data_dir.as_deref()) {
        Ok(config) => {
            let n = config.rules.len();
            server.replace_rules(config.rules);
            tracing::info!(rules = n, "SIGHUP: transport rules reloaded");
        }
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP: configuration refused; the previous rules stay in force")
        }
    }
}

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
                _ = hup.recv() => {
                    let result = tokio::task::block_in_place(|| server.reload());
                    crate::app::log_reload("SIGHUP", &result);
                }
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

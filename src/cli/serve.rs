//! `sealpost serve`: run the server until SIGINT or SIGTERM.

use std::process::ExitCode;

use super::ConfigArgs;

pub fn run(args: ConfigArgs) -> anyhow::Result<ExitCode> {
    let config = match args.load() {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    super::runtime()?.block_on(async move {
        // The handlers are in place before the listeners open: a signal sent as soon as the
        // port answers must not meet the default action (which would end the process at once).
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        let server = crate::app::start(config).await?;
        loop {
            tokio::select! {
                _ = int.recv() => { tracing::info!("SIGINT: shutting down"); break; }
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
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            tracing::warn!("second signal: not waiting any longer");
        };
        server.shutdown_unless(again).await;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}

//! `sealpost serve`: run the server until SIGINT or SIGTERM.

use std::process::ExitCode;

use super::ConfigArgs;

pub fn run(args: ConfigArgs) -> anyhow::Result<ExitCode> {
    fixed_mmap_threshold();
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

/// glibc's malloc raises its mmap threshold each time a large block is freed (a password check
/// frees argon2's 19 MiB), after which buffers of up to that size come from the heap, fragment it
/// and stay resident: `sealpost bench imap` measured about 2.9 MiB kept per idle IMAP connection
/// that way, and 19 KiB with the threshold fixed. The threshold is fixed only through
/// `GLIBC_TUNABLES` before the process starts, so `serve` starts itself again once with it set
/// (same process id, same arguments); an administrator's own `glibc.malloc.mmap_threshold` wins.
#[cfg(target_env = "gnu")]
fn fixed_mmap_threshold() {
    use std::os::unix::process::CommandExt;
    const TUNABLE: &str = "glibc.malloc.mmap_threshold";
    let current = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    if current.contains(TUNABLE) {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let value = if current.is_empty() {
        format!("{TUNABLE}=131072")
    } else {
        format!("{current}:{TUNABLE}=131072")
    };
    let error = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("GLIBC_TUNABLES", value)
        .exec();
    eprintln!("sealpost: could not restart with a fixed malloc mmap threshold ({error}); going on");
}

#[cfg(not(target_env = "gnu"))]
fn fixed_mmap_threshold() {}

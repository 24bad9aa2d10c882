//! `sealpost bench relay`: contoso → fabrikam through the real path, both domains in this
//! process.

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{build_message, compare, dkim, progress};
use crate::cli::demo::{start_fixture_pair_tuned, FixturePair};
use crate::smtp::client::{ClientSettings, Connection, TlsMode};
use crate::tls::policy::TlsPolicy;

pub(super) async fn relay(
    fixtures: &std::path::Path,
    base: &std::path::Path,
    messages: usize,
    size: usize,
    connections: usize,
    dkim: dkim::DkimMode,
) -> anyhow::Result<ExitCode> {
    let FixturePair {
        configs,
        servers,
        addrs,
    } = start_fixture_pair_tuned(fixtures, base, |c| dkim::apply(dkim, c)).await?;
    let message = Arc::new(build_message(size));
    let settings = ClientSettings {
        helo_name: "bench-client.test".into(),
        timeout: Duration::from_secs(60),
        tls: crate::tls::opportunistic_client_config(),
    };
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let submitted = progress(messages as u64, "accepted by contoso");
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (next, message, settings) = (next.clone(), message.clone(), settings.clone());
        let submitted = submitted.clone();
        let (addr, name) = (addrs[0], configs[0].hostname.clone());
        clients.spawn(async move {
            let mut conn = Connection::open(addr, &name, &settings, TlsMode::Opportunistic).await?;
            let policy = TlsPolicy::opportunistic(settings.tls.clone());
            conn.authorize(&policy)?;
            let to = ["bob@fabrikam.test".to_string()];
            while next.fetch_add(1, Ordering::Relaxed) < messages {
                let replies = conn
                    .send(&policy, "alice@contoso.test", &to, &message)
                    .await?;
                if let Some(Err(r)) = replies.first() {
                    anyhow::bail!("refused: {r}");
                }
                submitted.inc(1);
            }
            conn.quit().await;
            anyhow::Ok(())
        });
    }
    while let Some(r) = clients.join_next().await {
        r??;
    }
    submitted.finish_and_clear();
    let accepted = start.elapsed();
    let store = servers[1].store();
    let deadline = Instant::now() + Duration::from_secs(600);
    let bar = progress(messages as u64, "delivered at fabrikam");
    loop {
        let n = store.count("bob@fabrikam.test")?;
        bar.set_position(n as u64);
        if n >= messages {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "not all messages arrived within 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    bar.finish_and_clear();
    let delivered = start.elapsed();
    for s in servers {
        s.shutdown().await;
    }
    let rate = |d: Duration| messages as f64 / d.as_secs_f64();
    println!(
        "relay bench: {messages} messages of {} bytes over {connections} connection(s), STARTTLS on both hops, {}, {} cores, load {}",
        message.len(),
        dkim.describe(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        compare::load_average()
    );
    println!(
        "  accepted by contoso:  {:>8.2} s  {:>8.1} msg/s",
        accepted.as_secs_f64(),
        rate(accepted)
    );
    println!(
        "  delivered at fabrikam: {:>7.2} s  {:>8.1} msg/s  {:.1} MiB/s",
        delivered.as_secs_f64(),
        rate(delivered),
        (messages * message.len()) as f64 / delivered.as_secs_f64() / (1024.0 * 1024.0)
    );
    Ok(ExitCode::SUCCESS)
}

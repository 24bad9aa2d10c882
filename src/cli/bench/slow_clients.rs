//! `sealpost bench slow-clients`: a well-behaved client's transaction times while slow clients
//! hold connections open (slowloris style), compared with the same server without them.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpSocket;
use tokio::task::JoinSet;

use crate::cli::demo::{start_fixture_pair, FixturePair};
use crate::smtp::client::{ClientSettings, Connection, TlsMode};
use crate::tls::policy::TlsPolicy;

/// Slow connections per loopback source address, under the default per-address limit (50).
const PER_ADDRESS: usize = 40;
/// What a slow client trickles: a command it repeats, or message text after DATA.
const COMMAND: &[u8] = b"NOOP\r\n";
const DATA_LINE: &[u8] = b"slow data\r\n";

/// What the bench was asked for.
pub struct Params {
    pub slow: usize,
    pub transactions: usize,
    pub size: usize,
    pub interval: Duration,
}

/// How the slow clients fared: connected and greeted, open right now, bytes trickled, and
/// NOOPs answered.
#[derive(Default)]
struct SlowStats {
    greeted: AtomicUsize,
    open: AtomicUsize,
    bytes: AtomicUsize,
    answered: AtomicUsize,
}

pub async fn run(fixtures: &Path, base: &Path, p: Params) -> anyhow::Result<ExitCode> {
    let FixturePair {
        configs,
        servers,
        addrs,
    } = start_fixture_pair(fixtures, base).await?;
    let (addr, name) = (addrs[0], configs[0].hostname.clone());
    let message = super::build_message(p.size);

    let quiet = good_client(addr, &name, &message, p.transactions)
        .await
        .context("without slow clients")?;

    let stats = Arc::new(SlowStats::default());
    let mut slow = JoinSet::new();
    for i in 0..p.slow {
        // Counted open from before its start, so that its end never makes the count underflow.
        stats.open.fetch_add(1, Ordering::SeqCst);
        let stats = stats.clone();
        let interval = p.interval;
        // Spread the slow clients' bytes evenly over the interval.
        let offset = interval.mul_f64(i as f64 / p.slow as f64);
        slow.spawn(async move {
            tokio::time::sleep(offset).await;
            let result = slow_client(i, addr, &stats, interval).await;
            stats.open.fetch_sub(1, Ordering::SeqCst);
            result
        });
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while stats.greeted.load(Ordering::SeqCst) < p.slow && Instant::now() < deadline {
        if let Some(Ok(Err(e))) = slow.try_join_next() {
            anyhow::bail!("a slow client failed to start: {e:#}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let greeted = stats.greeted.load(Ordering::SeqCst);
    anyhow::ensure!(
        greeted == p.slow,
        "only {greeted} of {} slow clients got their greeting within 60 s",
        p.slow
    );
    // Let every slow client trickle for a while (a whole NOOP) before measuring.
    tokio::time::sleep(p.interval * (COMMAND.len() as u32 + 1)).await;
    let loaded = good_client(addr, &name, &message, p.transactions)
        .await
        .context("with slow clients")?;
    let still_open = stats.open.load(Ordering::SeqCst);
    let (bytes, answered) = (
        stats.bytes.load(Ordering::SeqCst),
        stats.answered.load(Ordering::SeqCst),
    );
    slow.abort_all();
    while slow.join_next().await.is_some() {}

    // Everything the good client sent must arrive.
    let expected = 2 * p.transactions;
    let store = servers[1].store();
    let deadline = Instant::now() + Duration::from_secs(300);
    while store.count("bob@fabrikam.test")? < expected {
        anyhow::ensure!(
            Instant::now() < deadline,
            "not all {expected} messages arrived within 5 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for s in servers {
        s.shutdown().await;
    }

    let addresses = p.slow.div_ceil(PER_ADDRESS);
    println!(
        "slow-clients bench: {} transactions per run, each on a new connection (EHLO, STARTTLS, \
         MAIL, RCPT, DATA of {} bytes, 250) to {addr}",
        p.transactions,
        message.len()
    );
    println!("                      p50 ms    p99 ms    max ms    run s");
    for (label, (times, run)) in [
        ("no slow clients".to_string(), &quiet),
        (format!("{} slow clients", p.slow), &loaded),
    ] {
        println!(
            "  {label:<18} {:>8.1}  {:>8.1}  {:>8.1}  {:>7.2}",
            ms(percentile(times, 0.50)),
            ms(percentile(times, 0.99)),
            ms(percentile(times, 1.0)),
            run.as_secs_f64(),
        );
    }
    println!(
        "slow clients: {} trickling a command, {} trickling DATA, one byte per {:?}, from {} \
         address(es) 127.0.0.2..; {greeted} greeted, {still_open} still open after the run, \
         {bytes} bytes trickled, {answered} NOOPs answered",
        p.slow.div_ceil(2),
        p.slow / 2,
        p.interval,
        addresses,
    );
    println!("all {expected} messages arrived at bob@fabrikam.test");
    Ok(ExitCode::SUCCESS)
}

/// `transactions` full transactions one after the other, each on a new connection; the time of
/// each from connect to the 250 after DATA (sorted), and of the whole run.
async fn good_client(
    addr: SocketAddr,
    name: &str,
    message: &[u8],
    transactions: usize,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let run = Instant::now();
    let settings = ClientSettings {
        helo_name: "bench-client.test".into(),
        timeout: Duration::from_secs(60),
        tls: crate::tls::opportunistic_client_config(),
    };
    let to = ["bob@fabrikam.test".to_string()];
    let mut times = Vec::with_capacity(transactions);
    for _ in 0..transactions {
        let start = Instant::now();
        let mut conn = Connection::open(addr, name, &settings, TlsMode::Opportunistic).await?;
        let policy = TlsPolicy::opportunistic(settings.tls.clone());
        conn.authorize(&policy)?;
        let replies = conn
            .send(&policy, "alice@contoso.test", &to, message)
            .await?;
        times.push(start.elapsed());
        if let Some(Err(r)) = replies.first() {
            anyhow::bail!("refused: {r}");
        }
        conn.quit().await;
    }
    times.sort();
    Ok((times, run.elapsed()))
}

/// One slow client from 127.0.0.(2 + i / PER_ADDRESS): greeting, EHLO, then forever one byte per
/// `interval` of a repeated command (even i) or of message text after DATA (odd i).
async fn slow_client(
    i: usize,
    target: SocketAddr,
    stats: &SlowStats,
    interval: Duration,
) -> anyhow::Result<()> {
    let last = u8::try_from(2 + i / PER_ADDRESS).context("too many slow clients")?;
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((Ipv4Addr::new(127, 0, 0, last), 0)))?;
    let stream = socket.connect(target).await?;
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    expect(&mut read, 220).await?;
    write.write_all(b"EHLO slow.test\r\n").await?;
    expect(&mut read, 250).await?;
    let in_data = i % 2 == 1;
    if in_data {
        for (line, code) in [
            (&b"MAIL FROM:<slow@example.test>\r\n"[..], 250),
            (b"RCPT TO:<carol@contoso.test>\r\n", 250),
            (b"DATA\r\n", 354),
        ] {
            write.write_all(line).await?;
            expect(&mut read, code).await?;
        }
    }
    stats.greeted.fetch_add(1, Ordering::SeqCst);
    let pattern = if in_data { DATA_LINE } else { COMMAND };
    loop {
        for &b in pattern {
            tokio::time::sleep(interval).await;
            write.write_all(&[b]).await?;
            stats.bytes.fetch_add(1, Ordering::Relaxed);
        }
        if !in_data {
            expect(&mut read, 250).await?;
            stats.answered.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Reads one reply (all its lines) and checks its code.
async fn expect(read: &mut BufReader<OwnedReadHalf>, code: u16) -> anyhow::Result<()> {
    let mut line = String::new();
    loop {
        line.clear();
        anyhow::ensure!(read.read_line(&mut line).await? > 0, "connection closed");
        if line.as_bytes().get(3) != Some(&b'-') {
            break;
        }
    }
    anyhow::ensure!(
        line.starts_with(&code.to_string()),
        "expected {code}, got {}",
        line.trim_end()
    );
    Ok(())
}

/// The q-th quantile (nearest rank) of sorted times.
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let times: Vec<Duration> = (1..=200).map(Duration::from_millis).collect();
        assert_eq!(percentile(&times, 0.50), Duration::from_millis(100));
        assert_eq!(percentile(&times, 0.99), Duration::from_millis(198));
        assert_eq!(percentile(&times, 1.0), Duration::from_millis(200));
        assert_eq!(percentile(&times[..1], 0.99), Duration::from_millis(1));
        assert_eq!(percentile(&[], 0.99), Duration::ZERO);
    }
}

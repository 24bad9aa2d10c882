//! `sealpost bench compare`: sealpost next to Postfix under the same load, in one run. Both
//! relay to the same counting sink (`bench sink`), with the same certificate, queues on the
//! same disk, each durable in its own way (fsync before 250); the load client (`bench load`)
//! runs against Postfix and sealpost in turn, A B A B ..., and the end-to-end rate (messages
//! counted by the sink per second since the load began), the accept rate, CPU per message of
//! the whole MTA (Postfix: master and every daemon) and its memory (PSS) are printed per round,
//! then medians with min–max and the ratio. The output format is kept stable.

mod postfix;
pub(super) mod procs;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::load::Load;
use super::sink::Sink;

/// What to compare.
pub struct Params {
    pub messages: usize,
    pub sessions: usize,
    pub size: usize,
    pub rounds: usize,
    pub starttls: bool,
    /// Postfix with outbound TLS connection reuse and session caches.
    pub postfix_best: bool,
    /// The sealpost binary to run (default: this one).
    pub binary: Option<PathBuf>,
}

struct Round {
    accept: f64,
    e2e: f64,
    cpu_ms: f64,
    pss: f64,
}

pub async fn run(fixtures: &Path, base: &Path, p: Params) -> anyhow::Result<ExitCode> {
    postfix::ensure_installed()?;
    std::fs::create_dir_all(base)?;
    let pki = fixtures.join("pki");
    let (sink_cert, sink_key) = (
        pki.join("mx.fabrikam.test.crt"),
        pki.join("mx.fabrikam.test.key"),
    );
    let (cert, key) = (
        pki.join("mx.contoso.test.crt"),
        pki.join("mx.contoso.test.key"),
    );
    let sink_tls = if p.starttls {
        let k = crate::tls::load_certified_key(&sink_cert, &sink_key)?;
        Some(crate::tls::server_config(
            &Arc::new(k),
            crate::tls::TlsMinVersion::Tls12,
            false,
            true,
        )?)
    } else {
        None
    };
    print_header(&p);
    let sink = Sink::start("127.0.0.1:0".parse()?, sink_tls).await?;
    let pf_port = free_port()?;
    let pf = postfix::Postfix::start(&postfix::Setup {
        dir: base.join("postfix"),
        port: pf_port,
        sink_port: sink.addr.port(),
        tls: p.starttls.then_some((cert.as_path(), key.as_path())),
        best: p.postfix_best,
    })?;
    let sp_port = free_port()?;
    let sp = start_sealpost(&p, base, sp_port, sink.addr, (&cert, &key))?;
    let result = rounds(&p, &sink, [(pf_port, pf.master_pid), (sp_port, sp.id())]).await;
    pf.stop();
    stop_child(sp);
    let (pf_rounds, sp_rounds) = result?;
    print_report(&pf_rounds, &sp_rounds);
    Ok(ExitCode::SUCCESS)
}

async fn rounds(
    p: &Params,
    sink: &Sink,
    mtas: [(u16, u32); 2],
) -> anyhow::Result<(Vec<Round>, Vec<Round>)> {
    let message = Arc::new(super::build_message(p.size));
    // One client configuration per MTA for the whole run: its session cache resumes sessions
    // the way Postfix's smtp client cache does.
    let tls = [(); 2].map(|_| crate::tls::opportunistic_client_config());
    let mut results: [Vec<Round>; 2] = [Vec::new(), Vec::new()];
    for round in 1..=p.rounds {
        for (i, &(port, pid)) in mtas.iter().enumerate() {
            let load = Load {
                target: SocketAddr::from(([127, 0, 0, 1], port)),
                messages: p.messages,
                sessions: p.sessions,
                starttls: p.starttls,
                from: "alice@contoso.test".into(),
                to: "bob@fabrikam.test".into(),
                message: message.clone(),
                tls: tls[i].clone(),
            };
            let before = sink.received();
            let cpu0 = procs::cpu_seconds(pid);
            let start = Instant::now();
            let accepted = load.run().await.with_context(|| name(i))?;
            let deadline = Instant::now() + Duration::from_secs(600);
            while sink.received() < before + p.messages as u64 {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "{}: not every message reached the sink within 10 minutes",
                    name(i)
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let e2e = start.elapsed();
            let pss = procs::pss_mib(pid);
            let cpu = procs::cpu_seconds(pid) - cpu0;
            let r = Round {
                accept: accepted.rate(),
                e2e: p.messages as f64 / e2e.as_secs_f64(),
                cpu_ms: cpu * 1000.0 / p.messages as f64,
                pss,
            };
            let resumed = match p.starttls {
                true => format!("  resumed {}/{}", accepted.resumed, accepted.handshakes),
                false => String::new(),
            };
            println!(
                "round {round:<3} {:<9} accept {:>7.1} msg/s  e2e {:>7.1} msg/s  cpu {:>5.2} ms/msg  pss {:>6.1} MiB{resumed}",
                name(i),
                r.accept,
                r.e2e,
                r.cpu_ms,
                r.pss
            );
            results[i].push(r);
        }
    }
    let [a, b] = results;
    Ok((a, b))
}

fn name(i: usize) -> &'static str {
    ["postfix", "sealpost"][i]
}

fn print_header(p: &Params) {
    println!(
        "compare: {} messages of {} bytes per round, {} sessions, one message per connection, {}, Postfix {} ({}), {} rounds, {} cores, load {}",
        p.messages,
        super::build_message(p.size).len(),
        p.sessions,
        if p.starttls { "STARTTLS both hops" } else { "plaintext both hops" },
        postfix::version(),
        match (p.starttls, p.postfix_best) {
            (false, _) => "no TLS",
            (true, true) => "best: TLS connection reuse and session caches",
            (true, false) => "defaults",
        },
        p.rounds,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
}

/// The one-minute load average, as /proc/loadavg gives it.
pub(super) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".to_string())
}

fn print_report(pf: &[Round], sp: &[Round]) {
    for (mta, rounds) in [("postfix", pf), ("sealpost", sp)] {
        let e2e = stats(rounds.iter().map(|r| r.e2e));
        let accept = stats(rounds.iter().map(|r| r.accept));
        let cpu = stats(rounds.iter().map(|r| r.cpu_ms));
        let pss = stats(rounds.iter().map(|r| r.pss));
        println!(
            "summary {mta:<9} e2e {:.1} ({:.1}–{:.1}) msg/s  accept {:.1} msg/s  cpu {:.2} ms/msg  pss {:.1} MiB",
            e2e.0, e2e.1, e2e.2, accept.0, cpu.0, pss.0
        );
    }
    let ratio = stats(sp.iter().map(|r| r.e2e)).0 / stats(pf.iter().map(|r| r.e2e)).0;
    println!(
        "ratio e2e sealpost/postfix {ratio:.2}  (load at the end {})",
        load_average()
    );
}

/// (median, min, max).
fn stats(values: impl Iterator<Item = f64>) -> (f64, f64, f64) {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let mid = v.len() / 2;
    let median = if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    };
    (median, v[0], v[v.len() - 1])
}

pub(super) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// sealpost as a `serve` child: relays everything from loopback to the sink, queue on disk.
fn start_sealpost(
    p: &Params,
    base: &Path,
    port: u16,
    sink: SocketAddr,
    (cert, key): (&Path, &Path),
) -> anyhow::Result<std::process::Child> {
    let tls = if p.starttls {
        format!(
            "[tls]\ncertificate = \"{}\"\nprivate_key = \"{}\"\n\n",
            cert.display(),
            key.display()
        )
    } else {
        String::new()
    };
    let rest = format!("{tls}[dns.static_routes]\n\"fabrikam.test\" = \"{sink}\"\n");
    serve_child(p.binary.as_deref(), &base.join("sealpost"), port, &rest)
}

/// `sealpost serve` as a child process listening on 127.0.0.1:`port`, relaying for loopback
/// without sender checks (Postfix in the comparison runs no milter either),
/// its data under `dir`, with `rest` (TOML sections) added to its configuration; returns once
/// it accepts connections.
pub(super) fn serve_child(
    binary: Option<&Path>,
    dir: &Path,
    port: u16,
    rest: &str,
) -> anyhow::Result<std::process::Child> {
    std::fs::create_dir_all(dir)?;
    let config = format!(
        "[server]\nhostname = \"mx.contoso.test\"\ndata_dir = \"{}\"\nrelay_networks = [\"127.0.0.0/8\"]\n\n\
         [[listener]]\naddress = \"127.0.0.1:{port}\"\n\n\
         [sender_auth]\nverify = false\n\n{rest}",
        dir.join("data").display()
    );
    let path = dir.join("sealpost.toml");
    std::fs::write(&path, config)?;
    let binary = match binary {
        Some(b) => b.to_path_buf(),
        None => std::env::current_exe()?,
    };
    let child = std::process::Command::new(binary)
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("serve.log"))?)
        .spawn()
        .context("starting sealpost serve")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "sealpost did not start (see {})",
            dir.join("serve.log").display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(child)
}

pub(super) fn stop_child(mut child: std::process::Child) {
    let _ = std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
}

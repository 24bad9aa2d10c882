//! `sealpost bench idle`: what idle SMTP sessions cost a `serve` process, and whether the
//! memory comes back once they close. CONNECTIONS clients connect (from 127.0.0.1 to
//! 127.0.0.250 in turn), read the greeting, say EHLO and wait; the server's resident memory is
//! read before, with every session open and idle, and every 5 s for a minute after they close.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpSocket;

use super::compare::{free_port, procs, serve_child, stop_child};

pub struct Params {
    pub connections: usize,
    pub binary: Option<PathBuf>,
}

pub async fn run(base: &Path, p: Params) -> anyhow::Result<ExitCode> {
    let port = free_port()?;
    let limit = p.connections + 100;
    let limits = format!(
        "[limits]\nmax_connections = {limit}\nmax_connections_per_ip = {limit}\n\
         command_timeout = \"30m\"\n"
    );
    let child = serve_child(p.binary.as_deref(), &base.join("idle"), port, &limits)?;
    let pid = child.id();
    let result = measure(pid, port, p.connections).await;
    stop_child(child);
    result
}

async fn measure(pid: u32, port: u16, n: usize) -> anyhow::Result<ExitCode> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = procs::rss_mib(pid);
    let start = Instant::now();
    let mut sessions = Vec::with_capacity(n);
    for i in 0..n {
        let from = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % 250) as u8));
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(from, 0))?;
        let stream = socket
            .connect(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .with_context(|| format!("connection {i}"))?;
        let mut stream = BufReader::new(stream);
        let mut line = String::new();
        stream.read_line(&mut line).await?;
        anyhow::ensure!(line.starts_with("220"), "connection {i}: greeting {line:?}");
        stream.get_mut().write_all(b"EHLO idle.test\r\n").await?;
        loop {
            line.clear();
            stream.read_line(&mut line).await?;
            anyhow::ensure!(line.starts_with("250"), "connection {i}: EHLO {line:?}");
            if line.as_bytes().get(3) == Some(&b' ') {
                break;
            }
        }
        sessions.push(stream);
    }
    let opened = start.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = procs::rss_mib(pid);
    drop(sessions);
    println!(
        "idle bench: {n} SMTP sessions (greeting and EHLO, then idle), plaintext, {} cores, load {}",
        std::thread::available_parallelism().map_or(0, |c| c.get()),
        super::compare::load_average()
    );
    println!("  server RSS before:          {before:>8.1} MiB");
    println!(
        "  with {n} idle sessions:  {idle:>8.1} MiB  ({:.1} KiB per session; opened in {:.1} s)",
        (idle - before) * 1024.0 / n as f64,
        opened.as_secs_f64()
    );
    let closed = Instant::now();
    let mut after = Vec::new();
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let rss = procs::rss_mib(pid);
        after.push(format!("{:.1}", rss));
    }
    println!(
        "  after they closed, every 5 s for {:.0} s: {} MiB",
        closed.elapsed().as_secs_f64(),
        after.join(" ")
    );
    Ok(ExitCode::SUCCESS)
}

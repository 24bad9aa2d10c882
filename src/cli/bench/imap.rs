//! `sealpost bench imap`: what reading mail over IMAP costs a `serve` process. A mailbox
//! encrypted under a policy gets MESSAGES messages of 10 KB and one message of BIG bytes (written
//! through the store before the server starts); a client over implicit TLS then fetches the
//! headers of the small ones and the whole big one, timed, with the server's resident memory
//! (VmRSS) and peak (VmHWM) after each step; then CONNECTIONS clients log in, select the mailbox
//! and stay in IDLE, and the memory per idle connection is printed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpSocket;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::compare::{free_port, procs, stop_child};
use crate::config::Config;
use crate::store::{EncryptedStore, MailStore};

const USER: &str = "reader@contoso.test";
const PASSWORD: &str = "bench-imap-password";

pub struct Params {
    pub messages: usize,
    pub big: usize,
    pub connections: usize,
    pub binary: Option<PathBuf>,
}

type Client = BufReader<TlsStream<tokio::net::TcpStream>>;

pub async fn run(fixtures: &Path, base: &Path, p: Params) -> anyhow::Result<ExitCode> {
    let dir = base.join("imap");
    let (smtp, imaps) = (free_port()?, free_port()?);
    let config = write_config(fixtures, &dir, smtp, imaps, p.connections)?;
    let filled = Instant::now();
    fill(&config, p.messages, p.big)?;
    let filled = filled.elapsed();
    let binary = match &p.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe()?,
    };
    let child = std::process::Command::new(binary)
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("serve.log"))?)
        .spawn()
        .context("starting sealpost serve")?;
    let result = measure(child.id(), imaps, &p, filled).await;
    stop_child(child);
    result
}

fn write_config(
    fixtures: &Path,
    dir: &Path,
    smtp: u16,
    imaps: u16,
    connections: usize,
) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir.join("keys"))?;
    for k in ["a", "b", "availability"] {
        crate::crypto::keyfile::generate_key_file(&dir.join(format!("keys/{k}.key")))?;
    }
    let hash = crate::auth::hash_password(PASSWORD).map_err(anyhow::Error::msg)?;
    let limit = connections + 100;
    let pki = fixtures.join("pki");
    let text = format!(
        "[server]\nhostname = \"mx.contoso.test\"\ndata_dir = \"data\"\n\
         [[listener]]\naddress = \"127.0.0.1:{smtp}\"\n\
         [[listener]]\naddress = \"127.0.0.1:{imaps}\"\nprotocol = \"imaps\"\n\
         [limits]\nmax_connections = {limit}\nmax_connections_per_ip = {limit}\n\
         [tls]\ncertificate = \"{}\"\nprivate_key = \"{}\"\n\
         [[domain]]\nname = \"contoso.test\"\nencryption_policy = \"bench\"\n\
         [[mailbox]]\naddress = \"{USER}\"\n\
         [[encryption_policy]]\nname = \"bench\"\nroot_keys = [\"keys/a.key\", \"keys/b.key\"]\n\
         availability_key = \"keys/availability.key\"\n\
         [[user]]\nname = \"{USER}\"\npassword_hash = \"{hash}\"\n",
        pki.join("mx.contoso.test.crt").display(),
        pki.join("mx.contoso.test.key").display(),
    );
    let path = dir.join("sealpost.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// `messages` messages of 10 KB, then one of `big` bytes, into the reader's mailbox.
fn fill(config: &Path, messages: usize, big: usize) -> anyhow::Result<()> {
    let config = Config::load(config, None)?;
    let store = EncryptedStore::open(&config, "bench imap")?;
    for i in 0..messages {
        store.deliver(USER, &message(i, 10_000))?;
    }
    store.deliver(USER, &message(messages, big))?;
    Ok(())
}

fn message(i: usize, size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: Sender {i} <s{i}@fabrikam.test>\r\nTo: {USER}\r\nSubject: bench message {i}\r\n\
         Date: Sun, 06 Dec 2026 10:00:00 +0000\r\nMessage-ID: <bench-{i}@fabrikam.test>\r\n\r\n"
    )
    .into_bytes();
    let line = b"0123456789 the quick brown fox jumps over the lazy dog 0123456789\r\n";
    while m.len() + line.len() <= size {
        m.extend_from_slice(line);
    }
    m
}

async fn measure(pid: u32, port: u16, p: &Params, filled: Duration) -> anyhow::Result<ExitCode> {
    let connector = TlsConnector::from(crate::tls::opportunistic_client_config());
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut client = loop {
        match connect(&connector, 1, port).await {
            Ok(c) => break c,
            Err(e) if Instant::now() > deadline => return Err(e.context("sealpost did not start")),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    command(&mut client, "a", &format!("LOGIN {USER} {PASSWORD}")).await?;
    let (_, select) = command(&mut client, "b", "SELECT INBOX").await?;
    let exists = format!("* {} EXISTS", p.messages + 1);
    anyhow::ensure!(
        select.contains(&exists),
        "SELECT: expected {exists}: {select}"
    );
    let before = (procs::rss_mib(pid), procs::peak_mib(pid));

    let start = Instant::now();
    let (bytes, text) = command(
        &mut client,
        "c",
        &format!("FETCH 1:{} (BODY.PEEK[HEADER])", p.messages),
    )
    .await?;
    let headers = start.elapsed();
    anyhow::ensure!(
        text.matches(" FETCH ").count() == p.messages,
        "expected {} FETCH responses",
        p.messages
    );
    let after_headers = (procs::rss_mib(pid), procs::peak_mib(pid));

    let start = Instant::now();
    let (big_bytes, _) = command(
        &mut client,
        "d",
        &format!("FETCH {} (BODY.PEEK[])", p.messages + 1),
    )
    .await?;
    let big = start.elapsed();
    anyhow::ensure!(
        big_bytes as usize >= p.big.saturating_sub(100),
        "the big message came back with {big_bytes} bytes"
    );
    let after_big = (procs::rss_mib(pid), procs::peak_mib(pid));
    command(&mut client, "e", "LOGOUT").await?;
    drop(client);

    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_before = procs::rss_mib(pid);
    let start = Instant::now();
    let mut idle = Vec::with_capacity(p.connections);
    for i in 0..p.connections {
        let mut c = connect(&connector, i, port).await?;
        command(&mut c, "a", &format!("LOGIN {USER} {PASSWORD}")).await?;
        command(&mut c, "b", "SELECT INBOX").await?;
        c.get_mut().write_all(b"c IDLE\r\n").await?;
        let mut line = String::new();
        c.read_line(&mut line).await?;
        anyhow::ensure!(
            line.starts_with('+'),
            "connection {i}: IDLE answered {line:?}"
        );
        idle.push(c);
    }
    let opened = start.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = procs::rss_mib(pid);
    drop(idle);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let closed_rss = procs::rss_mib(pid);

    println!(
        "imap bench: {} messages of 10 KB and one of {} bytes in an encrypted mailbox, implicit TLS, \
         {} cores, load {} (mailbox filled in {:.1} s)",
        p.messages,
        p.big,
        std::thread::available_parallelism().map_or(0, |c| c.get()),
        super::compare::load_average(),
        filled.as_secs_f64()
    );
    println!(
        "  server after LOGIN and SELECT:   RSS {:>7.1} MiB, peak {:>7.1} MiB",
        before.0, before.1
    );
    println!(
        "  FETCH headers of {:>5} messages: {:>7.3} s ({bytes} bytes), RSS {:>7.1} MiB, peak {:>7.1} MiB",
        p.messages,
        headers.as_secs_f64(),
        after_headers.0,
        after_headers.1
    );
    println!(
        "  FETCH one {:>9}-byte message: {:>7.3} s ({big_bytes} bytes), RSS {:>7.1} MiB, peak {:>7.1} MiB",
        p.big,
        big.as_secs_f64(),
        after_big.0,
        after_big.1
    );
    println!(
        "  {} idle connections (LOGIN, SELECT, IDLE): RSS {:.1} → {:.1} MiB, {:.1} KiB per connection (opened in {:.1} s)",
        p.connections,
        idle_before,
        idle_rss,
        (idle_rss - idle_before) * 1024.0 / p.connections.max(1) as f64,
        opened.as_secs_f64()
    );
    println!("  5 s after they closed:           RSS {closed_rss:>7.1} MiB");
    Ok(ExitCode::SUCCESS)
}

/// A TLS connection from 127.0.0.x (spread over 250 addresses), greeting read.
async fn connect(connector: &TlsConnector, i: usize, port: u16) -> anyhow::Result<Client> {
    let from = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % 250) as u8));
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    let tcp = socket
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await?;
    let name = ServerName::try_from("mx.contoso.test")?;
    let tls = connector.connect(name, tcp).await?;
    let mut client = BufReader::new(tls);
    let mut line = String::new();
    client.read_line(&mut line).await?;
    anyhow::ensure!(line.starts_with("* OK"), "greeting {line:?}");
    Ok(client)
}

/// Sends `tag command` and reads up to the tagged answer, which must be OK. Returns the bytes of
/// every literal received and the response text without the literals.
async fn command(c: &mut Client, tag: &str, command: &str) -> anyhow::Result<(u64, String)> {
    c.get_mut()
        .write_all(format!("{tag} {command}\r\n").as_bytes())
        .await?;
    let mut text = String::new();
    let mut literal_bytes = 0u64;
    let mut line = Vec::new();
    let mut sink = vec![0u8; 64 * 1024];
    loop {
        line.clear();
        let n = c.read_until(b'\n', &mut line).await?;
        anyhow::ensure!(
            n > 0,
            "the server closed the connection after {tag} {command}"
        );
        let s = String::from_utf8_lossy(&line);
        text.push_str(&s);
        if let Some(len) = literal_len(&s) {
            let mut left = len;
            while left > 0 {
                let take = left.min(sink.len() as u64) as usize;
                c.read_exact(&mut sink[..take]).await?;
                left -= take as u64;
            }
            literal_bytes += len;
            continue;
        }
        if s.starts_with(&format!("{tag} ")) {
            anyhow::ensure!(
                s.starts_with(&format!("{tag} OK")),
                "{tag} {}: {}",
                command.split(' ').next().unwrap_or(""),
                s.trim_end()
            );
            return Ok((literal_bytes, text));
        }
    }
}

/// The length of a literal announced at the end of a line (`{123}\r\n`).
fn literal_len(line: &str) -> Option<u64> {
    let body = line.strip_suffix("}\r\n")?;
    let open = body.rfind('{')?;
    body[open + 1..].trim_end_matches('+').parse().ok()
}

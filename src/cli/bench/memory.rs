//! `sealpost bench memory`: peak resident memory of the two fixture servers, each a `serve`
//! child process, while many clients send large messages at once and while one very large
//! message is relayed; every message must arrive intact (its body's SHA-256 is compared).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};

use crate::smtp::client::{ClientSettings, Connection, TlsMode};
use crate::tls::policy::TlsPolicy;

/// What the bench was asked for.
pub struct Params {
    /// The servers' binary; this executable when `None`.
    pub binary: Option<PathBuf>,
    pub clients: usize,
    pub size: usize,
    pub relay_size: usize,
    pub scenario: Scenario,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Many clients at once.
    Clients,
    /// One very large message.
    Relay,
    Both,
}

/// The relay target of the task this bench measures.
const RELAY_TARGET_MIB: f64 = 150.0;
const FROM: &str = "alice@contoso.test";
const TO: &str = "bob@fabrikam.test";
/// How long all messages may take to arrive.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(900);

/// One `serve` child process; killed when dropped.
struct ServeChild {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
    config: PathBuf,
    data: PathBuf,
}

/// Peak figures of one scenario.
struct Peaks {
    contoso: u64,
    fabrikam: u64,
}

pub async fn run(fixtures: &Path, base: &Path, p: Params) -> anyhow::Result<ExitCode> {
    let binary = match &p.binary {
        Some(path) => {
            std::fs::canonicalize(path).with_context(|| format!("--binary {}", path.display()))?
        }
        None => std::env::current_exe()?,
    };
    println!("memory bench: {}", binary.display());
    if p.scenario != Scenario::Relay {
        let dir = base.join("clients");
        let (peaks, elapsed, retried) =
            scenario(&binary, fixtures, &dir, p.clients, p.size, None).await?;
        println!(
            "  (a) {} clients x {} bytes to contoso, relayed to fabrikam: {n}/{n} delivered intact in {:.1} s ({retried} transient refusals retried)",
            p.clients,
            p.size,
            elapsed.as_secs_f64(),
            n = p.clients,
        );
        println!(
            "      peak RSS (VmHWM): contoso {}, fabrikam {}",
            mib(peaks.contoso),
            mib(peaks.fabrikam)
        );
    }
    if p.scenario != Scenario::Clients {
        let dir = base.join("relay");
        let limit = p.relay_size + (1 << 20);
        let (peaks, elapsed, retried) =
            scenario(&binary, fixtures, &dir, 1, p.relay_size, Some(limit)).await?;
        let worst = peaks.contoso.max(peaks.fabrikam) as f64 / (1024.0 * 1024.0);
        println!(
            "  (b) 1 message of {} bytes relayed contoso -> fabrikam: delivered intact in {:.1} s ({retried} transient refusals retried)",
            p.relay_size,
            elapsed.as_secs_f64()
        );
        println!(
            "      peak RSS (VmHWM): contoso {}, fabrikam {} (target under {RELAY_TARGET_MIB} MiB each: {})",
            mib(peaks.contoso),
            mib(peaks.fabrikam),
            if worst < RELAY_TARGET_MIB { "met" } else { "missed" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Starts both servers in `dir`, has `clients` clients send one message of `size` bytes each
/// at once, waits until all are in bob@fabrikam.test's mailbox intact, and reads the peaks.
async fn scenario(
    binary: &Path,
    fixtures: &Path,
    dir: &Path,
    clients: usize,
    size: usize,
    max_message_size: Option<usize>,
) -> anyhow::Result<(Peaks, Duration, usize)> {
    std::fs::create_dir_all(dir)?;
    let (contoso, fabrikam) = start_pair(binary, fixtures, dir, max_message_size).await?;
    let bodies: Vec<(String, [u8; 32])> = (0..clients)
        .map(|i| {
            let marker = format!("memory-bench-{i:04}");
            let digest = Sha256::digest(attachment_body(&marker, size)).into();
            (marker, digest)
        })
        .collect();
    let settings = ClientSettings {
        helo_name: "bench-client.test".into(),
        timeout: Duration::from_secs(300),
        tls: crate::tls::opportunistic_client_config(),
    };
    let retried = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for (marker, _) in &bodies {
        let (marker, settings, retried) = (marker.clone(), settings.clone(), retried.clone());
        let addr = contoso.addr;
        senders.spawn(async move {
            let message = build(&marker, size);
            send(addr, &settings, &message, &retried).await
        });
    }
    while let Some(sent) = senders.join_next().await {
        sent??;
    }
    let mailbox = Mailbox {
        binary: binary.to_path_buf(),
        config: fabrikam.config.clone(),
        data: fabrikam.data.clone(),
    };
    let (received, elapsed) =
        tokio::task::spawn_blocking(move || wait_for(&mailbox, bodies, start)).await??;
    let peaks = Peaks {
        contoso: peak_rss(&contoso)?,
        fabrikam: peak_rss(&fabrikam)?,
    };
    drop((contoso, fabrikam));
    anyhow::ensure!(received == clients, "{received} of {clients} arrived");
    Ok((peaks, elapsed, retried.load(Ordering::Relaxed)))
}

/// Sends one message, again after a pause while the server answers with a temporary refusal
/// (its in-flight budget is full), as an MTA would.
async fn send(
    addr: SocketAddr,
    settings: &ClientSettings,
    message: &[u8],
    retried: &AtomicUsize,
) -> anyhow::Result<()> {
    let to = [TO.to_string()];
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    loop {
        let mut conn = Connection::open(addr, "mx.contoso.test", settings, TlsMode::Opportunistic)
            .await
            .context("connect to contoso")?;
        let policy = TlsPolicy::opportunistic(settings.tls.clone());
        conn.authorize(&policy)?;
        let outcome = conn.send(&policy, FROM, &to, message).await;
        conn.quit().await;
        let refusal = match outcome {
            Ok(replies) => match replies.into_iter().next() {
                Some(Err(reply)) => (reply.is_permanent(), reply.to_string()),
                _ => return Ok(()),
            },
            Err(e) => (e.is_permanent(), e.to_string()),
        };
        match refusal {
            (false, _) if Instant::now() < deadline => {
                retried.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            (_, reply) => bail!("contoso refused the message: {reply}"),
        }
    }
}

/// bob@fabrikam.test's mailbox, read through the servers' own binary (`mailbox list|read`), so
/// that a build with another store format can be measured too.
struct Mailbox {
    binary: PathBuf,
    config: PathBuf,
    data: PathBuf,
}

impl Mailbox {
    fn run(&self, args: &[&str]) -> anyhow::Result<Vec<u8>> {
        let out = Command::new(&self.binary)
            .arg("mailbox")
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .arg("--data-dir")
            .arg(&self.data)
            .args(["--mailbox", TO])
            .stderr(Stdio::null())
            .output()?;
        anyhow::ensure!(out.status.success(), "mailbox {args:?} failed");
        Ok(out.stdout)
    }

    /// The ids of the messages in the mailbox.
    fn ids(&self) -> anyhow::Result<Vec<String>> {
        let list: Vec<serde_json::Value> = serde_json::from_slice(&self.run(&["list", "--json"])?)?;
        Ok(list
            .iter()
            .filter_map(|m| m.get("id").and_then(|id| id.as_str()).map(str::to_string))
            .collect())
    }

    fn read(&self, id: &str) -> anyhow::Result<Vec<u8>> {
        self.run(&["read", "--id", id])
    }
}

/// Waits until every marker's message is in bob's mailbox, then checks that each attachment is
/// intact; returns how many are, and how long after `start` the last one arrived.
fn wait_for(
    mailbox: &Mailbox,
    bodies: Vec<(String, [u8; 32])>,
    start: Instant,
) -> anyhow::Result<(usize, Duration)> {
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    let mut ids = mailbox.ids()?;
    while ids.len() < bodies.len() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} of {} messages arrived within {DELIVERY_TIMEOUT:?}",
            ids.len(),
            bodies.len()
        );
        std::thread::sleep(Duration::from_millis(100));
        ids = mailbox.ids()?;
    }
    let arrived = start.elapsed();
    let mut intact = 0;
    for id in ids {
        let message = mailbox.read(&id)?;
        let head = &message[..message.len().min(64 * 1024)];
        let Some((marker, digest)) = bodies
            .iter()
            .find(|(m, _)| contains(head, format!("Subject: {m}\r\n").as_bytes()))
        else {
            bail!("a message that was not sent arrived");
        };
        let body = attachment_of(&message, marker)
            .with_context(|| format!("{marker}: the attachment is missing"))?;
        anyhow::ensure!(
            Sha256::digest(body).as_slice() == digest,
            "{marker}: the attachment changed on the way"
        );
        intact += 1;
    }
    Ok((intact, arrived))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The base64 text of the attachment: `size` bytes of message in all, lines of 76.
fn attachment_body(marker: &str, size: usize) -> Vec<u8> {
    use base64::Engine;
    let head_len = header(marker).len() + closing(marker).len();
    let lines = size.saturating_sub(head_len) / 78;
    let mut seed = Sha256::digest(marker.as_bytes()).to_vec();
    let mut body = Vec::with_capacity(lines * 78);
    for _ in 0..lines {
        seed = Sha256::digest(&seed).to_vec();
        let raw: Vec<u8> = seed.iter().chain(seed.iter()).copied().take(57).collect();
        body.extend_from_slice(
            base64::engine::general_purpose::STANDARD
                .encode(raw)
                .as_bytes(),
        );
        body.extend_from_slice(b"\r\n");
    }
    body
}

fn header(marker: &str) -> String {
    format!(
        "From: <{FROM}>\r\nTo: <{TO}>\r\nSubject: {marker}\r\nMessage-ID: <{marker}@bench.test>\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b-{marker}\"\r\n\r\n\
         --b-{marker}\r\nContent-Type: text/plain\r\n\r\nThe attachment is {marker}.bin.\r\n\
         --b-{marker}\r\nContent-Type: application/octet-stream; name=\"{marker}.bin\"\r\n\
         Content-Disposition: attachment; filename=\"{marker}.bin\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n"
    )
}

fn closing(marker: &str) -> String {
    format!("--b-{marker}--\r\n")
}

/// A multipart message of about `size` bytes: a line of text and a base64 attachment.
fn build(marker: &str, size: usize) -> Vec<u8> {
    [
        header(marker).into_bytes(),
        attachment_body(marker, size),
        closing(marker).into_bytes(),
    ]
    .concat()
}

/// The attachment's base64 text inside a delivered message.
fn attachment_of<'m>(message: &'m [u8], marker: &str) -> Option<&'m [u8]> {
    let start_marker = b"Content-Transfer-Encoding: base64\r\n\r\n";
    let start = message
        .windows(start_marker.len())
        .position(|w| w == start_marker)?
        + start_marker.len();
    let end = message.len().checked_sub(closing(marker).len())?;
    message.get(start..end)
}

/// The VmHWM line of /proc/<pid>/status, in bytes.
fn peak_rss(server: &ServeChild) -> anyhow::Result<u64> {
    let path = format!("/proc/{}/status", server.child.id());
    let status = std::fs::read_to_string(&path).with_context(|| path.clone())?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .with_context(|| format!("{path}: no VmHWM line"))?;
    Ok(kib * 1024)
}

/// A loopback port nothing listens on right now.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// contoso and fabrikam from `fixtures`, each routed to the other's port, as child processes.
async fn start_pair(
    binary: &Path,
    fixtures: &Path,
    dir: &Path,
    max_message_size: Option<usize>,
) -> anyhow::Result<(ServeChild, ServeChild)> {
    let ports = [free_port()?, free_port()?];
    let names = ["contoso", "fabrikam"];
    let mut children = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let other = (format!("{}.test", names[1 - i]), ports[1 - i]);
        let config = write_config(fixtures, dir, name, ports[i], &other, max_message_size)?;
        children.push(spawn(binary, name, config, dir, ports[i])?);
    }
    let fabrikam = children.pop().context("two servers")?;
    let contoso = children.pop().context("two servers")?;
    for server in [&contoso, &fabrikam] {
        wait_ready(server).await?;
    }
    Ok((contoso, fabrikam))
}

/// The fixture configuration with absolute paths, its listener on `port`, no admin endpoint,
/// and the other domain routed to its port.
fn write_config(
    fixtures: &Path,
    dir: &Path,
    name: &str,
    port: u16,
    (other_domain, other_port): &(String, u16),
    max_message_size: Option<usize>,
) -> anyhow::Result<PathBuf> {
    let source = fixtures.join(format!("{name}.toml"));
    let text = std::fs::read_to_string(&source).with_context(|| source.display().to_string())?;
    let mut table: toml::Table = toml::from_str(&text)?;
    absolute_paths(&mut table, fixtures);
    table.remove("admin");
    let hop = toml::Value::String(format!("127.0.0.1:{other_port}"));
    let address = toml::Value::String(format!("127.0.0.1:{port}"));
    if let Some(toml::Value::Array(listeners)) = table.get_mut("listener") {
        for l in listeners.iter_mut().filter_map(toml::Value::as_table_mut) {
            l.insert("address".into(), address.clone());
        }
    }
    let dns = entry(&mut table, "dns");
    entry(dns, "static_routes").insert(other_domain.clone(), hop.clone());
    let outbound = table
        .get_mut("connector")
        .and_then(toml::Value::as_table_mut)
        .and_then(|c| c.get_mut("outbound"))
        .and_then(toml::Value::as_array_mut);
    for c in outbound
        .into_iter()
        .flatten()
        .filter_map(toml::Value::as_table_mut)
    {
        if c.contains_key("smart_hosts") {
            c.insert("smart_hosts".into(), toml::Value::Array(vec![hop.clone()]));
        }
    }
    if let Some(max) = max_message_size {
        let max = i64::try_from(max).context("message size")?;
        entry(&mut table, "limits").insert("max_message_size".into(), toml::Value::Integer(max));
    }
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, toml::to_string(&table)?)?;
    Ok(path)
}

/// The table under `key`, made if missing.
fn entry<'t>(table: &'t mut toml::Table, key: &str) -> &'t mut toml::Table {
    let value = table
        .entry(key.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if !value.is_table() {
        *value = toml::Value::Table(toml::Table::new());
    }
    match value {
        toml::Value::Table(t) => t,
        _ => unreachable!("made a table just above"),
    }
}

/// Every string that names an existing file or directory relative to `base` becomes absolute.
fn absolute_paths(table: &mut toml::Table, base: &Path) {
    fn walk(value: &mut toml::Value, base: &Path) {
        match value {
            toml::Value::String(s) if !s.is_empty() && Path::new(s.as_str()).is_relative() => {
                let candidate = base.join(s.as_str());
                if candidate.exists() {
                    *s = candidate.display().to_string();
                }
            }
            toml::Value::Array(items) => items.iter_mut().for_each(|v| walk(v, base)),
            toml::Value::Table(t) => t.iter_mut().for_each(|(_, v)| walk(v, base)),
            _ => {}
        }
    }
    table.iter_mut().for_each(|(_, v)| walk(v, base));
}

fn spawn(
    binary: &Path,
    name: &'static str,
    config: PathBuf,
    dir: &Path,
    port: u16,
) -> anyhow::Result<ServeChild> {
    let data = dir.join(format!("{name}-data"));
    let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
    let child = Command::new(binary)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("start {}", binary.display()))?;
    Ok(ServeChild {
        name,
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        config,
        data,
    })
}

/// Waits for the 220 greeting.
async fn wait_ready(server: &ServeChild) -> anyhow::Result<()> {
    use tokio::io::AsyncReadExt;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(mut tcp) = tokio::net::TcpStream::connect(server.addr).await {
            let mut greeting = [0u8; 3];
            if tcp.read_exact(&mut greeting).await.is_ok() && &greeting == b"220" {
                return Ok(());
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} did not start on {} (see its log)",
            server.name,
            server.addr
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Drop for ServeChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

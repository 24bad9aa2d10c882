//! Several `sealpost serve` nodes of contoso on one PostgreSQL queue, relaying to fabrikam (one
//! node with its encrypted mailbox on disk), and the clients that send through all of them:
//! what the cluster tests share.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sealpost::store::MailStore;

use super::domains::{free_port, open_store, DomainSpec, ServeProcess};
use super::plain_smtp::PlainClient;
use super::postgres::Cluster;

pub const FROM: &str = "alice@contoso.test";
pub const TO: &str = "bob@fabrikam.test";
pub use super::crash_marks::TOKEN_HEADER;
use super::crash_marks::{receiving_id, token_of};

/// A server under test: its config and port, the running process, and its kills.
pub struct Victim {
    pub name: String,
    pub config: PathBuf,
    pub data: PathBuf,
    pub port: u16,
    pub process: Option<ServeProcess>,
    pub kills: usize,
    pub kills_in_flight: usize,
}

impl Victim {
    pub fn start(name: &str, config: PathBuf, port: u16) -> Victim {
        let data = config.with_file_name(format!(
            "{}-data",
            config
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("config name")
        ));
        Victim {
            name: name.to_string(),
            process: Some(ServeProcess::start(&config, port)),
            config,
            data,
            port,
            kills: 0,
            kills_in_flight: 0,
        }
    }

    pub fn kill(&mut self, in_flight: bool) {
        if let Some(p) = self.process.take() {
            p.kill9();
        }
        self.kills += 1;
        self.kills_in_flight += usize::from(in_flight);
    }

    pub fn restart(&mut self) {
        if self.process.is_none() {
            self.process = Some(ServeProcess::start(&self.config, self.port));
        }
    }
}

/// contoso as `nodes` serve processes on `database`, fabrikam as one.
pub struct Setup {
    pub nodes: Vec<Victim>,
    pub fabrikam: Victim,
    pub database: String,
}

impl Setup {
    /// The SMTP addresses of the contoso nodes, in node order.
    pub fn addrs(&self) -> Vec<std::net::SocketAddr> {
        self.nodes
            .iter()
            .map(|n| std::net::SocketAddr::from(([127, 0, 0, 1], n.port)))
            .collect()
    }
}

/// The `[storage]` of node `node_id` on `database`, with `lease` and a command timeout.
pub fn storage_toml(
    cluster: &Cluster,
    database: &str,
    password_file: &Path,
    node_id: &str,
    lease: &str,
) -> String {
    format!(
        "[storage]\nbackend = \"postgres\"\nurl = \"{}\"\npassword_file = \"{}\"\n\
         tls = \"disable\"\nconnect_timeout = \"2s\"\nstatement_timeout = \"4s\"\n\
         lease = \"{lease}\"\nnode_id = \"{node_id}\"\n\n[limits]\ncommand_timeout = \"20s\"\n",
        cluster.url(database),
        password_file.display(),
    )
}

/// Writes the configurations under `dir` (node `i` of contoso in `dir/node<i>/`, each with its
/// own data directory and keystore holding the same service key, since any node opens what
/// another queued) and starts fabrikam, then the nodes.
pub fn start(
    cluster: &Cluster,
    dir: &Path,
    nodes: usize,
    lease: &str,
    concurrency: usize,
) -> Setup {
    let database = cluster.create_database();
    let password = cluster.password_file(dir);
    let fport = free_port();
    let ports: Vec<u16> = (0..nodes).map(|_| free_port()).collect();
    let fabrikam_config = DomainSpec::new("fabrikam", &[TO], fport)
        .route("contoso.test", ports[0])
        .write(dir);
    set_concurrency(&fabrikam_config, concurrency);
    let mut configs = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let home = dir.join(format!("node{}", i + 1));
        std::fs::create_dir_all(&home).expect("node dir");
        let node_id = format!("contoso-{}", i + 1);
        let config = DomainSpec::new("contoso", &[FROM], *port)
            .route("fabrikam.test", fport)
            .toml(&storage_toml(
                cluster, &database, &password, &node_id, lease,
            ))
            .write(&home);
        set_concurrency(&config, concurrency);
        configs.push((node_id, config, *port));
    }
    share_service_key(configs.iter().map(|(_, c, _)| c.as_path()));
    let fabrikam = Victim::start("fabrikam", fabrikam_config, fport);
    let nodes = configs
        .into_iter()
        .map(|(name, config, port)| Victim::start(&name, config, port))
        .collect();
    Setup {
        nodes,
        fabrikam,
        database,
    }
}

fn set_concurrency(config: &Path, concurrency: usize) {
    let text = std::fs::read_to_string(config).expect("read config");
    let text = text.replace(
        "[delivery]\n",
        &format!("[delivery]\nconcurrency = {concurrency}\n"),
    );
    std::fs::write(config, text).expect("write config");
}

/// Makes the first node's service key (in its default keystore, `<data_dir>.keystore`) and copies
/// it into the others'.
pub fn share_service_key<'a>(configs: impl Iterator<Item = &'a Path>) {
    use std::os::unix::fs::DirBuilderExt;
    let keystores: Vec<PathBuf> = configs
        .map(|c| c.with_file_name("contoso-data.keystore"))
        .collect();
    let key =
        sealpost::crypto::keyfile::ServiceKey::load_or_create(&keystores[0]).expect("service key");
    for other in &keystores[1..] {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(other)
            .expect("keystore");
        std::fs::copy(key.path(), other.join("service.key")).expect("copy service key");
    }
}

/// What the clients saw: every attempt made, and those that got 250.
#[derive(Default)]
pub struct Record {
    pub attempted: HashSet<String>,
    pub acknowledged: HashSet<String>,
    /// Temporary refusals (4xx) seen, e.g. while a node starts or the database is down.
    pub refused: usize,
    /// Connections that broke (a node killed).
    pub broken: usize,
    /// The longest wait for the reply to the end of the data (or to a refused command).
    pub slowest: Duration,
}

/// Sends messages one after the other, each to the next node in turn (the next one again when a
/// node does not answer), each retried under a new token until an attempt gets 250; until
/// `sending` turns false and at least `min` were acknowledged. A 5xx fails the test.
pub fn run_client(
    client: usize,
    nodes: &[SocketAddr],
    min: usize,
    record: &Mutex<Record>,
    sending: &AtomicBool,
    deadline: Instant,
) {
    let mut turn = client;
    for m in 0.. {
        if m >= min && !sending.load(Ordering::SeqCst) {
            break;
        }
        let mut attempt = 0;
        loop {
            assert!(
                Instant::now() < deadline,
                "client {client}: message {m} not acknowledged in time"
            );
            turn += 1;
            let addr = nodes[turn % nodes.len()];
            let Ok(mut c) = PlainClient::connect(addr, Duration::from_secs(25)) else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            let token = format!("c{client}-m{m}-a{attempt}");
            attempt += 1;
            lock(record).attempted.insert(token.clone());
            let started = Instant::now();
            let reply = c.send_mail(FROM, TO, &message(&token));
            {
                let mut r = lock(record);
                r.slowest = r.slowest.max(started.elapsed());
            }
            match reply {
                Ok(r) if r.code == 250 => {
                    lock(record).acknowledged.insert(token);
                    c.quit();
                    break;
                }
                Ok(r) if r.code / 100 == 4 => {
                    lock(record).refused += 1;
                    c.quit();
                    std::thread::sleep(Duration::from_millis(100));
                }
                Ok(r) => panic!("client {client}: permanent refusal {r}"),
                Err(e) => {
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut
                    {
                        panic!(
                            "client {client}: no reply within {:?}: {e}",
                            started.elapsed()
                        );
                    }
                    lock(record).broken += 1;
                }
            }
        }
    }
}

pub fn message(token: &str) -> Vec<u8> {
    format!(
        "From: <{FROM}>\r\nTo: <{TO}>\r\nSubject: cluster {token}\r\n{TOKEN_HEADER}{token}\r\n\r\n\
         token {token}\r\nsome text so that the message is not tiny.\r\n"
    )
    .into_bytes()
}

/// What fabrikam's mailbox holds: token → (fabrikam's queue id, the whole text) of each copy;
/// and how many copies could not be read.
pub fn mailbox_copies(fabrikam_data: &Path) -> (HashMap<String, Vec<(String, String)>>, usize) {
    let store = open_store(fabrikam_data, "test");
    let mut copies: HashMap<String, Vec<(String, String)>> = HashMap::new();
    let mut unreadable = 0;
    for info in store.list(TO).expect("mailbox list") {
        match store.read(TO, &info.id) {
            Ok(bytes) => match token_of(&bytes) {
                Some(t) => copies.entry(t).or_default().push((
                    receiving_id(&bytes),
                    String::from_utf8_lossy(&bytes).into_owned(),
                )),
                None => unreadable += 1,
            },
            Err(_) => unreadable += 1,
        }
    }
    (copies, unreadable)
}

/// The figures of a run: (missing tokens, duplicates, relayed twice, stored twice, delivered
/// without an acknowledgement, tokens delivered but never sent).
pub struct Tally {
    pub acknowledged: usize,
    pub delivered: usize,
    pub missing: Vec<String>,
    pub relayed_twice: usize,
    pub stored_twice: usize,
    pub unacked: usize,
    pub unacked_duplicates: usize,
    pub never_sent: Vec<String>,
}

impl Tally {
    pub fn of(record: &Record, copies: &HashMap<String, Vec<(String, String)>>) -> Tally {
        let acknowledged = record.acknowledged.len();
        let missing: Vec<String> = record
            .acknowledged
            .iter()
            .filter(|t| !copies.contains_key(*t))
            .cloned()
            .collect();
        // A duplicate under a second fabrikam queue id was relayed twice by contoso; one under
        // the same id was stored twice by fabrikam's runner.
        let (mut relayed_twice, mut stored_twice) = (0, 0);
        for ids in record.acknowledged.iter().filter_map(|t| copies.get(t)) {
            let distinct: HashSet<&String> = ids.iter().map(|(id, _)| id).collect();
            relayed_twice += distinct.len() - 1;
            stored_twice += ids.len() - distinct.len();
        }
        let unacked: Vec<&String> = copies
            .keys()
            .filter(|t| !record.acknowledged.contains(*t))
            .collect();
        Tally {
            acknowledged,
            delivered: acknowledged - missing.len(),
            missing,
            relayed_twice,
            stored_twice,
            unacked: unacked.len(),
            unacked_duplicates: unacked.iter().map(|t| copies[*t].len() - 1).sum(),
            never_sent: unacked
                .iter()
                .filter(|t| !record.attempted.contains(**t))
                .map(|t| (*t).clone())
                .collect(),
        }
    }

    pub fn duplicates(&self) -> usize {
        self.relayed_twice + self.stored_twice
    }

    /// "acknowledged=… delivered=… missing=… duplicates=… (…%; …) delivered_without_ack=…".
    pub fn line(&self) -> String {
        format!(
            "acknowledged={} delivered={} missing={} duplicates={} ({:.2}%; relayed twice {}, \
             stored twice {}) delivered_without_ack={} (+{} extra copies)",
            self.acknowledged,
            self.delivered,
            self.missing.len(),
            self.duplicates(),
            self.duplicates() as f64 * 100.0 / self.acknowledged.max(1) as f64,
            self.relayed_twice,
            self.stored_twice,
            self.unacked,
            self.unacked_duplicates,
        )
    }
}

/// Rows in the shared queue: (id, state, the node holding it).
pub fn queue_rows(cluster: &Cluster, database: &str) -> Vec<(String, String, String)> {
    cluster
        .psql(
            database,
            "SELECT id, state, coalesce(lease_node, '') FROM queue_message ORDER BY id",
        )
        .lines()
        .filter_map(|l| {
            let mut f = l.split('|');
            Some((
                f.next()?.to_string(),
                f.next()?.to_string(),
                f.next()?.to_string(),
            ))
        })
        .collect()
}

/// Files waiting in a spool (fabrikam's queue on disk).
pub fn spooled_files(data: &Path) -> usize {
    ["incoming", "active", "deferred"]
        .iter()
        .map(|d| {
            std::fs::read_dir(data.join("queue").join(d))
                .map(|d| d.count())
                .unwrap_or(0)
        })
        .sum()
}

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A line on standard error even when the test harness captures `eprintln!` (it captures only
/// the print macros), so that CI logs show the figures of a passing run.
pub fn to_stderr(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Writes `text` to `target/test-reports/<name>` (for CI to show).
pub fn write_report(name: &str, text: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-reports");
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join(name), format!("{text}\n")));
    if let Err(e) = written {
        eprintln!("cannot write {}: {e}", dir.join(name).display());
    }
}

/// Waits until the database queue and fabrikam's spool are empty and the mailbox stopped
/// growing; fails past `deadline`, naming what is left and where the logs are.
pub fn wait_drained(
    cluster: &Cluster,
    database: &str,
    fabrikam_data: &Path,
    deadline: std::time::Instant,
    logs: &Path,
) {
    let mut last_count = usize::MAX;
    loop {
        let count = mailbox_copies(fabrikam_data).0.values().flatten().count();
        let queued = queue_rows(cluster, database).len() + spooled_files(fabrikam_data);
        if queued == 0 && count == last_count {
            return;
        }
        last_count = count;
        assert!(
            std::time::Instant::now() < deadline,
            "not drained: {:?} in the database, {} file(s) in fabrikam's spool; logs in {}",
            queue_rows(cluster, database),
            spooled_files(fabrikam_data),
            logs.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

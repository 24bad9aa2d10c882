//! `sealpost bench cluster`: relay throughput with the queue in PostgreSQL on 1, 2, 3… nodes,
//! next to one node on the local spool, under the load of `bench compare` (SESSIONS clients, one
//! message per connection, split evenly over the nodes) through the same counting sink. Each
//! line gives the end-to-end rate, the CPU per message of the sealpost nodes, of the database
//! server (when it runs on this machine) and of the whole machine, and, for PostgreSQL, the
//! commits and WAL flushes per message: where a message's time goes besides sealpost itself.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

use super::compare::{free_port, load_average, procs, serve_child, stop_child};
use super::load::Load;
use super::sink::Sink;
use crate::config::{Config, StorageSettings};
use crate::pg::{Database, DbError};

#[derive(Args, Debug)]
pub struct ClusterArgs {
    /// The database, `postgresql://user@host:port/dbname` (no password in it); every node
    /// queues there. Its queue should be empty: what is left in it is delivered too.
    #[arg(long)]
    url: String,
    /// A file (mode 0600) holding the database password.
    #[arg(long, value_name = "FILE")]
    password_file: PathBuf,
    /// TLS to the database: require, prefer or disable.
    #[arg(long, default_value = "prefer")]
    tls: String,
    /// Node counts to measure with PostgreSQL (after one node on the local spool).
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    nodes: Vec<usize>,
    #[arg(long, default_value_t = 3000)]
    messages: usize,
    #[arg(long, default_value_t = 20)]
    sessions: usize,
    /// Message size in bytes.
    #[arg(long, default_value_t = 10 * 1024)]
    size: usize,
    /// Plaintext on both hops instead of STARTTLS.
    #[arg(long)]
    plaintext: bool,
    /// The sealpost binary to run as the nodes (default: this one).
    #[arg(long, value_name = "PATH")]
    binary: Option<PathBuf>,
    /// The fixtures directory (certificates).
    #[arg(long, value_name = "DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"))]
    fixtures: PathBuf,
}

/// The database's counters that tell where a message's time goes.
#[derive(Clone, Copy, Default)]
struct DbCounters {
    /// Transactions committed in this database, read-only ones included.
    commits: i64,
    /// The server's next transaction id: it advances only for transactions that write.
    next_xid: i64,
    /// Rows inserted, updated and deleted in this database's tables.
    rows: [i64; 3],
    wal_syncs: i64,
    /// CPU seconds of the server's processes, when it runs on this machine.
    cpu: Option<f64>,
}

pub async fn run(base: &Path, a: ClusterArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        a.nodes.iter().all(|&n| n >= 1),
        "--nodes: counts start at 1"
    );
    let password_file = std::fs::canonicalize(&a.password_file)
        .with_context(|| format!("--password-file {}", a.password_file.display()))?;
    let pki = a.fixtures.join("pki");
    let (cert, key) = (
        pki.join("mx.contoso.test.crt"),
        pki.join("mx.contoso.test.key"),
    );
    let sink_tls = match a.plaintext {
        true => None,
        false => {
            let k = crate::tls::load_certified_key(
                &pki.join("mx.fabrikam.test.crt"),
                &pki.join("mx.fabrikam.test.key"),
            )?;
            let tls = crate::tls::TlsMinVersion::Tls12;
            Some(crate::tls::server_config(&Arc::new(k), tls, false, true)?)
        }
    };
    let sink = Sink::start("127.0.0.1:0".parse()?, sink_tls).await?;
    let tls = match a.plaintext {
        true => String::new(),
        false => format!(
            "[tls]\ncertificate = \"{}\"\nprivate_key = \"{}\"\n\n",
            cert.display(),
            key.display()
        ),
    };
    let routes = format!(
        "[dns.static_routes]\n\"fabrikam.test\" = \"{}\"\n",
        sink.addr
    );
    let storage = format!(
        "\n[storage]\nbackend = \"postgres\"\nurl = \"{}\"\npassword_file = \"{}\"\ntls = \"{}\"\n",
        a.url,
        password_file.display(),
        a.tls
    );
    let (db, version) = open_database(base, &storage).await?;
    print_header(&a, &version);
    let setups = std::iter::once((false, 1)).chain(a.nodes.iter().map(|&n| (true, n)));
    for (postgres, n) in setups {
        let label = if postgres { "postgres" } else { "local" };
        let dir = base.join(format!("{label}-{n}"));
        let rest = format!("{tls}{routes}{}", if postgres { &storage } else { "" });
        share_service_key(&dir, n)?;
        let mut children = Vec::new();
        let mut ports = Vec::new();
        for i in 1..=n {
            let port = free_port()?;
            let child = serve_child(
                a.binary.as_deref(),
                &dir.join(format!("node{i}")),
                port,
                &rest,
            );
            match child {
                Ok(child) => children.push(child),
                Err(e) => {
                    children.into_iter().for_each(stop_child);
                    return Err(e);
                }
            }
            ports.push(port);
        }
        let result = measure(&a, &sink, &ports, &mut children, postgres.then_some(&db)).await;
        children.into_iter().for_each(stop_child);
        let line = result?;
        let nodes = if n == 1 { "node " } else { "nodes" };
        println!("{label:<8} {n} {nodes} {line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// One run: the load split over the nodes, until the sink counted every message. The nodes are
/// stopped before the database's counters are read: a server process publishes its statistics
/// when it exits (an idle one only every ten seconds or so).
async fn measure(
    a: &ClusterArgs,
    sink: &Sink,
    ports: &[u16],
    children: &mut Vec<Child>,
    db: Option<&Arc<Database>>,
) -> anyhow::Result<String> {
    let message = Arc::new(super::build_message(a.size));
    let n = ports.len();
    let db_before = match db {
        Some(db) => Some(counters(db).await?),
        None => None,
    };
    let cpu = || -> f64 { children.iter().map(|c| procs::cpu_seconds(c.id())).sum() };
    let (cpu0, machine0, before) = (cpu(), machine_cpu(), sink.received());
    let start = Instant::now();
    let mut loads = tokio::task::JoinSet::new();
    for (i, &port) in ports.iter().enumerate() {
        let load = Load {
            target: SocketAddr::from(([127, 0, 0, 1], port)),
            messages: a.messages / n + usize::from(i < a.messages % n),
            sessions: (a.sessions / n).max(1),
            starttls: !a.plaintext,
            from: "alice@contoso.test".into(),
            to: "bob@fabrikam.test".into(),
            message: message.clone(),
            tls: crate::tls::opportunistic_client_config(),
        };
        loads.spawn(async move { load.run().await });
    }
    let mut accepted = 0;
    while let Some(done) = loads.join_next().await {
        accepted += done??.messages;
    }
    let accept = accepted as f64 / start.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(600);
    while sink.received() < before + a.messages as u64 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "not every message reached the sink within 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let e2e = a.messages as f64 / start.elapsed().as_secs_f64();
    let per = |seconds: f64| seconds * 1000.0 / a.messages as f64;
    let (sealpost, machine) = (per(cpu() - cpu0), per(machine_cpu() - machine0));
    let mut line = format!(
        "accept {accept:>7.1} msg/s  e2e {e2e:>7.1} msg/s  cpu sealpost {sealpost:>5.2}  machine {machine:>5.2} ms/msg"
    );
    if let (Some(db), Some(before)) = (db, db_before) {
        children.drain(..).for_each(stop_child);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = counters(db).await?;
        let m = a.messages as f64;
        if let (Some(c0), Some(c1)) = (before.cpu, after.cpu) {
            line.push_str(&format!("  database {:>5.2} ms/msg", per(c1 - c0)));
        }
        let per_msg = |n: i64| n as f64 / m;
        // The second reading's own pg_current_xact_id() takes one id.
        let writes = after.next_xid - before.next_xid - 1;
        let rows: Vec<f64> = (0..3)
            .map(|i| per_msg(after.rows[i] - before.rows[i]))
            .collect();
        line.push_str(&format!(
            "  commits {:.1}/msg (writing {:.1}, read-only {:.1}; rows +{:.1} ~{:.1} -{:.1})  \
             wal flushes {:.2}/msg",
            per_msg(after.commits - before.commits),
            per_msg(writes),
            per_msg(after.commits - before.commits - writes),
            rows[0],
            rows[1],
            rows[2],
            per_msg(after.wal_syncs - before.wal_syncs)
        ));
    }
    Ok(line)
}

/// Gives every node of a run the same service key (any node opens what another queued): made
/// in the first node's default keystore (`<data_dir>.keystore`), copied into the others'.
fn share_service_key(dir: &Path, nodes: usize) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let keystore = |i: usize| dir.join(format!("node{i}")).join("data.keystore");
    let key = crate::crypto::keyfile::ServiceKey::load_or_create(&keystore(1))?;
    for i in 2..=nodes {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(keystore(i))?;
        std::fs::copy(key.path(), keystore(i).join("service.key"))?;
    }
    Ok(())
}

/// The database as the nodes' `storage` section names it, and the server's version.
async fn open_database(base: &Path, storage: &str) -> anyhow::Result<(Arc<Database>, String)> {
    let dir = base.join("database");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("sealpost.toml");
    let config = format!(
        "[server]\nhostname = \"bench.contoso.test\"\ndata_dir = \"{}\"\n{storage}",
        dir.join("data").display()
    );
    std::fs::write(&path, config)?;
    let config = Config::load(&path, None)?;
    let StorageSettings::Postgres(settings) = config.storage else {
        anyhow::bail!("{}: no PostgreSQL storage", path.display());
    };
    tokio::task::spawn_blocking(move || {
        let db = Database::open(&settings)?;
        let version = db.run(|pool| async move {
            let c = crate::pg::connection(&pool).await?;
            let row = c
                .query_one("SHOW server_version", &[])
                .await
                .map_err(DbError::from)?;
            Ok(row.get::<_, String>(0))
        })?;
        Ok((db, version))
    })
    .await?
}

/// Commits, transaction ids and row changes in this database and WAL flushes of the server so
/// far; the server's CPU when its processes are on this machine (the backend's parent is the
/// postmaster). Taking the transaction id makes this reading a writing transaction itself.
async fn counters(db: &Arc<Database>) -> anyhow::Result<DbCounters> {
    let db = db.clone();
    let (commits, next_xid, rows, wal_syncs, backend) = tokio::task::spawn_blocking(move || {
        db.run(|pool| async move {
            let c = crate::pg::connection(&pool).await?;
            let row = c
                .query_one(
                    "SELECT (SELECT xact_commit FROM pg_stat_database \
                     WHERE datname = current_database()), \
                     (SELECT wal_sync FROM pg_stat_wal), pg_backend_pid(), \
                     pg_current_xact_id()::text::bigint, \
                     (SELECT ARRAY[coalesce(sum(n_tup_ins), 0), coalesce(sum(n_tup_upd), 0), \
                     coalesce(sum(n_tup_del), 0)]::bigint[] FROM pg_stat_user_tables)",
                    &[],
                )
                .await
                .map_err(DbError::from)?;
            let rows: Vec<i64> = row.get(4);
            Ok((
                row.get::<_, i64>(0),
                row.get::<_, i64>(3),
                [rows[0], rows[1], rows[2]],
                row.get::<_, i64>(1),
                row.get::<_, i32>(2),
            ))
        })
    })
    .await??;
    let cpu = postmaster(backend).map(procs::cpu_seconds);
    Ok(DbCounters {
        commits,
        next_xid,
        rows,
        wal_syncs,
        cpu,
    })
}

/// The parent of a PostgreSQL backend process, when it is a local `postgres` process.
fn postmaster(backend: i32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{backend}/stat")).ok()?;
    let (name, rest) = stat.split_once(") ")?;
    if !name.ends_with("(postgres") {
        return None;
    }
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// CPU seconds the whole machine spent (user, nice, system, interrupts; not idle, I/O wait or
/// time taken by the hypervisor).
fn machine_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .enumerate()
        .filter(|(i, _)| [0, 1, 2, 5, 6].contains(i))
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .sum();
    ticks as f64 / 100.0
}

fn print_header(a: &ClusterArgs, version: &str) {
    println!(
        "cluster: {} messages of {} bytes per run, {} sessions split over the nodes, one message per connection, {}, PostgreSQL {}, {} cores, load {}",
        a.messages,
        super::build_message(a.size).len(),
        a.sessions,
        if a.plaintext { "plaintext both hops" } else { "STARTTLS both hops" },
        version,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
}

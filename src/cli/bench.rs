//! `sealpost bench`: measurements of the real server, relay throughput, a client's latency
//! under slow clients and peak memory with large messages (no timed unit tests).

mod cluster;
mod compare;
mod dkim;
mod idle;
mod imap;
mod keys;
mod keys_store;
mod licensing;
mod load;
mod memory;
mod openssl_speed;
mod relay;
mod sink;
mod slow_clients;
mod smime;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Relay throughput: contoso → fabrikam with STARTTLS on both hops, durable queues and
    /// mailbox delivery, both domains in this process.
    ///
    /// Clients submit MESSAGES messages of SIZE bytes to contoso over CONNECTIONS concurrent
    /// connections (several transactions per connection). Reports the accept rate (250s per
    /// second) and the end-to-end rate (messages in bob@fabrikam.test's mailbox per second).
    Relay {
        #[arg(long, default_value_t = 2000)]
        messages: usize,
        /// Message size in bytes.
        #[arg(long, default_value_t = 10 * 1024)]
        size: usize,
        #[arg(long, default_value_t = 16)]
        connections: usize,
        /// DKIM signing at contoso: the fixture's RSA-2048 key, a fresh Ed25519 key, or none.
        #[arg(long, value_enum, default_value_t = dkim::DkimMode::Rsa)]
        dkim: dkim::DkimMode,
        /// The fixtures directory holding contoso.toml and fabrikam.toml.
        #[arg(long, value_name = "DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"))]
        fixtures: PathBuf,
    },
    /// A well-behaved client's transaction times (p50, p99, max) without and then with SLOW slow
    /// clients holding connections to contoso.
    ///
    /// The good client runs TRANSACTIONS transactions one after the other, each on a new
    /// connection: EHLO, STARTTLS, MAIL, RCPT, DATA of SIZE bytes for bob@fabrikam.test, timed up
    /// to the 250. The slow clients connect from 127.0.0.2, 127.0.0.3, ... (40 per address, under
    /// the default per-address limit), say EHLO, and then send one byte per INTERVAL: half of them
    /// a repeated NOOP command, half message text after DATA. Exits non-zero when a transaction
    /// fails, a slow client gets no greeting, or a message does not arrive.
    SlowClients {
        #[arg(long, default_value_t = 200)]
        slow: usize,
        #[arg(long, default_value_t = 200)]
        transactions: usize,
        /// Message size in bytes.
        #[arg(long, default_value_t = 10 * 1024)]
        size: usize,
        /// Time between two bytes of a slow client.
        #[arg(long, default_value = "1s", value_parser = crate::units::parse_duration)]
        interval: Duration,
        /// The fixtures directory holding contoso.toml and fabrikam.toml.
        #[arg(long, value_name = "DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"))]
        fixtures: PathBuf,
    },
    /// Peak resident memory (VmHWM) of contoso and fabrikam, each a `serve` child process, with
    /// large messages.
    ///
    /// (a) CLIENTS clients at once each send one message of SIZE bytes to contoso for
    /// bob@fabrikam.test (a client answered 4xx tries again after half a second, as an MTA
    /// would); (b) one message of RELAY_SIZE bytes is relayed contoso → fabrikam (both servers
    /// then accept messages that large). Messages are multipart with a base64 attachment; every
    /// one must arrive in bob's mailbox with the attachment's SHA-256 unchanged, or the bench
    /// fails. Each scenario starts both servers afresh, with the fixture configuration on free
    /// ports and without admin endpoints.
    Memory {
        #[arg(long, default_value_t = 50)]
        clients: usize,
        /// Message size in bytes for (a).
        #[arg(long, default_value_t = 30_000_000)]
        size: usize,
        /// Message size in bytes for (b).
        #[arg(long, default_value_t = 50_000_000)]
        relay_size: usize,
        #[arg(long, value_enum, default_value = "both")]
        scenario: memory::Scenario,
        /// The sealpost binary to run as the servers (e.g. an older build to compare with);
        /// default: this one.
        #[arg(long, value_name = "PATH")]
        binary: Option<PathBuf>,
        /// The fixtures directory holding contoso.toml and fabrikam.toml.
        #[arg(long, value_name = "DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"))]
        fixtures: PathBuf,
    },
    /// Use licenses per second from the licensing service, and p50/p99 latency, with READERS
    /// concurrent readers (every access logged and fsynced), next to the bound the RSA work of a
    /// request sets (`openssl speed rsa2048`); REQUESTS in each mode, one line group per mode.
    Licensing {
        #[arg(long, default_value_t = 50)]
        readers: usize,
        #[arg(long, default_value_t = 2000)]
        requests: usize,
        /// How readers connect: a new TLS connection per request, one kept-alive connection
        /// per reader, or both (one after the other).
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "new-connection,keep-alive"
        )]
        mode: Vec<licensing::Mode>,
        /// The fixtures directory (tenant keys, reader certificate, CA).
        #[arg(long, value_name = "DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"))]
        fixtures: PathBuf,
    },
    /// sealpost next to Postfix under the same load in one run: both relay to one counting sink
    /// with the same certificate and queues on the same disk; the load (SESSIONS clients, one
    /// message per connection, MESSAGES per round) goes to Postfix and sealpost in turn for
    /// ROUNDS rounds. Prints per round and as medians (min–max): end-to-end and accept msg/s,
    /// CPU ms per message of the whole MTA, PSS, and the end-to-end ratio. Installs Postfix from
    /// the distribution when missing (needs root); Postfix runs as an instance of its own under
    /// the bench directory, on loopback only.
    Compare {
        #[arg(long, default_value_t = 5000)]
        messages: usize,
        #[arg(long, default_value_t = 20)]
        sessions: usize,
        /// Message size in bytes.
        #[arg(long, default_value_t = 10 * 1024)]
        size: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Plaintext on both hops instead of STARTTLS.
        #[arg(long)]
        plaintext: bool,
        /// Postfix with its defaults instead of its best setting (outbound TLS connection
        /// reuse and TLS session caches).
        #[arg(long)]
        postfix_defaults: bool,
        /// The sealpost binary to run as the server (default: this one).
        #[arg(long, value_name = "PATH")]
        binary: Option<PathBuf>,
        /// The fixtures directory (certificates).
        #[arg(long, value_name = "DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"))]
        fixtures: PathBuf,
    },
    /// Relay throughput with the queue in PostgreSQL on 1, 2, 3… nodes next to one node on the
    /// local spool: the load of `bench compare` split over the nodes, through a counting sink;
    /// per run end-to-end msg/s, CPU ms per message of the nodes, the database server and the
    /// machine, and the database's commits and WAL flushes per message.
    Cluster(cluster::ClusterArgs),
    /// What idle SMTP sessions cost: CONNECTIONS clients each read the greeting, say EHLO and
    /// stay; prints the `serve` child's resident memory before, with all of them idle (and per
    /// session), and every 5 s for a minute after they closed.
    Idle {
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// The sealpost binary to run as the server (default: this one).
        #[arg(long, value_name = "PATH")]
        binary: Option<PathBuf>,
    },
    /// What reading mail over IMAP costs a `serve` child: MESSAGES messages of 10 KB and one of
    /// BIG bytes in an encrypted mailbox; FETCH of the small ones' headers and of the big one over
    /// implicit TLS, timed, with the server's RSS and peak RSS; then CONNECTIONS clients logged in
    /// and idling (LOGIN, SELECT, IDLE) and the memory per connection.
    Imap {
        #[arg(long, default_value_t = 1000)]
        messages: usize,
        #[arg(long, default_value_t = 20 * 1024 * 1024)]
        big: usize,
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// The sealpost binary to run as the server (default: this one).
        #[arg(long, value_name = "PATH")]
        binary: Option<PathBuf>,
        /// The fixtures directory (certificates).
        #[arg(long, value_name = "DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"))]
        fixtures: PathBuf,
    },
    /// S/MIME encryption as `serve` does it between DATA and the queue write (the
    /// `smime_encrypt` rule applied by the cleanup stage, certificate looked up per message) of
    /// MESSAGES messages of SIZE bytes to one RSA-2048 recipient, with each THREADS count; next
    /// to the per-core bound from `openssl speed` (one RSA-2048 public operation plus AES-256
    /// over SIZE bytes).
    Smime {
        #[arg(long, default_value_t = 2000)]
        messages: usize,
        /// Message size in bytes.
        #[arg(long, default_value_t = 10 * 1024)]
        size: usize,
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        threads: Vec<usize>,
        /// AES-256-GCM (AuthEnvelopedData) instead of AES-256-CBC.
        #[arg(long)]
        gcm: bool,
        /// The fixtures directory (pki/smime).
        #[arg(long, value_name = "DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"))]
        fixtures: PathBuf,
    },
    /// Load an SMTP server the way Postfix's smtp-source does, with STARTTLS if asked: SESSIONS
    /// clients at once, one message per connection, until MESSAGES were accepted. Prints the
    /// accept rate. Works against any MTA (sealpost, Postfix, ...).
    Load {
        /// The server, as ADDRESS:PORT.
        #[arg(long)]
        target: std::net::SocketAddr,
        #[arg(long, default_value_t = 5000)]
        messages: usize,
        #[arg(long, default_value_t = 20)]
        sessions: usize,
        /// Message size in bytes.
        #[arg(long, default_value_t = 10 * 1024)]
        size: usize,
        /// STARTTLS on every connection (the server must offer it).
        #[arg(long)]
        starttls: bool,
        #[arg(long, default_value = "alice@contoso.test")]
        from: String,
        #[arg(long, default_value = "bob@fabrikam.test")]
        to: String,
    },
    /// A counting SMTP sink: accepts every message and keeps nothing, printing the count once a
    /// second; with a certificate it offers STARTTLS. Stops after UNTIL messages, or on Ctrl-C.
    Sink {
        /// Where to listen, as ADDRESS:PORT.
        #[arg(long, default_value = "127.0.0.1:2599")]
        listen: std::net::SocketAddr,
        #[arg(long, value_name = "FILE", requires = "private_key")]
        certificate: Option<PathBuf>,
        #[arg(long, value_name = "FILE", requires = "certificate")]
        private_key: Option<PathBuf>,
        #[arg(long)]
        until: Option<u64>,
    },
    /// RSA-OAEP unwraps/s and RSA-PSS signs/s with the tenant key in a file (the fixtures') and
    /// in a PKCS#11 token, with 1 and THREADS threads, OPERATIONS of each per line.
    ///
    /// Without --config, a SoftHSM2 token is initialised in a temporary directory and a 2048-bit
    /// key generated on it; with --config F --pkcs11 URI, the key URI names in F's [pkcs11].
    /// With the temporary token, also the store's root keys: policy-key unwraps and wraps per
    /// second by an AES root key in a file and in the token, and MESSAGES messages written and
    /// read back per second by a store whose policy has file roots, then token roots.
    Keys {
        #[arg(long, default_value_t = 2000)]
        operations: usize,
        /// Thread counts to measure with (sessions come from the token's pool).
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        threads: Vec<usize>,
        /// Messages of 10 KB written and read back per store (file roots, token roots).
        #[arg(long, default_value_t = 500)]
        messages: usize,
        #[arg(long, value_name = "FILE", requires = "pkcs11")]
        config: Option<PathBuf>,
        #[arg(long, value_name = "URI", requires = "config")]
        pkcs11: Option<String>,
        /// The PKCS#11 module for the temporary token.
        #[arg(
            long,
            value_name = "PATH",
            default_value = "/usr/lib/softhsm/libsofthsm2.so"
        )]
        module: PathBuf,
        /// The fixtures directory (the file tenant key).
        #[arg(long, value_name = "DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"))]
        fixtures: PathBuf,
    },
}

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        BenchCommand::Relay {
            messages,
            size,
            connections,
            dkim,
            fixtures,
        } => in_scratch(|base| async move {
            relay::relay(&fixtures, &base, messages, size, connections.max(1), dkim).await
        }),
        BenchCommand::SlowClients {
            slow,
            transactions,
            size,
            interval,
            fixtures,
        } => in_scratch(|base| async move {
            let params = slow_clients::Params {
                slow,
                transactions: transactions.max(1),
                size,
                interval,
            };
            slow_clients::run(&fixtures, &base, params).await
        }),
        BenchCommand::Memory {
            clients,
            size,
            relay_size,
            scenario,
            binary,
            fixtures,
        } => in_scratch(|base| async move {
            let params = memory::Params {
                binary,
                clients: clients.max(1),
                size,
                relay_size,
                scenario,
            };
            memory::run(&fixtures, &base, params).await
        }),
        BenchCommand::Compare {
            messages,
            sessions,
            size,
            rounds,
            plaintext,
            postfix_defaults,
            binary,
            fixtures,
        } => in_scratch(|base| async move {
            let params = compare::Params {
                messages: messages.max(1),
                sessions: sessions.max(1),
                size,
                rounds: rounds.max(1),
                starttls: !plaintext,
                postfix_best: !postfix_defaults,
                binary,
            };
            compare::run(&fixtures, &base, params).await
        }),
        BenchCommand::Cluster(args) => in_scratch(|base| async move { cluster::run(&base, args).await }),
        BenchCommand::Idle {
            connections,
            binary,
        } => in_scratch(|base| async move {
            let params = idle::Params {
                connections: connections.max(1),
                binary,
            };
            idle::run(&base, params).await
        }),
        BenchCommand::Imap {
            messages,
            big,
            connections,
            binary,
            fixtures,
        } => in_scratch(|base| async move {
            let params = imap::Params {
                messages: messages.max(1),
                big: big.max(1000),
                connections,
                binary,
            };
            imap::run(&fixtures, &base, params).await
        }),
        BenchCommand::Smime {
            messages,
            size,
            threads,
            gcm,
            fixtures,
        } => {
            let params = smime::Params {
                messages: messages.max(1),
                size,
                threads,
                gcm,
            };
            smime::run(&fixtures, params)
        }
        BenchCommand::Load {
            target,
            messages,
            sessions,
            size,
            starttls,
            from,
            to,
        } => super::runtime()?.block_on(async move {
            let load = load::Load {
                target,
                messages,
                sessions,
                starttls,
                from,
                to,
                message: Arc::new(build_message(size)),
                tls: crate::tls::opportunistic_client_config(),
            };
            let done = load.run().await?;
            println!(
                "load: {messages} messages of {} bytes to {target}, {sessions} sessions, one message per connection, {}",
                load.message.len(),
                if starttls { "STARTTLS" } else { "plaintext" }
            );
            println!(
                "  accepted: {:>8.2} s  {:>8.1} msg/s",
                done.elapsed.as_secs_f64(),
                done.rate()
            );
            if starttls {
                println!(
                    "  TLS handshakes: {} full, {} resumed",
                    done.handshakes - done.resumed,
                    done.resumed
                );
            }
            Ok(ExitCode::SUCCESS)
        }),
        BenchCommand::Sink {
            listen,
            certificate,
            private_key,
            until,
        } => super::runtime()?.block_on(async move {
            let tls = match (certificate, private_key) {
                (Some(c), Some(k)) => {
                    let key = crate::tls::load_certified_key(&c, &k)?;
                    Some(crate::tls::server_config(
                        &Arc::new(key),
                        crate::tls::TlsMinVersion::Tls12,
                        false,
                        true,
                    )?)
                }
                _ => None,
            };
            let sink = sink::Sink::start(listen, tls).await?;
            println!("sink listening on {}", sink.addr);
            let mut last = u64::MAX;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = tokio::signal::ctrl_c() => break,
                }
                let n = sink.received();
                if n != last {
                    println!("received {n}");
                    last = n;
                }
                if until.is_some_and(|u| n >= u) {
                    break;
                }
            }
            Ok(ExitCode::SUCCESS)
        }),
        BenchCommand::Licensing {
            readers,
            requests,
            mode,
            fixtures,
        } => in_scratch(|base| async move {
            let params = licensing::Params {
                readers: readers.max(1),
                requests,
                modes: mode,
            };
            licensing::run(&fixtures, &base, params).await
        }),
        BenchCommand::Keys {
            operations,
            threads,
            messages,
            config,
            pkcs11,
            module,
            fixtures,
        } => {
            let base = std::env::temp_dir().join(format!("sealpost-bench-{}", std::process::id()));
            let params = keys::Params {
                operations: operations.max(1),
                threads,
                token: config.zip(pkcs11),
                module,
                messages: messages.max(1),
            };
            let result = keys::run(&fixtures, &base, params);
            let _ = std::fs::remove_dir_all(&base);
            result
        }
    }
}

/// Runs a bench on a tokio runtime in a scratch directory of its own, removed afterwards.
fn in_scratch<F, Fut>(bench: F) -> anyhow::Result<ExitCode>
where
    F: FnOnce(PathBuf) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<ExitCode>>,
{
    let base = std::env::temp_dir().join(format!("sealpost-bench-{}", std::process::id()));
    let result = super::runtime()?.block_on(bench(base.clone()));
    let _ = std::fs::remove_dir_all(&base);
    result
}

/// A progress bar on standard error; indicatif draws nothing when that is not a terminal.
fn progress(total: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg:24} [{bar:40}] {pos}/{len} ({per_sec})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}

/// A message of about `size` bytes: headers and 76-character body lines.
fn build_message(size: usize) -> Vec<u8> {
    let mut m =
        b"From: <alice@contoso.test>\r\nTo: <bob@fabrikam.test>\r\nSubject: bench\r\n\r\n".to_vec();
    let line = [b'x'; 76];
    while m.len() < size {
        m.extend_from_slice(&line);
        m.extend_from_slice(b"\r\n");
    }
    m
}

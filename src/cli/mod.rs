//! The command line: one module per subcommand, all parsed here with clap.

#[macro_use]
mod out;

mod bench;
mod check_config;
mod completions;
mod decrypt;
mod demo;
mod health;
mod keys;
mod mailbox;
mod queue;
mod reload;
mod rms;
mod rules;
mod serve;
mod storage;
mod store;
mod tls_check;
mod tls_report;
mod trace;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::telemetry::LogFormat;

/// sealpost — a mail transfer agent with TLS everywhere.
///
/// sealpost accepts mail over SMTP (with STARTTLS), writes every message durably to its queue
/// before answering 250, and delivers it to local mailboxes or to other domains over SMTP with
/// opportunistic STARTTLS. Configuration is one TOML file per server; see README.md.
#[derive(Parser, Debug)]
#[command(name = "sealpost", version, about, long_about)]
pub struct Cli {
    /// Log line format (logs go to standard error). RUST_LOG sets the level, e.g. RUST_LOG=debug.
    #[arg(long, value_enum, global = true, default_value = "text")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the SMTP server and queue runner until SIGINT or SIGTERM.
    ///
    /// Binds every [[listener]], recovers the queue under data_dir (messages accepted before a
    /// crash are delivered), and logs one line per session event and per delivery attempt.
    Serve(ConfigArgs),
    /// Validate a configuration file and the files it names; exit non-zero on any problem.
    ///
    /// Errors name the file, the key and the problem, e.g.
    /// `fixtures/contoso.toml: tls.private_key: file not found: pki/mx.contoso.test.key`.
    CheckConfig(ConfigArgs),
    /// Run the two fixture domains in-process and relay real mail between them over STARTTLS.
    ///
    /// Starts contoso.test and fabrikam.test on free loopback ports with temporary data
    /// directories, sends messages each way over SMTP, shows the TLS version and cipher of each
    /// hop and the delivered messages, then shuts down. Exits 0 when every message arrived.
    Demo(demo::DemoArgs),
    /// Inspect and manage the mail queue (like mailq, postqueue -f, postsuper -d, -h, -H).
    Queue(queue::QueueArgs),
    /// List and read the messages of a local mailbox.
    Mailbox(mailbox::MailboxArgs),
    /// Generate keys and certificates.
    Keys(keys::KeysArgs),
    // about / long_about live on TlsCheckArgs (src/cli/tls_check.rs).
    TlsCheck(tls_check::TlsCheckArgs),
    /// Operate the encrypted mailbox store: rotate keys, move mailboxes, reencrypt, revoke,
    /// verify, check the audit log.
    Store(store::StoreArgs),
    /// Move data between storage backends: `storage migrate --config F` moves the queue from the
    /// spool under data_dir into the [storage] section's PostgreSQL database.
    Storage(storage::StorageArgs),
    // about / long_about live on DecryptArgs (src/cli/decrypt.rs).
    Decrypt(decrypt::DecryptArgs),
    /// Rights protection at the licensing service: revoke a message (`rms revoke --config F
    /// --message-id ID [--unrevoke]`), list the revocations (`rms revocations --config F`) and
    /// show who asked for what (`rms access-log --config F [--message-id ID] [--json]`).
    Rms(rms::RmsArgs),
    /// Measure throughput, latency and memory (`sealpost bench relay|slow-clients|memory --help`).
    Bench(bench::BenchArgs),
    /// Check the transport rules, or show what they would do to a message (nothing is sent).
    ///
    /// `rules check --config F` lists the rules of the config's [rules] dir in evaluation order;
    /// `rules test --config F --eml FILE --from A --to B [--to C ...]` explains, per recipient,
    /// which rules match (and why the others do not) and which actions would be applied.
    Rules(rules::RulesArgs),
    // about / long_about live on HealthArgs (src/cli/health.rs).
    Health(health::HealthArgs),
    // about / long_about live on CompletionsArgs (src/cli/completions.rs).
    Completions(completions::CompletionsArgs),
    // about / long_about live on TraceArgs (src/cli/trace.rs).
    Trace(trace::TraceArgs),
    // about / long_about live on ReloadArgs (src/cli/reload.rs).
    Reload(reload::ReloadArgs),
    /// TLS-RPT (RFC 8460): show the TLS sessions not reported yet (`tls-report show --config
    /// F [--json]`) or send their reports now (`tls-report send --config F`).
    TlsReport(tls_report::TlsReportArgs),
}

/// The configuration file, and where the server keeps its data.
#[derive(Args, Debug, Clone)]
pub struct ConfigArgs {
    /// The configuration file (TOML). Relative paths inside it are relative to the file.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: PathBuf,
    /// Overrides server.data_dir (queue and mailboxes).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// What a command that works on existing data expects to find in the data directory.
#[derive(Debug, Clone, Copy)]
pub enum DataPart {
    /// The mailbox store (`store/index.sqlite`, unless it is in the database).
    Store,
    /// The queue (`queue/`, unless it is in the database).
    Queue,
}

impl ConfigArgs {
    /// Loads and validates the configuration, or prints why not.
    pub fn load(&self) -> Result<Config, ExitCode> {
        Config::load(&self.config, self.data_dir.as_deref()).map_err(|e| {
            eprintln!("sealpost: {e}");
            ExitCode::from(2)
        })
    }

    /// Loads the configuration of a command that reads or changes existing data: a data
    /// directory that does not hold `part` (a typo in `--data-dir`, a server never started) is
    /// refused, naming the path, instead of silently getting an empty store or queue.
    pub fn load_existing(&self, part: DataPart) -> Result<Config, ExitCode> {
        let config = self.load()?;
        let in_database = matches!(config.storage, crate::config::StorageSettings::Postgres(_));
        if in_database {
            // The queue and the mailbox store are in the database, which opening them checks.
            return Ok(config);
        }
        let (path, what) = match part {
            DataPart::Store => (config.data_dir.join("store/index.sqlite"), "mailbox store"),
            DataPart::Queue => (config.data_dir.join("queue"), "queue"),
        };
        if !path.exists() {
            let source = match &self.data_dir {
                Some(_) => "--data-dir".to_string(),
                None => format!("server.data_dir of {}", self.config.display()),
            };
            eprintln!(
                "sealpost: {} holds no {what} ({} is missing): check {source}",
                config.data_dir.display(),
                path.display()
            );
            return Err(ExitCode::from(2));
        }
        Ok(config)
    }
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.command {
        Command::Serve(_) => "info",
        _ => "warn",
    };
    crate::telemetry::init(cli.log_format, level);
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::CheckConfig(args) => check_config::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Queue(args) => queue::run(args),
        Command::Mailbox(args) => mailbox::run(args),
        Command::Keys(args) => keys::run(args),
        Command::TlsCheck(args) => tls_check::run(args),
        Command::Store(args) => store::run(args),
        Command::Storage(args) => storage::run(args),
        Command::Decrypt(args) => decrypt::run(args),
        Command::Rms(args) => rms::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Rules(args) => rules::run(args),
        Command::Health(args) => health::run(args),
        Command::Completions(args) => completions::run(args),
        Command::Trace(args) => trace::run(args),
        Command::Reload(args) => reload::run(args),
        Command::TlsReport(args) => tls_report::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) if out::is_closed_pipe(&e) => ExitCode::from(out::CLOSED_PIPE),
        Err(e) => {
            eprintln!("sealpost: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A multi-threaded tokio runtime for the subcommands that need one.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

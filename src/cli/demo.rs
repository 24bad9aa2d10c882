//! `sealpost demo`: the two fixture domains relaying real mail to each other over STARTTLS.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

use crate::config::{Config, HostPort};
use crate::smtp::client::{ClientSettings, Connection, TlsMode};
use crate::tls::policy::TlsPolicy;

mod open;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// The fixtures directory holding contoso.toml and fabrikam.toml.
    #[arg(long, value_name = "DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"))]
    fixtures: PathBuf,
    /// How long to wait for every message to arrive.
    #[arg(long, default_value = "30s", value_parser = crate::units::parse_duration)]
    timeout: Duration,
    /// contoso's admin endpoint (/metrics, /healthz); fabrikam's takes the next port. A busy
    /// port falls back to a free one.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9025")]
    admin: SocketAddr,
    /// Keep both servers running after the demo (until Ctrl-C), to look at /metrics or send more.
    #[arg(long)]
    keep_running: bool,
}

/// One message the demo sends: submitted to `via`, from `from` to `to`.
struct Send {
    via: usize,
    from: &'static str,
    to: &'static [&'static str],
    subject: &'static str,
}

const SENDS: &[Send] = &[
    Send {
        via: 0,
        from: "alice@contoso.test",
        to: &["bob@fabrikam.test"],
        subject: "[secure] Salary review",
    },
    Send {
        via: 0,
        from: "alice@contoso.test",
        to: &["bob@fabrikam.test"],
        subject: "[protect] Board minutes",
    },
    Send {
        via: 0,
        from: "alice@contoso.test",
        to: &["bob@fabrikam.test"],
        subject: "Quarterly numbers",
    },
    Send {
        via: 0,
        from: "carol@contoso.test",
        to: &["bob@fabrikam.test", "dave@fabrikam.test"],
        subject: "Offsite agenda",
    },
    Send {
        via: 0,
        from: "alice@contoso.test",
        to: &["carol@contoso.test"],
        subject: "Local note",
    },
    Send {
        via: 1,
        from: "bob@fabrikam.test",
        to: &["alice@contoso.test"],
        subject: "Re: Quarterly numbers",
    },
    Send {
        via: 1,
        from: "dave@fabrikam.test",
        to: &["alice@contoso.test", "carol@contoso.test"],
        subject: "Offsite: count me in",
    },
];

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    super::runtime()?.block_on(demo(args))
}

async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let base = std::env::temp_dir().join(format!("sealpost-demo-{}", std::process::id()));
    let result = run_domains(&args, &base).await;
    let _ = std::fs::remove_dir_all(&base);
    result
}

/// The two fixture domains running in-process on free loopback ports, each routed to the other.
pub(super) struct FixturePair {
    pub configs: Vec<Config>,
    pub servers: Vec<crate::app::Server>,
    pub addrs: Vec<SocketAddr>,
}

/// Starts contoso (index 0) and fabrikam (index 1) from `fixtures`, with data under `base`.
pub(super) async fn start_fixture_pair(
    fixtures: &Path,
    base: &Path,
) -> anyhow::Result<FixturePair> {
    start_fixture_pair_with(fixtures, base, None).await
}

/// Like [`start_fixture_pair`], with admin endpoints at `admin` (contoso) and the next port
/// (fabrikam), or on free ports where those are taken.
pub(super) async fn start_fixture_pair_with(
    fixtures: &Path,
    base: &Path,
    admin: Option<SocketAddr>,
) -> anyhow::Result<FixturePair> {
    start_pair(fixtures, base, admin, |_| Ok(())).await
}

/// Like [`start_fixture_pair`], with `tune` applied to the loaded configs (contoso, fabrikam)
/// before the servers start.
pub(super) async fn start_fixture_pair_tuned(
    fixtures: &Path,
    base: &Path,
    tune: impl FnOnce(&mut [Config]) -> anyhow::Result<()>,
) -> anyhow::Result<FixturePair> {
    start_pair(fixtures, base, None, tune).await
}

async fn start_pair(
    fixtures: &Path,
    base: &Path,
    admin: Option<SocketAddr>,
    tune: impl FnOnce(&mut [Config]) -> anyhow::Result<()>,
) -> anyhow::Result<FixturePair> {
    let names = ["contoso", "fabrikam"];
    let fixtures = stage_fixtures(fixtures, base)?;
    let mut configs = Vec::new();
    let mut licensing_ports = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let path = fixtures.join(format!("{name}.toml"));
        let mut config = Config::load(&path, Some(&base.join(name)))?;
        for l in &mut config.listeners {
            l.address = "127.0.0.1:0".parse()?;
        }
        config.operations.admin_listen = admin.map(|mut a| {
            a.set_port(a.port().wrapping_add(i as u16));
            if std::net::TcpListener::bind(a).is_err() {
                a.set_port(0);
            }
            a
        });
        move_licensing(&mut config, &mut licensing_ports)?;
        configs.push(config);
    }
    tune(&mut configs)?;
    // Bind both first, so that each can be routed to the other's actual port.
    let mut bound = Vec::new();
    for c in &configs {
        bound.push(crate::app::bind(c).await?);
    }
    let addrs: Vec<SocketAddr> = bound
        .iter()
        .map(|l| l[0].local_addr())
        .collect::<Result<_, _>>()?;
    for (i, c) in configs.iter_mut().enumerate() {
        let other = addrs[1 - i];
        let other_domain = format!("{}.test", names[1 - i]);
        let hop = HostPort {
            host: other.ip().to_string(),
            port: other.port(),
        };
        for connector in &mut c.outbound_connectors {
            if !connector.smart_hosts.is_empty()
                && connector
                    .recipient_domains
                    .iter()
                    .any(|p| p.matches(&other_domain))
            {
                connector.smart_hosts = vec![hop.clone()];
            }
        }
        c.static_routes.insert(other_domain, hop);
    }
    let mut servers = Vec::new();
    for (c, l) in configs.iter().cloned().zip(bound) {
        servers.push(crate::app::start_with(c, l).await?);
    }
    Ok(FixturePair {
        configs,
        servers,
        addrs,
    })
}

/// Keeps a licensing service on its configured port (contoso: 8443) when that is free and not
/// taken by the other domain, else moves it to a free port; the URL publishing licenses name
/// follows, so readers reach the service actually listening.
fn move_licensing(config: &mut Config, taken: &mut Vec<u16>) -> anyhow::Result<()> {
    let Some(licensing) = config.rms_licensing.as_mut() else {
        return Ok(());
    };
    let Some(service) = licensing.service.as_mut() else {
        return Ok(());
    };
    let mut listen = service.listen;
    listen.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    if taken.contains(&listen.port()) || std::net::TcpListener::bind(listen).is_err() {
        let free = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
            .context("finding a free port for the licensing service")?;
        listen.set_port(free.local_addr()?.port());
    }
    taken.push(listen.port());
    service.listen = listen;
    licensing.url = format!("https://{listen}");
    Ok(())
}

/// Copies the fixtures (and the rules beside them, which the configs name as `../rules`) under
/// `base`, with private keys made 0600: git does not keep file modes, and the servers rightly
/// warn about a key that others can read. Returns the copy of `fixtures`.
pub(in crate::cli) fn stage_fixtures(fixtures: &Path, base: &Path) -> anyhow::Result<PathBuf> {
    let staged = base.join("fixtures");
    copy_tree(fixtures, &staged)?;
    if let Some(rules) = fixtures.parent().map(|p| p.join("rules")) {
        if rules.is_dir() {
            copy_tree(&rules, &base.join("rules"))?;
        }
    }
    Ok(staged)
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type()?.is_dir() {
            copy_tree(&src, &dst)?;
            continue;
        }
        std::fs::copy(&src, &dst).with_context(|| format!("copying {}", src.display()))?;
        let private = matches!(
            dst.extension().and_then(|e| e.to_str()),
            Some("key" | "pem" | "p12" | "token")
        );
        let mode = if private { 0o600 } else { 0o644 };
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

async fn run_domains(args: &DemoArgs, base: &Path) -> anyhow::Result<ExitCode> {
    let FixturePair {
        configs,
        servers,
        addrs,
    } = start_fixture_pair_with(&args.fixtures, base, Some(args.admin)).await?;
    for (i, name) in ["contoso", "fabrikam"].iter().enumerate() {
        let admin = servers[i]
            .admin_addr()
            .map(|a| format!(", metrics at http://{a}/metrics"))
            .unwrap_or_default();
        let licensing = servers[i]
            .licensing_addr()
            .map(|a| format!(", licensing service at https://{a}"))
            .unwrap_or_default();
        outln!(
            "{:<14} mx.{name}.test   listening on {}{admin}{licensing}",
            format!("{name}.test"),
            addrs[i]
        );
    }
    outln!();
    let mut traced_id = None;

    let settings = ClientSettings {
        helo_name: "demo-client.test".into(),
        timeout: Duration::from_secs(10),
        tls: crate::tls::opportunistic_client_config(),
    };
    for s in SENDS {
        let name = &configs[s.via].hostname;
        let mut conn = Connection::open(addrs[s.via], name, &settings, TlsMode::Opportunistic)
            .await
            .with_context(|| format!("connecting to {name}"))?;
        let to: Vec<String> = s.to.iter().map(|t| t.to_string()).collect();
        let message_id = crate::mail::new_queue_id();
        if s.subject == "Quarterly numbers" {
            traced_id = Some(format!("{message_id}@demo-client.test"));
        }
        let message = format!(
            "From: <{}>\r\nTo: {}\r\nSubject: {}\r\nDate: {}\r\nMessage-ID: <{}@demo-client.test>\r\n\r\nHello from the sealpost demo.\r\n",
            s.from,
            s.to.iter().map(|t| format!("<{t}>")).collect::<Vec<_>>().join(", "),
            s.subject,
            chrono::Utc::now().to_rfc2822(),
            message_id,
        );
        let policy = TlsPolicy::opportunistic(settings.tls.clone());
        conn.authorize(&policy)?;
        let replies = conn.send(&policy, s.from, &to, message.as_bytes()).await?;
        let tls = conn
            .tls()
            .map(|t| t.to_string())
            .unwrap_or_else(|| "no TLS".into());
        conn.quit().await;
        for (rcpt, reply) in to.iter().zip(&replies) {
            match reply {
                Ok(r) => outln!("submitted to {name} ({tls}): {} -> {rcpt}: {r}", s.from),
                Err(r) => anyhow::bail!("{name} refused {rcpt}: {r}"),
            }
        }
    }

    let expected: Vec<(usize, &str)> = SENDS
        .iter()
        .flat_map(|s| {
            s.to.iter()
                .map(|t| (if t.ends_with("@contoso.test") { 0 } else { 1 }, *t))
        })
        .collect();
    let deadline = Instant::now() + args.timeout;
    let mut code = ExitCode::SUCCESS;
    loop {
        let mut missing = 0;
        for mailbox in unique(&expected) {
            let (server, addr) = mailbox;
            let want = expected.iter().filter(|e| e.1 == addr).count();
            if servers[server].store().list(addr)?.len() < want {
                missing += 1;
            }
        }
        if missing == 0 {
            break;
        }
        if Instant::now() > deadline {
            outln!(
                "\n{missing} mailbox(es) did not receive everything within {:?}",
                args.timeout
            );
            code = ExitCode::FAILURE;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    outln!("\nDelivered messages:");
    let readers = open::Readers {
        fixtures: base.join("fixtures"),
        cache: base.join("license-cache"),
    };
    let mut not_opened = 0;
    for (server, addr) in unique(&expected) {
        let store = servers[server].store();
        for summary in store.list(addr)? {
            let bytes = store.read(addr, &summary.id)?;
            outln!(
                "\n  {addr}  [{}]  \"{}\" from {}",
                summary.id,
                summary.subject,
                summary.from
            );
            for hop in hops(&bytes) {
                outln!("    hop: {hop}");
            }
            if let Some(results) = auth_results(&bytes) {
                outln!("    auth: {results}");
            }
            if let Some(shown) = readers.open(addr, &bytes).await {
                for line in &shown.lines {
                    outln!("    {line}");
                }
                not_opened += usize::from(shown.failed);
            }
        }
    }
    if not_opened > 0 {
        outln!("\n{not_opened} protected message(s) did not open as their recipients expect");
        code = ExitCode::FAILURE;
    }
    show_operations(&servers, &configs, traced_id.as_deref()).await;
    if args.keep_running {
        outln!("\nBoth servers keep running; Ctrl-C stops them.");
        tokio::signal::ctrl_c().await?;
    }
    for s in servers {
        s.shutdown().await;
    }
    if code == ExitCode::SUCCESS {
        outln!(
            "\nAll {} deliveries arrived; every hop above shows its TLS version and cipher.",
            expected.len()
        );
    }
    Ok(code)
}

/// What an admin sees: contoso's metrics (a few counters) and the trace of one relayed message
/// across both servers.
async fn show_operations(servers: &[crate::app::Server], configs: &[Config], traced: Option<&str>) {
    if let Some(addr) = servers[0].admin_addr() {
        match crate::admin::request(addr, hyper::Method::GET, "/metrics", None).await {
            Ok((_, body)) => {
                outln!("\nMetrics of mx.contoso.test (curl http://{addr}/metrics), a selection:");
                for line in body.lines().filter(|l| {
                    l.starts_with("sealpost_messages_")
                        || l.starts_with("sealpost_tls_handshakes_total")
                        || l.starts_with("sealpost_encryption_operations_total")
                        || l.starts_with("sealpost_dkim_signatures_total")
                }) {
                    outln!("  {line}");
                }
            }
            Err(e) => outln!("\nmetrics not available: {e:#}"),
        }
    }
    if let Some(id) = traced {
        outln!("\nMessage trace (sealpost trace --config contoso.toml --config fabrikam.toml --message-id '<{id}>'):\n");
        let logs: Vec<_> = configs
            .iter()
            .filter_map(|c| c.operations.trace_log.clone())
            .collect();
        super::trace::print_for(&logs, id);
    }
}

fn unique<'a>(expected: &[(usize, &'a str)]) -> Vec<(usize, &'a str)> {
    let mut v: Vec<_> = expected.to_vec();
    v.sort();
    v.dedup();
    v
}

/// The Authentication-Results field the receiving server added, on one line.
fn auth_results(message: &[u8]) -> Option<String> {
    let parsed = mail_parser::MessageParser::default().parse_headers(message)?;
    let (_, raw) = parsed
        .headers_raw()
        .find(|(name, _)| name.eq_ignore_ascii_case("Authentication-Results"))?;
    Some(raw.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// One line per Received header, oldest hop first: "from X by Y with ESMTPS (TLSv1.3 with cipher …)".
fn hops(message: &[u8]) -> Vec<String> {
    let Some(parsed) = mail_parser::MessageParser::default().parse_headers(message) else {
        return Vec::new();
    };
    let mut out: Vec<String> = parsed
        .headers_raw()
        .filter(|(name, _)| name.eq_ignore_ascii_case("Received"))
        .map(|(_, raw)| {
            let text = raw.split_whitespace().collect::<Vec<_>>().join(" ");
            let field = |after: &str| {
                text.split_once(after)
                    .and_then(|(_, rest)| rest.split_whitespace().next())
                    .unwrap_or("?")
                    .to_string()
            };
            let tls = text
                .split_once("(using ")
                .and_then(|(_, rest)| rest.split_once(')'))
                .map(|(t, _)| t.to_string())
                .unwrap_or_else(|| "no TLS".into());
            let protocol = text
                .split_once(" by ")
                .and_then(|(_, rest)| rest.split_once(" with "))
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .unwrap_or("?");
            let connector = text
                .split_once("(connector ")
                .and_then(|(_, rest)| rest.split_once(')'))
                .map(|(c, _)| format!(", connector {c}"))
                .unwrap_or_default();
            format!(
                "from {} by {} with {protocol} ({tls}{connector})",
                field("from "),
                field(" by ")
            )
        })
        .collect();
    out.reverse();
    out
}

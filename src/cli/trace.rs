//! `sealpost trace`: follow messages through the trace logs of one or more servers.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::Args;

use crate::config::Config;
use crate::telemetry::trace::message_id_hash;
use crate::telemetry::{TraceEvent, TraceRecord};

/// Show where messages came from, which rules applied, every delivery attempt with its TLS facts
/// and connector, and where each message ended up (like Exchange's message trace).
///
/// Reads the `[trace]` log of each configuration given. With several (say both test domains) a
/// message is followed across servers by its Message-ID, so both hops show. Filters combine:
/// `--message-id` takes a queue id or a Message-ID; `--since` takes a duration ("2h") or an
/// RFC 3339 time.
#[derive(Args, Debug)]
pub struct TraceArgs {
    /// Configuration file(s) whose trace logs to read; repeat to follow messages across servers.
    #[arg(long, short = 'c', value_name = "FILE", required = true)]
    pub config: Vec<PathBuf>,
    /// Overrides server.data_dir: none, or one per --config, paired in the order given
    /// (`--config A --data-dir DA --config B --data-dir DB`).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Vec<PathBuf>,
    /// A queue id or a Message-ID (with or without angle brackets).
    #[arg(long, value_name = "ID")]
    pub message_id: Option<String>,
    /// The envelope sender (MAIL FROM), any case.
    #[arg(long, value_name = "ADDRESS")]
    pub sender: Option<String>,
    /// An envelope recipient (RCPT TO), any case.
    #[arg(long, value_name = "ADDRESS")]
    pub recipient: Option<String>,
    /// Only messages first seen after this: a duration back from now ("30m", "2h") or a time.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Print JSON (an array of messages, each with its hops and records).
    #[arg(long)]
    pub json: bool,
}

/// The records of one queue file on one server.
#[derive(serde::Serialize)]
struct Hop {
    server: String,
    queue_id: String,
    records: Vec<TraceRecord>,
}

/// One message: the hops that share a Message-ID (or a single hop without one).
#[derive(serde::Serialize)]
struct Traced {
    /// The Message-ID when the query named it (the log keeps only its hash).
    #[serde(skip_serializing_if = "Option::is_none")]
    message_id: Option<String>,
    message_id_sha256: Option<String>,
    hops: Vec<Hop>,
}

pub fn run(args: TraceArgs) -> anyhow::Result<ExitCode> {
    if !args.data_dir.is_empty() && args.data_dir.len() != args.config.len() {
        eprintln!(
            "sealpost: give one --data-dir per --config, or none ({} --config, {} --data-dir)",
            args.config.len(),
            args.data_dir.len()
        );
        return Ok(ExitCode::from(2));
    }
    let since = match args.since.as_deref().map(parse_since).transpose() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sealpost: --since: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let mut records = Vec::new();
    for (i, path) in args.config.iter().enumerate() {
        let config = match Config::load(path, args.data_dir.get(i).map(PathBuf::as_path)) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("sealpost: {e}");
                return Ok(ExitCode::from(2));
            }
        };
        let Some(log) = &config.operations.trace_log else {
            eprintln!("sealpost: {}: [trace] is disabled", path.display());
            return Ok(ExitCode::from(2));
        };
        match crate::telemetry::trace::read(log) {
            Ok((mut r, bad)) => {
                if bad > 0 {
                    eprintln!(
                        "sealpost: {}: {bad} unreadable lines skipped",
                        log.display()
                    );
                }
                records.append(&mut r);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => anyhow::bail!("{}: {e}", log.display()),
        }
    }
    let messages = select(group(records), &args, since);
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&messages)?);
    } else if messages.is_empty() {
        outln!("no traced message matches");
    } else {
        for m in &messages {
            print_message(m);
        }
    }
    Ok(if messages.is_empty() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Prints the trace of one message (by Message-ID or queue id) found in `logs`.
pub(super) fn print_for(logs: &[PathBuf], message_id: &str) {
    let mut records = Vec::new();
    for log in logs {
        if let Ok((mut r, _)) = crate::telemetry::trace::read(log) {
            records.append(&mut r);
        }
    }
    let args = TraceArgs {
        config: Vec::new(),
        data_dir: Vec::new(),
        message_id: Some(message_id.to_string()),
        sender: None,
        recipient: None,
        since: None,
        json: false,
    };
    for m in select(group(records), &args, None) {
        print_message(&m);
    }
}

fn parse_since(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text.trim()) {
        return Ok(t.with_timezone(&Utc));
    }
    let back = humantime::parse_duration(text.trim())
        .map_err(|_| format!("neither a duration (\"2h\") nor an RFC 3339 time: {text:?}"))?;
    let back = chrono::Duration::from_std(back).map_err(|e| e.to_string())?;
    Ok(Utc::now() - back)
}

/// Hops by (server, queue id), then hops joined by Message-ID, ordered by first record.
fn group(records: Vec<TraceRecord>) -> Vec<Traced> {
    let mut hops: BTreeMap<(String, String), Vec<TraceRecord>> = BTreeMap::new();
    for r in records {
        hops.entry((r.server.clone(), r.queue_id.clone()))
            .or_default()
            .push(r);
    }
    let mut by_message: BTreeMap<String, Traced> = BTreeMap::new();
    for ((server, queue_id), mut records) in hops {
        records.sort_by_key(|r| r.time);
        let hash = records
            .iter()
            .find_map(|r| r.message_id_hash().map(str::to_string));
        let key = match &hash {
            Some(m) => format!("m:{m}"),
            None => format!("q:{server}/{queue_id}"),
        };
        by_message
            .entry(key)
            .or_insert_with(|| Traced {
                message_id: None,
                message_id_sha256: hash.clone(),
                hops: Vec::new(),
            })
            .hops
            .push(Hop {
                server,
                queue_id,
                records,
            });
    }
    let mut out: Vec<Traced> = by_message.into_values().collect();
    for m in &mut out {
        m.hops.sort_by_key(first_time);
    }
    out.sort_by_key(|m| m.hops.first().map(first_time));
    out
}

fn first_time(h: &Hop) -> DateTime<Utc> {
    h.records.first().map(|r| r.time).unwrap_or_default()
}

fn select(all: Vec<Traced>, args: &TraceArgs, since: Option<DateTime<Utc>>) -> Vec<Traced> {
    let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    let strip = |s: &str| {
        s.trim()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_string()
    };
    let wanted = args.message_id.as_deref().map(strip);
    let wanted_hash = wanted.as_deref().map(message_id_hash);
    all.into_iter()
        .filter(|m| {
            let id_ok = wanted.as_deref().is_none_or(|want| {
                m.message_id_sha256 == wanted_hash || m.hops.iter().any(|h| h.queue_id == want)
            });
            let received = || {
                m.hops
                    .iter()
                    .flat_map(|h| &h.records)
                    .filter_map(|r| match &r.event {
                        TraceEvent::Received { from, to, .. } => Some((from, to)),
                        _ => None,
                    })
            };
            let sender_ok = args
                .sender
                .as_deref()
                .is_none_or(|want| received().any(|(from, _)| eq(from, want)));
            let rcpt_ok = args.recipient.as_deref().is_none_or(|want| {
                received().any(|(_, to)| to.iter().any(|t| eq(t, want)))
                    || m.hops.iter().flat_map(|h| &h.records).any(
                        |r| matches!(&r.event, TraceEvent::Delivery { to, .. } if eq(to, want)),
                    )
            });
            let since_ok = since.is_none_or(|s| m.hops.iter().any(|h| first_time(h) >= s));
            id_ok && sender_ok && rcpt_ok && since_ok
        })
        .map(|mut m| {
            if m.message_id_sha256.is_some() && m.message_id_sha256 == wanted_hash {
                m.message_id = wanted.clone();
            }
            m
        })
        .collect()
}

fn print_message(m: &Traced) {
    match (&m.message_id, &m.message_id_sha256) {
        (Some(id), _) => outln!("Message-ID <{id}>"),
        (None, Some(hash)) => outln!("Message-ID sha256:{}…", &hash[..hash.len().min(16)]),
        (None, None) => outln!("Message without Message-ID"),
    }
    for hop in &m.hops {
        outln!("  {}  queue id {}", hop.server, hop.queue_id);
        for r in &hop.records {
            outln!(
                "    {}  {}",
                r.time.format("%Y-%m-%d %H:%M:%S%.3f"),
                describe(&r.event)
            );
        }
    }
    outln!();
}

fn describe(event: &TraceEvent) -> String {
    let tls = |t: &Option<crate::telemetry::trace::TraceTls>| match t {
        Some(t) => format!("{} {}", t.version, t.cipher),
        None => "no TLS".to_string(),
    };
    match event {
        TraceEvent::Received {
            from,
            to,
            client,
            helo,
            protocol,
            tls: t,
            connector,
            authenticated,
            rules,
            size,
            chunking,
            requiretls,
            tls_required_no,
            ..
        } => {
            let mut s = format!(
                "received from {helo} [{client}] with {protocol}, {}; from <{from}> to {}; {size} bytes",
                tls(t),
                to.iter().map(|a| format!("<{a}>")).collect::<Vec<_>>().join(", ")
            );
            if let Some(c) = connector {
                s.push_str(&format!("; inbound connector {c}"));
            }
            if let Some(u) = authenticated {
                s.push_str(&format!("; authenticated as {u}"));
            }
            if *chunking {
                s.push_str("; in BDAT chunks");
            }
            if *requiretls {
                s.push_str("; REQUIRETLS");
            } else if *tls_required_no {
                s.push_str("; TLS-Required: No");
            }
            s.push_str(&match rules.is_empty() {
                true => "; no transport rule applied".to_string(),
                false => format!("; rules {}", rules.join(", ")),
            });
            s
        }
        TraceEvent::Delivery {
            to,
            route,
            relay,
            relay_name,
            tls: t,
            connector,
            verification,
            requiretls,
            result,
            detail,
        } => {
            if route == "local" {
                return format!("{result} <{to}> to the local mailbox: {detail}");
            }
            let mut s = format!("{result} <{to}>");
            if let Some(addr) = relay {
                let name = relay_name.as_deref().unwrap_or("?");
                s.push_str(&format!(" via {name} [{addr}], {}", tls(t)));
            }
            if let Some(c) = connector {
                s.push_str(&format!(", outbound connector {c}"));
            }
            if let Some(v) = verification.as_deref().filter(|v| !v.is_empty()) {
                s.push_str(&format!(" ({v})"));
            }
            if *requiretls {
                s.push_str(", REQUIRETLS");
            }
            s.push_str(&format!(": {detail}"));
            s
        }
        TraceEvent::Notification {
            kind,
            notice_id,
            to,
        } => {
            format!("{kind} notification {notice_id} queued for <{to}>")
        }
        TraceEvent::State {
            state,
            next_attempt,
        } => match next_attempt {
            Some(t) => format!("{state}; next attempt {}", t.format("%Y-%m-%d %H:%M:%S")),
            None => format!("final state: {state}"),
        },
    }
}

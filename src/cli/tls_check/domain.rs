//! `sealpost tls-check --domain`: the TLS policy delivery applies to each host of a domain and
//! whether a connection under it passes, asked of the delivery code itself.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use serde::Serialize;

use crate::config::Config;
use crate::delivery::remote::DestinationCheck;
use crate::delivery::{route, Route};

#[derive(Debug, Serialize)]
struct Report {
    domain: String,
    /// `local` (a domain of this server) or `remote`.
    route: String,
    #[serde(flatten)]
    check: Option<DestinationCheck>,
    /// Whether some host would take the mail.
    deliverable: bool,
}

pub fn run(domain: &str, config: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let mut config = match Config::load(config, None) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sealpost: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    // A scratch MTA-STS cache: the check fetches the policy afresh and leaves the server's
    // own cache as it is.
    let scratch = std::env::temp_dir().join(format!("sealpost-tls-check-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    config.data_dir = scratch.clone();
    let result = super::super::runtime()?.block_on(check(domain, &config));
    let _ = std::fs::remove_dir_all(&scratch);
    let report = result?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        out!("{}", text(&report));
    }
    Ok(if report.deliverable {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn check(domain: &str, config: &Config) -> anyhow::Result<Report> {
    let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    let dest = match route(config, &format!("postmaster@{domain}")) {
        Route::Local => {
            return Ok(Report {
                domain,
                route: "local".into(),
                check: None,
                deliverable: true,
            })
        }
        Route::Remote(dest) => dest,
    };
    let remote = crate::app::remote_delivery(config, Arc::default())?;
    let check = remote.check_destination(&dest).await;
    remote.close_idle(true).await;
    let deliverable =
        check.refused.is_none() && check.hosts.iter().any(|h| h.outcome.starts_with("deliver"));
    Ok(Report {
        domain,
        route: "remote".into(),
        check: Some(check),
        deliverable,
    })
}

fn text(r: &Report) -> String {
    let mut out = format!("tls-check --domain {}\n", r.domain);
    let Some(check) = &r.check else {
        out.push_str("  route:         local (a domain of this server; no TLS hop)\n");
        return out;
    };
    out.push_str(&format!("  route:         {}\n", check.destination));
    if let Some(connector) = &check.connector {
        out.push_str(&format!("  connector:     {connector}\n"));
    }
    if let Some(reason) = &check.refused {
        out.push_str(&format!("  outcome:       defer: {reason}\n"));
    }
    for h in &check.hosts {
        let addr = h.address.map(|a| format!(" [{a}]")).unwrap_or_default();
        out.push_str(&format!("  host {}{addr}\n", h.host));
        out.push_str(&format!("    policy:      {} ({})\n", h.policy, h.mode));
        out.push_str(&format!("    source:      {}\n", h.detail));
        if let Some(tls) = &h.tls {
            out.push_str(&format!(
                "    tls:         {} {}\n",
                tls.version, tls.cipher
            ));
        }
        out.push_str(&format!(
            "    check:       {}\n",
            if h.passed { "passed" } else { "not passed" }
        ));
        out.push_str(&format!("    outcome:     {}\n", h.outcome));
    }
    out.push_str(&format!(
        "  deliverable:   {}\n",
        if r.deliverable { "yes" } else { "no" }
    ));
    out
}

//! `sealpost reload --config F`: ask the running server to apply its configuration again,
//! through the admin endpoint (`[admin] listen`), and print whether it was applied or refused.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

/// Make the running server read its configuration again (like SIGHUP), and print the result.
///
/// Certificates, connectors, transport rules, encryption keys and mailboxes are reloaded; open
/// SMTP sessions finish under the configuration they started with. A configuration that does not
/// load is refused by the server with the reason, and the running one stays. Needs
/// `[admin] listen` in the configuration; without it, send SIGHUP (`systemctl reload sealpost`).
/// Exits 0 when applied, 1 when refused, 2 when the server cannot be asked.
#[derive(Args, Debug)]
pub struct ReloadArgs {
    /// The configuration file of the running server (its `[admin] listen` is used).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: PathBuf,
}

pub fn run(args: ReloadArgs) -> anyhow::Result<ExitCode> {
    let addr = match admin_address(&args.config) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sealpost: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let answer =
        super::runtime()?.block_on(crate::admin::request(addr, hyper::Method::POST, "/reload"));
    let (status, body) = match answer {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sealpost: cannot reach the admin endpoint: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    let parsed: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    if status.is_success() {
        let summary = parsed["summary"].as_str().unwrap_or(body.trim());
        println!("reloaded: {summary}");
        Ok(ExitCode::SUCCESS)
    } else {
        let reason = parsed["reason"].as_str().unwrap_or(body.trim());
        println!("refused: {reason}");
        println!("the running configuration stays in force");
        Ok(ExitCode::FAILURE)
    }
}

/// `[admin] listen` of the file. The file may be the broken one being reloaded: then only that
/// key is read, and the server reports the problem.
fn admin_address(path: &std::path::Path) -> anyhow::Result<SocketAddr> {
    if let Ok(config) = crate::config::Config::load(path, None) {
        return config.operations.admin_listen.ok_or_else(|| {
            anyhow::anyhow!(
                "{}: no [admin] listen: send SIGHUP to the server instead",
                path.display()
            )
        });
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", path.display()))?;
    let value: toml::Table = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: not TOML: {}", path.display(), e.message()))?;
    let listen = value
        .get("admin")
        .and_then(|a| a.get("listen"))
        .and_then(|l| l.as_str())
        .ok_or_else(|| anyhow::anyhow!("{}: no [admin] listen", path.display()))?;
    listen.parse().map_err(|_| {
        anyhow::anyhow!(
            "{}: admin.listen: not an address: {listen:?}",
            path.display()
        )
    })
}

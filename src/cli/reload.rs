//! `sealpost reload --config F`: ask the running server to apply its configuration again,
//! through the admin endpoint (`[admin] listen`, with the token of `[admin] token_file`), and
//! print whether it was applied or refused.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use hyper::StatusCode;

/// Make the running server read its configuration again (like SIGHUP), and print the result.
///
/// Certificates, connectors, transport rules, encryption keys and mailboxes are reloaded; open
/// SMTP sessions finish under the configuration they started with. A configuration that does not
/// load is refused by the server with the reason, and the running one stays. Needs
/// `[admin] listen` and `[admin] token_file` in the configuration (the token is sent as a bearer
/// token); without them, send SIGHUP (`systemctl reload sealpost`).
/// Exits 0 when applied, 1 when refused, 2 when the server cannot be asked (no endpoint or token
/// file, the token not accepted, not reachable).
#[derive(Args, Debug)]
pub struct ReloadArgs {
    /// The configuration file of the running server (its `[admin] listen` and `token_file` are
    /// used).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: PathBuf,
}

pub fn run(args: ReloadArgs) -> anyhow::Result<ExitCode> {
    let cannot_ask = |e: &dyn std::fmt::Display| {
        eprintln!("sealpost: {e}");
        Ok(ExitCode::from(2))
    };
    let (addr, token_file) = match admin_target(&args.config) {
        Ok(t) => t,
        Err(e) => return cannot_ask(&e),
    };
    let token = match crate::config::read_token_file(&token_file) {
        Ok(t) => t,
        Err(problem) => {
            let e = format!("{}: admin.token_file: {problem}", args.config.display());
            return cannot_ask(&e);
        }
    };
    let answer = super::runtime()?.block_on(crate::admin::request(
        addr,
        hyper::Method::POST,
        "/reload",
        Some(&token),
    ));
    let (status, body) = match answer {
        Ok(a) => a,
        Err(e) => return cannot_ask(&format!("cannot reach the admin endpoint: {e:#}")),
    };
    let parsed: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let reason = parsed["reason"].as_str().unwrap_or(body.trim());
    if status.is_success() {
        let summary = parsed["summary"].as_str().unwrap_or(body.trim());
        outln!("reloaded: {summary}");
        Ok(ExitCode::SUCCESS)
    } else if matches!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY | StatusCode::INTERNAL_SERVER_ERROR
    ) {
        outln!("refused: {reason}");
        outln!("the running configuration stays in force");
        Ok(ExitCode::FAILURE)
    } else {
        let mut e =
            format!("the admin endpoint at {addr} did not accept the request ({status}): {reason}");
        if status == StatusCode::UNAUTHORIZED {
            e.push_str(&format!(
                "\n(sent the token of {}; if that file changed since the server last loaded its \
                 configuration, send SIGHUP to apply it)",
                token_file.display()
            ));
        }
        cannot_ask(&e)
    }
}

/// Where to ask and with which token: `[admin] listen` (a wildcard address is asked on loopback)
/// and `[admin] token_file` of the file. The file may be the broken one being reloaded: then only
/// those keys are read, and the server reports the problem.
fn admin_target(path: &Path) -> anyhow::Result<(SocketAddr, PathBuf)> {
    let no_listen = || {
        anyhow::anyhow!(
            "{}: no [admin] listen: send SIGHUP to the server instead",
            path.display()
        )
    };
    let no_token = || {
        anyhow::anyhow!(
            "{}: no [admin] token_file, so the server refuses POST /reload: configure one, or \
             send SIGHUP to the server instead",
            path.display()
        )
    };
    let (addr, token_file) = match crate::config::Config::load(path, None) {
        Ok(config) => {
            let addr = config.operations.admin_listen.ok_or_else(no_listen)?;
            let file = config.operations.admin_token_file.ok_or_else(no_token)?;
            (addr, file)
        }
        Err(_) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", path.display()))?;
            let value: toml::Table = toml::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{}: not TOML: {}", path.display(), e.message()))?;
            let admin = value.get("admin");
            let key = |k: &str| admin.and_then(|a| a.get(k)).and_then(|v| v.as_str());
            let listen = key("listen").ok_or_else(no_listen)?;
            let addr = listen.trim().parse().map_err(|_| {
                anyhow::anyhow!(
                    "{}: admin.listen: not an address: {listen:?}",
                    path.display()
                )
            })?;
            let file = Path::new(key("token_file").ok_or_else(no_token)?.trim());
            let dir = path.parent().unwrap_or(Path::new(""));
            (addr, dir.join(file))
        }
    };
    Ok((reachable(addr), token_file))
}

/// A wildcard listen address is reached on the loopback address of its family.
fn reachable(mut addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => addr.set_ip(Ipv4Addr::LOCALHOST.into()),
        IpAddr::V6(ip) if ip.is_unspecified() => addr.set_ip(Ipv6Addr::LOCALHOST.into()),
        _ => {}
    }
    addr
}

//! `sealpost tls-check`: what a server's TLS looks like from outside, graded with reasons; or,
//! with `--domain`, which TLS policy delivery applies to a domain's hosts and its outcome.

mod domain;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Args;
use serde::Serialize;

use crate::net::Stream;
use crate::smtp::client::{ClientError, ClientSettings, Connection, TlsMode};
use crate::tls::inspect::{summarize, CertSummary};
use crate::tls::policy::{check_peer, CertificateFailure, TlsFailure, TlsLevel, TrustAnchors};
use crate::tls::TlsFacts;

/// Check a server's TLS: STARTTLS, versions, cipher, certificate chain, verification, a grade.
///
/// Connects to HOST:PORT (with --starttls: SMTP, EHLO, STARTTLS; without: TLS from the first
/// byte, as on port 465), reports whether STARTTLS is offered, which of TLS 1.3 and 1.2 the
/// server accepts (each probed on its own connection), the negotiated version and cipher and
/// whether it is forward secret, every certificate of the chain (subject, DNS names, issuer, key
/// type and size, signature algorithm, validity), and whether the chain verifies to --ca (or the
/// public roots) for --name (or HOST). The grade is A (verified, TLS 1.3, strong key), B
/// (encrypted and strong, but not verified or no TLS 1.3), C (expiring within 30 days or
/// expired) or F (no STARTTLS, no handshake, RSA under 2048 bits, MD5/SHA-1 signature), with
/// the reasons. Exit status: 0 for A or B, 1 for C or F. TLS 1.0/1.1 are not probed: sealpost's
/// TLS library does not speak them.
///
/// With --domain DOMAIN --config FILE instead of HOST:PORT: routes DOMAIN as the server with
/// that configuration would (connector, static route or MX), decides the TLS policy of each
/// target host as delivery does (a connector's, `dane` from DNSSEC-secure TLSA records,
/// `mta-sts` from the domain's policy, or `opportunistic`), connects to each with STARTTLS
/// under that policy (no mail is sent) and says whether the policy's check passes and what
/// delivery would do. Exit status: 0 when some host would take the mail, 1 otherwise.
#[derive(Args, Debug)]
pub struct TlsCheckArgs {
    /// The server, as HOST:PORT.
    #[arg(required_unless_present = "domain", conflicts_with = "domain")]
    target: Option<String>,
    /// A mail domain: check the policy delivery applies to it (needs --config).
    #[arg(long, value_name = "DOMAIN", requires = "config")]
    domain: Option<String>,
    /// The configuration whose routing, connectors, DANE and MTA-STS settings apply (--domain).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Speak SMTP and upgrade with STARTTLS (port 25/587); without it, TLS from the start.
    #[arg(long)]
    starttls: bool,
    /// Trust anchors (PEM) for verification; default: the public web roots.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// The name the certificate must carry; default: HOST.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// One JSON object instead of the text report.
    #[arg(long)]
    json: bool,
    /// Timeout for each connection and reply.
    #[arg(long, default_value = "10s", value_parser = crate::units::parse_duration)]
    timeout: Duration,
}

#[derive(Debug, Serialize)]
struct Report {
    target: String,
    name: String,
    starttls_offered: Option<bool>,
    tls13: bool,
    tls12: bool,
    version: Option<String>,
    cipher: Option<String>,
    forward_secrecy: Option<bool>,
    chain: Vec<CertSummary>,
    verified: bool,
    verification: String,
    grade: char,
    reasons: Vec<String>,
}

pub fn run(args: TlsCheckArgs) -> anyhow::Result<ExitCode> {
    if let (Some(domain), Some(config)) = (&args.domain, &args.config) {
        return domain::run(domain, config, args.json);
    }
    super::runtime()?.block_on(async move {
        let report = check(&args).await?;
        if args.json {
            outln!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            out!("{}", text(&report));
        }
        Ok(if matches!(report.grade, 'A' | 'B') {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}

async fn handshake(
    addr: SocketAddr,
    name: &str,
    starttls: bool,
    config: std::sync::Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<TlsFacts, ClientError> {
    if starttls {
        let settings = ClientSettings {
            helo_name: "tls-check.sealpost.invalid".into(),
            timeout,
            tls: config,
        };
        let conn = Connection::open(addr, name, &settings, TlsMode::Required).await?;
        let facts = conn.tls().cloned().ok_or(ClientError::NoStartTls)?;
        conn.quit().await;
        return Ok(facts);
    }
    let tcp = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| ClientError::Network(format!("connect to {addr}: timed out")))?
        .map_err(|e| ClientError::Network(format!("connect to {addr}: {e}")))?;
    let server_name = rustls_pki_types::ServerName::try_from(name.to_string())
        .map_err(|_| ClientError::Tls(CertificateFailure::InvalidName(name.to_string()).into()))?;
    let (_, facts) =
        tokio::time::timeout(timeout, Stream::Plain(tcp).connect_tls(config, server_name))
            .await
            .map_err(|_| ClientError::Tls(TlsFailure::Timeout))?
            .map_err(|e| ClientError::Tls(TlsFailure::Handshake(e.to_string())))?;
    Ok(facts)
}

async fn check(args: &TlsCheckArgs) -> anyhow::Result<Report> {
    let target = args.target.clone().unwrap_or_default();
    let (host, _) = target
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("{target}: expected HOST:PORT"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addr = tokio::net::lookup_host(&target)
        .await?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{target}: no address"))?;
    let name = args.name.clone().unwrap_or_else(|| host.to_string());
    let mut report = Report {
        target: target.clone(),
        name: name.clone(),
        starttls_offered: args.starttls.then_some(true),
        tls13: false,
        tls12: false,
        version: None,
        cipher: None,
        forward_secrecy: None,
        chain: Vec::new(),
        verified: false,
        verification: String::new(),
        grade: 'F',
        reasons: Vec::new(),
    };
    let facts = match handshake(
        addr,
        &name,
        args.starttls,
        crate::tls::opportunistic_client_config(),
        args.timeout,
    )
    .await
    {
        Ok(f) => f,
        Err(ClientError::NoStartTls) => {
            report.starttls_offered = Some(false);
            report
                .reasons
                .push("STARTTLS is not offered: mail to this server travels in clear".into());
            return Ok(report);
        }
        Err(e) => {
            report.reasons.push(format!("no TLS session: {e}"));
            return Ok(report);
        }
    };
    for (version, flag) in [
        (&rustls::version::TLS13, &mut report.tls13),
        (&rustls::version::TLS12, &mut report.tls12),
    ] {
        *flag = handshake(
            addr,
            &name,
            args.starttls,
            crate::tls::probe_client_config(version),
            args.timeout,
        )
        .await
        .is_ok();
    }
    // rustls offers only ECDHE key exchange: every suite it can negotiate is forward secret.
    report.forward_secrecy = Some(true);
    report.version = Some(facts.version.clone());
    report.cipher = Some(facts.cipher.clone());
    for cert in &facts.peer_certificates {
        match summarize(cert) {
            Ok(s) => report.chain.push(s),
            Err(e) => report.reasons.push(e),
        }
    }
    let anchors = match &args.ca {
        Some(path) => crate::tls::load_trust_anchors(path)?,
        None => TrustAnchors::system(),
    };
    match check_peer(
        TlsLevel::VerifyName,
        std::slice::from_ref(&name),
        Some(&anchors),
        &facts.peer_certificates,
        &name,
    ) {
        Ok(detail) => {
            report.verified = true;
            report.verification = detail;
        }
        Err(reason) => report.verification = format!("not verified: {reason}"),
    }
    grade(&mut report);
    Ok(report)
}

fn grade(r: &mut Report) {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut grade = 'A';
    let mut lower = |to: char, reason: String, reasons: &mut Vec<String>| {
        if to > grade {
            grade = to;
        }
        reasons.push(reason);
    };
    let leaf = r.chain.first().cloned();
    if let Some(bits) = leaf
        .as_ref()
        .and_then(|c| c.rsa_bits)
        .filter(|&b| b < crate::tls::MIN_RSA_BITS)
    {
        lower(
            'F',
            format!("RSA key of {bits} bits (minimum 2048)"),
            &mut r.reasons,
        );
    }
    for c in r.chain.iter().filter(|c| c.weak_signature) {
        lower(
            'F',
            format!("{} is signed with {}", c.subject, c.signature),
            &mut r.reasons,
        );
    }
    if let Some(leaf) = &leaf {
        if leaf.not_after_unix < now {
            lower(
                'C',
                format!("certificate expired on {}", leaf.not_after),
                &mut r.reasons,
            );
        } else if leaf.not_after_unix < now + 30 * 86400 {
            lower(
                'C',
                format!("certificate expires on {}", leaf.not_after),
                &mut r.reasons,
            );
        }
    }
    if !r.verified {
        lower('B', r.verification.clone(), &mut r.reasons);
    }
    if !r.tls13 {
        lower('B', "TLS 1.3 is not accepted".into(), &mut r.reasons);
    }
    r.grade = grade;
}

fn text(r: &Report) -> String {
    let yes = |b: bool| if b { "accepted" } else { "refused" };
    let mut out = format!("tls-check {} (name {})\n", r.target, r.name);
    if let Some(offered) = r.starttls_offered {
        out.push_str(&format!(
            "  STARTTLS:      {}\n",
            if offered { "offered" } else { "NOT offered" }
        ));
    }
    if let (Some(v), Some(c)) = (&r.version, &r.cipher) {
        out.push_str(&format!(
            "  TLS 1.3:       {}\n  TLS 1.2:       {}\n",
            yes(r.tls13),
            yes(r.tls12)
        ));
        out.push_str(&format!(
            "  negotiated:    {v} with cipher {c} (forward secrecy: yes)\n"
        ));
    }
    for (i, c) in r.chain.iter().enumerate() {
        out.push_str(&format!("  certificate {i}: {}\n", c.subject));
        out.push_str(&format!("    names:       {}\n", c.dns_names.join(", ")));
        out.push_str(&format!("    issuer:      {}\n", c.issuer));
        out.push_str(&format!("    key:         {}\n", c.key));
        out.push_str(&format!("    signature:   {}\n", c.signature));
        out.push_str(&format!(
            "    valid:       {} to {}\n",
            c.not_before, c.not_after
        ));
        if i == 0 {
            out.push_str(&format!("    pin (cert):  {}\n", c.fingerprint_certificate));
            out.push_str(&format!("    pin (key):   {}\n", c.fingerprint_public_key));
        }
    }
    if !r.verification.is_empty() {
        out.push_str(&format!("  verification:  {}\n", r.verification));
    }
    out.push_str(&format!("  grade:         {}\n", r.grade));
    for reason in &r.reasons {
        out.push_str(&format!("    - {reason}\n"));
    }
    out
}

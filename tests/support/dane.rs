//! The two servers of the DANE tests: fabrikam, every MX host of the signed test zones, and
//! contoso, delivering by MX through NSD (support/dnssec.rs) with the zones' trust anchor.

use std::path::{Path, PathBuf};

use super::dnssec::SignedZones;
use super::domains::{free_port, load, DomainSpec};

/// The test domains fabrikam receives for, each with a mailbox `bob@<domain>`.
pub const DOMAINS: [&str; 11] = [
    "ee.good.dane.test",
    "good.dane.test",
    "plain.dane.test",
    "bogus.dane.test",
    "cx.good.dane.test",
    "cx-plain.good.dane.test",
    "cx-bogus.good.dane.test",
    "cx-only.good.dane.test",
    "ta.good.dane.test",
    "tac.good.dane.test",
    "sts.good.dane.test",
];

/// fabrikam receiving for [`DOMAINS`] on a port of its own; `tls` false: no STARTTLS;
/// `certificate`: a (certificate chain, key) pair instead of mx.fabrikam.test's.
pub async fn fabrikam_with(
    dir: &Path,
    tls: bool,
    certificate: Option<(&Path, &Path)>,
) -> (sealpost::app::Server, PathBuf, u16) {
    let port = free_port();
    let mailboxes: Vec<&'static str> = DOMAINS
        .iter()
        .map(|d| &*Box::leak(format!("bob@{d}").into_boxed_str()))
        .collect();
    let mut f = DomainSpec::new("fabrikam", &mailboxes, port);
    f.extra_domains = DOMAINS.to_vec();
    f.tls = tls;
    let path = f.write(dir);
    if let Some((cert, key)) = certificate {
        let pki = super::domains::pki();
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace(
                &pki.join("mx.fabrikam.test.crt").display().to_string(),
                &cert.display().to_string(),
            )
            .replace(
                &pki.join("mx.fabrikam.test.key").display().to_string(),
                &key.display().to_string(),
            );
        std::fs::write(&path, text).unwrap();
    }
    let config = load(&path);
    let data = config.data_dir.clone();
    (sealpost::app::start(config).await.unwrap(), data, port)
}

/// [`fabrikam_with`] and fabrikam's own certificate.
pub async fn fabrikam(dir: &Path, tls: bool) -> (sealpost::app::Server, PathBuf, u16) {
    fabrikam_with(dir, tls, None).await
}

/// The configuration file of contoso delivering by MX through NSD (trusting the zones'
/// anchor) to port `mx_port`, with `delivery` appended to its `[delivery]` section and
/// `extra` at the end.
pub fn contoso_config(
    dir: &Path,
    zones: &SignedZones,
    mx_port: u16,
    delivery: &str,
    extra: &str,
) -> PathBuf {
    let mut c = DomainSpec::new(
        "contoso",
        &["alice@contoso.test", "tlsrpt@contoso.test"],
        free_port(),
    )
    .toml(&format!("{delivery}\n{extra}"));
    c.nameservers = vec![zones.addr()];
    c.smtp_port = Some(mx_port);
    let path = c.write(dir);
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "[dns]\n",
        &format!("[dns]\ntrust_anchor = \"{}\"\n", zones.anchor().display()),
        1,
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// contoso as [`contoso_config`] makes it, started.
pub async fn contoso_with(
    dir: &Path,
    zones: &SignedZones,
    mx_port: u16,
    delivery: &str,
) -> (sealpost::app::Server, PathBuf) {
    let config = load(&contoso_config(dir, zones, mx_port, delivery, ""));
    let data = config.data_dir.clone();
    (sealpost::app::start(config).await.unwrap(), data)
}

/// [`contoso_with`] and nothing added.
pub async fn contoso(
    dir: &Path,
    zones: &SignedZones,
    mx_port: u16,
) -> (sealpost::app::Server, PathBuf) {
    contoso_with(dir, zones, mx_port, "").await
}

/// contoso's message trace.
pub fn trace_of(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join("trace.jsonl")).unwrap_or_default()
}

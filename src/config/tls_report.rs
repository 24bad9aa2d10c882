//! `[tls_report]`: TLS-RPT (RFC 8460) reports to the domains sealpost delivers to.

use serde::Deserialize;

use super::validate::Checker;
use super::ConfigError;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTlsReport {
    /// Count sessions and send the daily reports (default true).
    pub enabled: Option<bool>,
    /// The From of report messages and their `contact-info`.
    pub from: Option<String>,
    /// The `organization-name` of reports.
    pub organization: Option<String>,
}

/// The TLS-RPT settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsReportSettings {
    pub enabled: bool,
    /// Default: `postmaster@<hostname>`.
    pub from: String,
    /// Default: the host name.
    pub organization: String,
}

pub(super) fn settings(
    c: &Checker,
    raw: Option<&RawTlsReport>,
    hostname: &str,
) -> Result<TlsReportSettings, ConfigError> {
    let raw = raw.map_or_else(RawTlsReport::default, |r| RawTlsReport {
        enabled: r.enabled,
        from: r.from.clone(),
        organization: r.organization.clone(),
    });
    let from = raw.from.unwrap_or_else(|| format!("postmaster@{hostname}"));
    let valid = crate::mail::address::parse_path(&format!("<{from}>"))
        .is_some_and(|(m, rest)| !m.is_empty() && rest.is_empty());
    if !valid {
        return Err(c.err(
            "tls_report.from",
            format!("{from:?} is not an email address"),
        ));
    }
    let organization = raw.organization.unwrap_or_else(|| hostname.to_string());
    if organization.trim().is_empty() || organization.chars().any(char::is_control) {
        return Err(c.err(
            "tls_report.organization",
            "must be a non-empty name without control characters",
        ));
    }
    Ok(TlsReportSettings {
        enabled: raw.enabled.unwrap_or(true),
        from,
        organization,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const BASE: &str = "[server]\nhostname = \"mx.a.test\"\ndata_dir = \"d\"\n";

    fn load(extra: &str) -> Result<Config, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sealpost.toml");
        std::fs::write(&path, format!("{BASE}{extra}")).unwrap();
        Config::load(&path, None).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_bad_values_name_the_key() {
        let c = load("").unwrap();
        assert!(c.tls_report.enabled);
        assert_eq!(c.tls_report.from, "postmaster@mx.a.test");
        assert_eq!(c.tls_report.organization, "mx.a.test");
        let c =
            load("[tls_report]\nenabled = false\nfrom = \"tls@a.test\"\norganization = \"A\"\n")
                .unwrap();
        assert!(!c.tls_report.enabled);
        assert_eq!(c.tls_report.from, "tls@a.test");
        let e = load("[tls_report]\nfrom = \"not an address\"\n").unwrap_err();
        assert!(
            e.contains("tls_report.from") && e.contains("sealpost.toml"),
            "{e}"
        );
        let e = load("[tls_report]\nsend = true\n").unwrap_err();
        assert!(e.contains("send"), "{e}");
    }
}

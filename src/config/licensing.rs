//! `[rms.licensing]`: the licensing service readers ask for use licenses. Its URL goes into
//! every publishing license (version 2); the validity bounds the use licenses it issues. With
//! `listen`, this server also runs the service: its certificate (its own or the server's) and
//! the CAs trusted to name readers, each for its domains, are loaded here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::file::RawRmsLicensing;
use super::validate::{is_domain, Checker};
use super::ConfigError;
use crate::mail::DomainSet;
use crate::tls::policy::TrustAnchors;
use crate::tls::CertifiedKey;

/// `[rms.licensing]`, checked.
#[derive(Clone, Debug)]
pub struct Licensing {
    /// `url`: `https://host[:port][/path]`, written into publishing licenses.
    pub url: String,
    /// `use_license_validity`: how long a use license lasts (default 30 days, at most 365).
    pub use_license_validity: Duration,
    /// Where this server runs the service, if it does.
    pub service: Option<LicensingService>,
}

/// The service this server runs (`listen`).
#[derive(Clone, Debug)]
pub struct LicensingService {
    pub listen: SocketAddr,
    /// The certificate the service presents (its own, or the server's `[tls]` one).
    pub key: Arc<CertifiedKey>,
    /// `[[rms.licensing.trust]]`: who may name readers, and in which domains.
    pub trust: Vec<ReaderCa>,
    /// `passwords`: the tenant's own `[[user]]` entries (names that are addresses in this
    /// server's domains) may prove themselves with their password.
    pub passwords: bool,
}

/// A CA trusted to name readers in `domains`.
#[derive(Clone, Debug)]
pub struct ReaderCa {
    pub domains: DomainSet,
    pub anchors: TrustAnchors,
}

/// The default `use_license_validity`.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(30 * 86400);
/// The longest `use_license_validity`.
pub const MAX_VALIDITY: Duration = Duration::from_secs(365 * 86400);

pub(super) fn validate(
    c: &Checker<'_>,
    raw: Option<&RawRmsLicensing>,
    server_key: Option<&Arc<CertifiedKey>>,
    has_users: bool,
) -> Result<Option<Licensing>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    if let Some(problem) = crate::crypto::rms::licensing_url_problem(&raw.url) {
        return Err(c.err("rms.licensing.url", format!("{:?} {problem}", raw.url)));
    }
    let key = "rms.licensing.use_license_validity";
    let validity = c.duration(key, raw.use_license_validity.as_deref(), DEFAULT_VALIDITY)?;
    if validity < Duration::from_secs(1) || validity > MAX_VALIDITY {
        return Err(c.err(key, "must be from 1s to 365d"));
    }
    Ok(Some(Licensing {
        url: raw.url.clone(),
        use_license_validity: validity,
        service: service(c, raw, server_key, has_users)?,
    }))
}

fn service(
    c: &Checker<'_>,
    raw: &RawRmsLicensing,
    server_key: Option<&Arc<CertifiedKey>>,
    has_users: bool,
) -> Result<Option<LicensingService>, ConfigError> {
    let Some(listen) = &raw.listen else {
        for (key, given) in [
            ("certificate", raw.certificate.is_some()),
            ("private_key", raw.private_key.is_some()),
            ("trust", !raw.trust.is_empty()),
            ("passwords", raw.passwords.is_some()),
        ] {
            if given {
                return Err(c.err(
                    format!("rms.licensing.{key}"),
                    "only used with rms.licensing.listen (this server does not run the service)",
                ));
            }
        }
        return Ok(None);
    };
    let listen = listen.parse::<SocketAddr>().map_err(|_| {
        c.err(
            "rms.licensing.listen",
            format!("expected address:port, got {listen:?}"),
        )
    })?;
    let key = match (&raw.certificate, &raw.private_key) {
        (Some(cert), Some(key)) => {
            let cert = c.existing_file("rms.licensing.certificate", cert)?;
            let key = c.existing_file("rms.licensing.private_key", key)?;
            let loaded = crate::tls::load_certified_key(&cert, &key)
                .map_err(|e| c.err("rms.licensing.certificate", e.to_string()))?;
            Arc::new(loaded)
        }
        (None, None) => server_key.cloned().ok_or_else(|| {
            c.err(
                "rms.licensing.certificate",
                "missing: the service needs a certificate (its own, or the server's [tls] one)",
            )
        })?,
        _ => {
            return Err(c.err(
                "rms.licensing.certificate",
                "certificate and private_key go together",
            ))
        }
    };
    let passwords = raw.passwords.unwrap_or(true);
    if raw.trust.is_empty() && !(passwords && has_users) {
        return Err(c.err(
            "rms.licensing.trust",
            "missing: no CA is trusted to name readers and no [[user]] may use its password, \
             so nobody could get a use license",
        ));
    }
    let mut trust = Vec::new();
    for (i, t) in raw.trust.iter().enumerate() {
        let key = |k: &str| format!("rms.licensing.trust[{i}].{k}");
        if t.domains.is_empty() {
            return Err(c.err(
                key("domains"),
                "missing: the domains this CA may name readers in",
            ));
        }
        for (j, d) in t.domains.iter().enumerate() {
            if !is_domain(&d.to_ascii_lowercase()) {
                return Err(c.err(
                    format!("{}[{j}]", key("domains")),
                    format!("not a domain name: {d:?}"),
                ));
            }
        }
        let path = c.existing_file(&key("ca_file"), &t.ca_file)?;
        let anchors = crate::tls::load_trust_anchors(&path)
            .map_err(|e| c.err(key("ca_file"), e.to_string()))?;
        trust.push(ReaderCa {
            domains: DomainSet::new(&t.domains),
            anchors,
        });
    }
    Ok(Some(LicensingService {
        listen,
        key,
        trust,
        passwords,
    }))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    const BASE: &str = "[server]\nhostname = \"mx.contoso.test\"\ndata_dir = \"d\"\n\
                        [[domain]]\nname = \"contoso.test\"\nencryption_policy = \"none\"\n";

    fn load(rms: &str) -> Result<Config, ConfigError> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        let text = format!("{BASE}[rms]\ntenant_key_dir = \"keys/tenant\"\n{rms}");
        Config::from_toml(&dir.join("licensing.toml"), &text, None)
    }

    #[test]
    fn the_section_is_optional_and_defaults_its_validity() {
        assert!(load("").unwrap().rms_licensing.is_none());
        let c = load("[rms.licensing]\nurl = \"https://127.0.0.1:8443\"\n").unwrap();
        let l = c.rms_licensing.unwrap();
        assert_eq!(l.url, "https://127.0.0.1:8443");
        assert_eq!(l.use_license_validity, DEFAULT_VALIDITY);
        assert!(l.service.is_none());
        let c = load("[rms.licensing]\nurl = \"https://rms.contoso.test/l\"\nuse_license_validity = \"7d\"\n")
            .unwrap();
        let l = c.rms_licensing.unwrap();
        assert_eq!(l.use_license_validity, Duration::from_secs(7 * 86400));
    }

    #[test]
    fn bad_values_and_unknown_keys_are_refused_naming_file_and_key() {
        for (section, key, says) in [
            (
                "url = \"http://rms.contoso.test\"",
                "rms.licensing.url",
                "https://",
            ),
            ("url = \"https://\"", "rms.licensing.url", "no host"),
            (
                "url = \"https://a.test\"\nuse_license_validity = \"400d\"",
                "rms.licensing.use_license_validity",
                "365d",
            ),
            (
                "url = \"https://a.test\"\nuse_license_validity = \"0s\"",
                "rms.licensing.use_license_validity",
                "1s",
            ),
            (
                "url = \"https://a.test\"\nuse_license_validity = \"soon\"",
                "rms.licensing.use_license_validity",
                "",
            ),
        ] {
            let e = load(&format!("[rms.licensing]\n{section}\n")).unwrap_err();
            assert_eq!(e.key, key, "{section}: {e}");
            assert!(e.problem.contains(says), "{section}: {e}");
            assert!(e.to_string().contains("licensing.toml"), "{e}");
        }
        let e = load("[rms.licensing]\nurl = \"https://a.test\"\nlisten_on = \"0.0.0.0:8443\"\n")
            .unwrap_err();
        assert!(e.to_string().contains("listen_on"), "{e}");
        assert!(load("[rms.licensing]\nuse_license_validity = \"1d\"\n").is_err());
    }
}

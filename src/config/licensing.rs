//! `[rms.licensing]`: the licensing service readers ask for use licenses. Its URL goes into
//! every publishing license (version 2); the validity bounds the use licenses it issues.

use std::time::Duration;

use super::file::RawRmsLicensing;
use super::validate::Checker;
use super::ConfigError;

/// `[rms.licensing]`, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Licensing {
    /// `url`: `https://host[:port][/path]`, written into publishing licenses.
    pub url: String,
    /// `use_license_validity`: how long a use license lasts (default 30 days, at most 365).
    pub use_license_validity: Duration,
}

/// The default `use_license_validity`.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(30 * 86400);
/// The longest `use_license_validity`.
pub const MAX_VALIDITY: Duration = Duration::from_secs(365 * 86400);

pub(super) fn validate(
    c: &Checker<'_>,
    raw: Option<&RawRmsLicensing>,
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
        assert_eq!(load("").unwrap().rms_licensing, None);
        let c = load("[rms.licensing]\nurl = \"https://127.0.0.1:8443\"\n").unwrap();
        assert_eq!(
            c.rms_licensing,
            Some(Licensing {
                url: "https://127.0.0.1:8443".into(),
                use_license_validity: DEFAULT_VALIDITY,
            })
        );
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
        let e = load("[rms.licensing]\nurl = \"https://a.test\"\nlisten = \"0.0.0.0:8443\"\n")
            .unwrap_err();
        assert!(e.to_string().contains("listen"), "{e}");
        assert!(load("[rms.licensing]\nuse_license_validity = \"1d\"\n").is_err());
    }
}

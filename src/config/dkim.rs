//! `[[dkim]]` (signing keys per sending domain) and `[sender_auth]` (SPF, DKIM, DMARC and ARC
//! checks of mail from outside, the DMARC policy and its overrides, static TXT records).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::validate::{is_domain, Checker};
use super::ConfigError;
use crate::sender_auth::{DkimKey, DmarcOverride, Signer, Signers, StaticTxt, VerifySettings};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDkim {
    /// The signing domain (`d=`): one of the `[[domain]]` names.
    pub domain: String,
    /// The selector (`s=`): the key is published at `<selector>._domainkey.<domain>`.
    pub selector: String,
    /// PEM private key (RSA ≥ 2048 bits, or Ed25519), mode 0600.
    pub private_key: String,
    /// Header fields to sign (a name listed twice is oversigned); empty: the default list.
    #[serde(default)]
    pub headers: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSenderAuth {
    /// Check mail from outside (not authenticated); default true.
    pub verify: Option<bool>,
    /// The longest the checks of one message may wait for DNS (default "10s"); then the
    /// missing results are temperror and the message is accepted.
    pub timeout: Option<String>,
    /// Apply the published DMARC policy; default true.
    pub dmarc_enforce: Option<bool>,
    /// From: domain → "none" | "quarantine" | "reject" on a DMARC failure.
    #[serde(default)]
    pub dmarc_override: BTreeMap<String, String>,
    /// DNS name → TXT record (SPF, DMARC or DKIM key), answered without DNS.
    #[serde(default)]
    pub static_txt: BTreeMap<String, String>,
    /// Names missing from `static_txt` have no records (no DNS query at all).
    #[serde(default)]
    pub static_only: bool,
}

/// The validated `[sender_auth]`.
#[derive(Debug, Clone, Default)]
pub struct SenderAuth {
    /// Mail from outside is checked and gets an Authentication-Results field.
    pub verify: bool,
    pub settings: VerifySettings,
}

/// Loads the signing keys and the check settings.
pub(super) fn validate(
    c: &Checker,
    dkim: &[RawDkim],
    raw: Option<&RawSenderAuth>,
    local_domains: &crate::mail::DomainSet,
) -> Result<(Signers, SenderAuth), ConfigError> {
    let mut signers = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (i, d) in dkim.iter().enumerate() {
        let key = |k: &str| format!("dkim[{i}].{k}");
        let domain = d.domain.trim().to_ascii_lowercase();
        if !local_domains.contains(&domain) {
            return Err(c.err(
                key("domain"),
                format!("{:?} is not one of the [[domain]] names", d.domain),
            ));
        }
        if !seen.insert(domain.clone()) {
            return Err(c.err(key("domain"), format!("{domain} has two [[dkim]] entries")));
        }
        if !is_domain(&d.selector.to_ascii_lowercase()) {
            return Err(c.err(key("selector"), format!("not a DNS name: {:?}", d.selector)));
        }
        if let Some(h) = d.headers.iter().find(|h| !is_field_name(h)) {
            return Err(c.err(key("headers"), format!("not a header field name: {h:?}")));
        }
        if !d.headers.is_empty() && !d.headers.iter().any(|h| h.eq_ignore_ascii_case("from")) {
            return Err(c.err(key("headers"), "must include From (RFC 6376 §5.4)"));
        }
        let path = c.path(&d.private_key);
        let shown = path.display().to_string();
        super::secret_file::check(&path, &shown, "DKIM private key")
            .map_err(|p| c.err(key("private_key"), p))?;
        let pem = std::fs::read(&path)
            .map_err(|e| c.err(key("private_key"), format!("cannot read {shown}: {e}")))?;
        let loaded = DkimKey::from_pem(&pem)
            .map_err(|e| c.err(key("private_key"), format!("{shown}: {e}")))?;
        signers.push(Signer::new(&domain, &d.selector, loaded, &d.headers));
    }
    let default = RawSenderAuth::default();
    let raw = raw.unwrap_or(&default);
    let mut overrides = BTreeMap::new();
    for (domain, action) in &raw.dmarc_override {
        let k = format!("sender_auth.dmarc_override.{domain:?}");
        if !is_domain(&domain.to_ascii_lowercase()) {
            return Err(c.err(k, "not a domain name"));
        }
        let action = DmarcOverride::parse(action).ok_or_else(|| {
            c.err(
                k.clone(),
                format!("{action:?}: expected \"none\", \"quarantine\" or \"reject\""),
            )
        })?;
        overrides.insert(domain.to_ascii_lowercase(), action);
    }
    let static_txt = StaticTxt::new(&raw.static_txt, raw.static_only)
        .map_err(|(name, p)| c.err(format!("sender_auth.static_txt.{name:?}"), p))?;
    let timeout = c.duration(
        "sender_auth.timeout",
        raw.timeout.as_deref(),
        crate::sender_auth::verify::DEFAULT_TIMEOUT,
    )?;
    if timeout.is_zero() {
        return Err(c.err("sender_auth.timeout", "must be above zero"));
    }
    let auth = SenderAuth {
        verify: raw.verify.unwrap_or(true),
        settings: VerifySettings {
            enforce: raw.dmarc_enforce.unwrap_or(true),
            overrides,
            static_txt,
            timeout,
        },
    };
    Ok((Signers::new(signers), auth))
}

/// RFC 5322 field-name: printable ASCII except colon.
fn is_field_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use crate::config::Config;
    use crate::sender_auth::dkim_sign::{generate_pem, KeyAlgorithm};

    const BASE: &str = "[server]\nhostname = \"mx.a.test\"\ndata_dir = \"d\"\n\
[[domain]]\nname = \"a.test\"\n";

    fn load(dir: &std::path::Path, extra: &str) -> Result<Config, String> {
        let path = dir.join("sealpost.toml");
        std::fs::write(&path, format!("{BASE}{extra}")).unwrap();
        Config::load(&path, None).map_err(|e| e.to_string())
    }

    fn key_file(dir: &std::path::Path, name: &str, pem: &[u8], mode: u32) {
        let p = dir.join(name);
        std::fs::write(&p, pem).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn dkim(domain: &str, key: &str) -> String {
        format!("[[dkim]]\ndomain = \"{domain}\"\nselector = \"s1\"\nprivate_key = \"{key}\"\n")
    }

    #[test]
    fn keys_load_and_bad_ones_name_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let rsa = generate_pem(KeyAlgorithm::Rsa).unwrap();
        key_file(d, "good.key", rsa.as_bytes(), 0o600);
        let c = load(d, &dkim("A.test", "good.key")).unwrap();
        assert_eq!(c.dkim.for_domain("a.test").unwrap().selector, "s1");
        assert!(
            c.sender_auth.verify && c.sender_auth.settings.enforce,
            "on by default"
        );
        assert_eq!(c.sender_auth.settings.timeout.as_secs(), 10);

        let e = load(d, &dkim("b.test", "good.key")).unwrap_err();
        assert!(
            e.contains("sealpost.toml") && e.contains("dkim[0].domain"),
            "{e}"
        );
        assert!(e.contains("not one of the [[domain]] names"), "{e}");

        let e = load(d, &dkim("a.test", "missing.key")).unwrap_err();
        assert!(
            e.contains("dkim[0].private_key") && e.contains("missing.key"),
            "{e}"
        );

        key_file(d, "garbage.key", b"not a key", 0o600);
        let e = load(d, &dkim("a.test", "garbage.key")).unwrap_err();
        assert!(
            e.contains("dkim[0].private_key") && e.contains("garbage.key"),
            "{e}"
        );
        assert!(e.contains("not a PEM private key"), "{e}");

        key_file(d, "open.key", rsa.as_bytes(), 0o666);
        let e = load(d, &dkim("a.test", "open.key")).unwrap_err();
        assert!(e.contains("writable by group or others"), "{e}");

        let short = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:1024",
            ])
            .output()
            .expect("openssl is needed for this test");
        key_file(d, "short.key", &short.stdout, 0o600);
        let e = load(d, &dkim("a.test", "short.key")).unwrap_err();
        assert!(e.contains("short.key") && e.contains("1024 bits"), "{e}");

        let two = format!(
            "{}{}",
            dkim("a.test", "good.key"),
            dkim("a.test", "good.key")
        );
        let e = load(d, &two).unwrap_err();
        assert!(
            e.contains("dkim[1].domain") && e.contains("two [[dkim]]"),
            "{e}"
        );
    }

    #[test]
    fn sender_auth_settings_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let c = load(
            d,
            "[sender_auth]\nverify = true\ndmarc_enforce = false\n\
[sender_auth.dmarc_override]\n\"b.test\" = \"reject\"\n\
[sender_auth.static_txt]\n\"_dmarc.b.test\" = \"v=DMARC1; p=none\"\n",
        )
        .unwrap();
        assert!(c.sender_auth.verify && !c.sender_auth.settings.enforce);
        let c = load(d, "[sender_auth]\nverify = false\ntimeout = \"3s\"\n").unwrap();
        assert!(!c.sender_auth.verify);
        assert_eq!(c.sender_auth.settings.timeout.as_secs(), 3);
        let e = load(d, "[sender_auth]\ntimeout = \"0s\"\n").unwrap_err();
        assert!(
            e.contains("sender_auth.timeout") && e.contains("above zero"),
            "{e}"
        );
        let e = load(d, "[sender_auth]\ntimeout = \"soon\"\n").unwrap_err();
        assert!(e.contains("sender_auth.timeout"), "{e}");
        let e = load(d, "[sender_auth.dmarc_override]\n\"b.test\" = \"drop\"\n").unwrap_err();
        assert!(
            e.contains("sender_auth.dmarc_override") && e.contains("\"drop\""),
            "{e}"
        );
        let e = load(d, "[sender_auth.static_txt]\n\"b.test\" = \"hello\"\n").unwrap_err();
        assert!(
            e.contains("sender_auth.static_txt") && e.contains("b.test"),
            "{e}"
        );
        let e = load(d, "[sender_auth]\nverfy = true\n").unwrap_err();
        assert!(e.contains("verfy"), "{e}");
    }
}

//! `[pkcs11]`: the PKCS#11 module holding token keys and where its PIN comes from (a file or an
//! environment variable, never the config itself); and the tenant key directory, whose token
//! keys need that module.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::validate::Checker;
use super::ConfigError;
use crate::keys::{PinSource, Pkcs11Config};

/// `[pkcs11] module = "...", pin_file = "..." | pin_env = "..."`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPkcs11 {
    pub module: String,
    pub pin_file: Option<String>,
    pub pin_env: Option<String>,
}

/// Checks `[pkcs11]`: the module file exists and exactly one PIN source is named and readable.
pub(super) fn check(
    c: &Checker<'_>,
    raw: Option<&RawPkcs11>,
) -> Result<Option<Pkcs11Config>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    let module = c.existing_file("pkcs11.module", &raw.module)?;
    let (key, pin) = match (&raw.pin_file, &raw.pin_env) {
        (Some(file), None) => ("pkcs11.pin_file", PinSource::File(c.path(file))),
        (None, Some(var)) => ("pkcs11.pin_env", PinSource::Env(var.clone())),
        _ => return Err(c.err("pkcs11", "set one of pin_file or pin_env")),
    };
    pin.read().map_err(|e| c.err(key, e.to_string()))?;
    Ok(Some(Pkcs11Config { module, pin }))
}

/// Checks `[rms] tenant_key_dir`: every key loads (token keys through `pkcs11`) and one is
/// active.
pub(super) fn tenant_key_dir(
    c: &Checker<'_>,
    raw: Option<&super::file::RawRms>,
    pkcs11: Option<&Pkcs11Config>,
) -> Result<Option<PathBuf>, ConfigError> {
    let Some(r) = raw else { return Ok(None) };
    let dir = c.path(&r.tenant_key_dir);
    let keys = crate::crypto::rms::TenantKeys::load_dir_with(&dir, pkcs11)
        .map_err(|e| c.err("rms.tenant_key_dir", format!("{}: {e}", r.tenant_key_dir)))?;
    if keys.active().is_none() {
        let problem = "no active tenant key (sealpost keys tenant activate)";
        return Err(c.err("rms.tenant_key_dir", problem));
    }
    Ok(Some(dir))
}

/// The tenant key directory and `[pkcs11]` of a config file, read without validating the rest
/// (for `keys tenant new --config`, which may run before the directory holds any key).
pub fn key_sections(path: &Path) -> Result<(Option<PathBuf>, Option<Pkcs11Config>), ConfigError> {
    #[derive(Deserialize)]
    struct Sections {
        pkcs11: Option<RawPkcs11>,
        rms: Option<RmsDir>,
    }
    #[derive(Deserialize)]
    struct RmsDir {
        tenant_key_dir: String,
    }
    let whole = |problem: String| ConfigError {
        file: path.to_path_buf(),
        key: String::new(),
        problem,
    };
    let text = std::fs::read_to_string(path).map_err(|e| whole(format!("cannot read: {e}")))?;
    let raw: Sections = toml::from_str(&text).map_err(|e| whole(e.to_string()))?;
    let c = Checker::new(path);
    let pkcs11 = check(&c, raw.pkcs11.as_ref())?;
    Ok((raw.rms.map(|r| c.path(&r.tenant_key_dir)), pkcs11))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::config::Config;

    const BASE: &str = "[server]\nhostname = \"mx.contoso.test\"\ndata_dir = \"d\"\n\
                        [[domain]]\nname = \"contoso.test\"\nencryption_policy = \"none\"\n";

    fn load(dir: &Path, pkcs11: &str) -> Result<Config, ConfigError> {
        let text = format!("{BASE}[pkcs11]\n{pkcs11}\n");
        Config::from_toml(&dir.join("sealpost.toml"), &text, None)
    }

    fn pin_file(dir: &Path, mode: u32) {
        let path = dir.join("token.pin");
        std::fs::write(&path, "1234\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn the_module_and_one_pin_source_are_required() {
        let dir = tempfile::tempdir().unwrap();
        pin_file(dir.path(), 0o600);
        let c = load(dir.path(), "module = \"/bin/sh\"\npin_file = \"token.pin\"").unwrap();
        let p = c.pkcs11.unwrap();
        assert_eq!(p.pin, PinSource::File(dir.path().join("token.pin")));
        let err = |text: &str| load(dir.path(), text).unwrap_err();
        let e = err("module = \"/no/such.so\"\npin_file = \"token.pin\"");
        assert_eq!(e.key, "pkcs11.module");
        let e = err("module = \"/bin/sh\"");
        assert_eq!(
            (e.key.as_str(), e.problem.as_str()),
            ("pkcs11", "set one of pin_file or pin_env")
        );
        let e = err("module = \"/bin/sh\"\npin_file = \"token.pin\"\npin_env = \"X\"");
        assert_eq!(e.key, "pkcs11");
        let e = err("module = \"/bin/sh\"\npin_env = \"SEALPOST_NO_SUCH_PIN_VARIABLE\"");
        assert_eq!(e.key, "pkcs11.pin_env");
        assert!(e.problem.contains("SEALPOST_NO_SUCH_PIN_VARIABLE"), "{e}");
        let e = err("module = \"/bin/sh\"\npin = \"1234\"");
        assert!(e.problem.contains("unknown field"), "{e}");
    }

    #[test]
    fn a_pin_file_others_can_read_is_refused_without_showing_the_pin() {
        let dir = tempfile::tempdir().unwrap();
        pin_file(dir.path(), 0o644);
        let e = load(dir.path(), "module = \"/bin/sh\"\npin_file = \"token.pin\"").unwrap_err();
        assert_eq!(e.key, "pkcs11.pin_file");
        assert!(e.problem.contains("chmod 600"), "{e}");
        assert!(!e.to_string().contains("1234"), "{e}");
    }
}

//! `[storage]`: where the queue and the mailbox store live. `backend = "embedded"` (the default:
//! the spool and the store under `data_dir`) or `"postgres"` with the database's URL; the password comes from a file or an
//! environment variable, never from the configuration.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use serde::Deserialize;

use super::validate::Checker;
use super::ConfigError;
use crate::pg::{PasswordSource, PgSettings, PgTls};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    /// "embedded" (default) or "postgres".
    pub backend: Option<String>,
    /// `postgresql://user@host:port/dbname`, without a password.
    pub url: Option<String>,
    /// A file (mode 0600) holding the database password; relative to the config file.
    pub password_file: Option<String>,
    /// An environment variable holding the database password.
    pub password_env: Option<String>,
    /// "require", "prefer" or "disable" (default "prefer").
    pub tls: Option<String>,
    /// CA certificates (PEM) for the server's certificate; default: the public web roots.
    pub ca_file: Option<String>,
    /// This node's name in queue leases; default: kept in `<data_dir>/node-id`.
    pub node_id: Option<String>,
    pub connect_timeout: Option<String>,
    pub statement_timeout: Option<String>,
    /// How long a message claimed by a node that stopped stays with it.
    pub lease: Option<String>,
}

/// The validated `[storage]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StorageSettings {
    /// The spool under `data_dir`.
    #[default]
    Embedded,
    /// The queue and the mailbox store in PostgreSQL.
    Postgres(PgSettings),
}

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_LEASE: Duration = Duration::from_secs(120);

pub(super) fn settings(
    c: &Checker,
    raw: Option<&RawStorage>,
) -> Result<StorageSettings, ConfigError> {
    let Some(raw) = raw else {
        return Ok(StorageSettings::Embedded);
    };
    match raw.backend.as_deref().unwrap_or("embedded") {
        "embedded" => {
            let set = [
                ("url", raw.url.is_some()),
                ("password_file", raw.password_file.is_some()),
                ("password_env", raw.password_env.is_some()),
                ("tls", raw.tls.is_some()),
                ("ca_file", raw.ca_file.is_some()),
                ("node_id", raw.node_id.is_some()),
                ("connect_timeout", raw.connect_timeout.is_some()),
                ("statement_timeout", raw.statement_timeout.is_some()),
                ("lease", raw.lease.is_some()),
            ];
            match set.iter().find(|(_, is_set)| *is_set) {
                Some((key, _)) => Err(c.err(
                    format!("storage.{key}"),
                    "only used with backend = \"postgres\"",
                )),
                None => Ok(StorageSettings::Embedded),
            }
        }
        "postgres" => postgres(c, raw).map(StorageSettings::Postgres),
        other => Err(c.err(
            "storage.backend",
            format!("unknown backend {other:?}: expected \"embedded\" or \"postgres\""),
        )),
    }
}

fn postgres(c: &Checker, raw: &RawStorage) -> Result<PgSettings, ConfigError> {
    let url = raw.url.as_deref().ok_or_else(|| {
        c.err(
            "storage.url",
            "missing: backend = \"postgres\" needs url = \"postgresql://user@host:port/dbname\"",
        )
    })?;
    PgSettings::check_url(url).map_err(|problem| c.err("storage.url", problem))?;
    let password = match (&raw.password_file, &raw.password_env) {
        (Some(_), Some(_)) => {
            return Err(c.err(
                "storage.password_env",
                "give password_file or password_env, not both",
            ))
        }
        (Some(file), None) => PasswordSource::File(password_file(c, file)?),
        (None, Some(var)) => {
            if var.is_empty() || var.contains('=') || var.contains('\0') {
                return Err(c.err("storage.password_env", "not an environment variable name"));
            }
            if std::env::var_os(var).is_none() {
                return Err(c.err(
                    "storage.password_env",
                    format!("the environment variable {var} is not set"),
                ));
            }
            PasswordSource::Env(var.clone())
        }
        (None, None) => PasswordSource::None,
    };
    let tls = match raw.tls.as_deref().unwrap_or("prefer") {
        "require" => PgTls::Require,
        "prefer" => PgTls::Prefer,
        "disable" => PgTls::Disable,
        other => {
            return Err(c.err(
                "storage.tls",
                format!("{other:?}: expected \"require\", \"prefer\" or \"disable\""),
            ))
        }
    };
    let ca_file = match &raw.ca_file {
        Some(_) if tls == PgTls::Disable => {
            return Err(c.err("storage.ca_file", "given with tls = \"disable\""))
        }
        Some(file) => Some(c.existing_file("storage.ca_file", file)?),
        None => None,
    };
    if let Some(node) = &raw.node_id {
        let ok = !node.is_empty()
            && node.len() <= 64
            && node
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch));
        if !ok {
            return Err(c.err(
                "storage.node_id",
                "1 to 64 characters among letters, digits, '-', '_' and '.'",
            ));
        }
    }
    let positive = |key: &str, value: Option<&str>, default: Duration| {
        let d = c.duration(key, value, default)?;
        if d.is_zero() {
            return Err(c.err(key, "must be more than zero"));
        }
        Ok(d)
    };
    Ok(PgSettings {
        url: url.to_string(),
        password,
        tls,
        ca_file,
        connect_timeout: positive(
            "storage.connect_timeout",
            raw.connect_timeout.as_deref(),
            DEFAULT_CONNECT_TIMEOUT,
        )?,
        statement_timeout: positive(
            "storage.statement_timeout",
            raw.statement_timeout.as_deref(),
            DEFAULT_STATEMENT_TIMEOUT,
        )?,
        lease: positive("storage.lease", raw.lease.as_deref(), DEFAULT_LEASE)?,
        node_id: raw.node_id.clone(),
    })
}

/// The password file: present, a file, and readable by its owner only (mode 0600 or 0400).
fn password_file(c: &Checker, value: &str) -> Result<std::path::PathBuf, ConfigError> {
    let key = "storage.password_file";
    let path = c.path(value);
    let meta = std::fs::metadata(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => c.err(key, format!("file not found: {value}")),
        _ => c.err(key, format!("cannot read {value}: {e}")),
    })?;
    if !meta.is_file() {
        return Err(c.err(key, format!("not a file: {value}")));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(c.err(
            key,
            format!("{value} is open to group or others (mode {mode:o}): chmod 600 {value}"),
        ));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::StorageSettings;
    use crate::config::Config;
    use crate::pg::{PasswordSource, PgTls};

    const BASE: &str = "[server]\nhostname = \"mx.a.test\"\ndata_dir = \"d\"\n";

    fn load(dir: &std::path::Path, extra: &str) -> Result<Config, String> {
        let path = dir.join("sealpost.toml");
        std::fs::write(&path, format!("{BASE}{extra}")).unwrap();
        Config::load(&path, None).map_err(|e| e.to_string())
    }

    #[test]
    fn embedded_by_default_and_postgres_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            load(dir.path(), "").unwrap().storage,
            StorageSettings::Embedded
        );
        let pw = dir.path().join("pg.pw");
        std::fs::write(&pw, "secret\n").unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = load(
            dir.path(),
            "[storage]\nbackend = \"postgres\"\nurl = \"postgresql://mta@db.a.test:5432/mail\"\n\
             password_file = \"pg.pw\"\ntls = \"require\"\nlease = \"30s\"\n",
        )
        .unwrap();
        let StorageSettings::Postgres(pg) = c.storage else {
            panic!("not postgres")
        };
        assert_eq!(pg.password, PasswordSource::File(pw));
        assert_eq!(pg.tls, PgTls::Require);
        assert_eq!(pg.lease.as_secs(), 30);
        assert_eq!(pg.location(), "postgresql://mta@db.a.test:5432/mail");
    }

    #[test]
    fn bad_storage_names_the_key_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let pg = "[storage]\nbackend = \"postgres\"\n";
        let url = "url = \"postgresql://mta@db.a.test/mail\"\n";
        let cases: Vec<(String, &str, &str)> = vec![
            (
                "[storage]\nbackend = \"mysql\"\n".into(),
                "storage.backend",
                "unknown backend",
            ),
            (pg.into(), "storage.url", "missing"),
            (
                format!("{pg}url = \"postgresql://mta:hunter2@db/mail\"\n"),
                "storage.url",
                "holds a password",
            ),
            (
                format!("{pg}{url}password_file = \"nope.pw\"\n"),
                "storage.password_file",
                "file not found",
            ),
            (
                format!("{pg}{url}password_file = \"open.pw\"\n"),
                "storage.password_file",
                "chmod 600",
            ),
            (
                format!("{pg}{url}password_env = \"SEALPOST_TEST_UNSET_PW\"\n"),
                "storage.password_env",
                "not set",
            ),
            (
                format!("{pg}{url}tls = \"sometimes\"\n"),
                "storage.tls",
                "expected",
            ),
            (
                format!("{pg}{url}lease = \"0s\"\n"),
                "storage.lease",
                "more than zero",
            ),
            (
                "[storage]\nurl = \"postgresql://db/mail\"\n".into(),
                "storage.url",
                "only used with",
            ),
            (
                format!("{pg}{url}colour = \"blue\"\n"),
                "colour",
                "unknown field",
            ),
        ];
        let open = dir.path().join("open.pw");
        std::fs::write(&open, "secret").unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
        for (text, key, problem) in cases {
            let e = load(dir.path(), &text).unwrap_err();
            assert!(
                e.contains("sealpost.toml") && e.contains(key) && e.contains(problem),
                "{text}: {e}"
            );
            assert!(!e.contains("hunter2"), "the password is not repeated: {e}");
        }
    }
}

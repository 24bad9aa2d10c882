//! How to reach the database: the URL (never with a password), where the password comes from,
//! TLS, and the time limits.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::config::{Host, SslMode};
use zeroize::Zeroizing;

use super::DbError;

/// TLS to the database server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PgTls {
    /// Plain TCP (or a unix socket).
    Disable,
    /// TLS when the server offers it, plain otherwise.
    Prefer,
    /// TLS or no connection; the server's certificate is verified (CA file or public roots).
    Require,
}

/// Where the database password comes from; the configuration never holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PasswordSource {
    /// No password (trust or certificate authentication).
    None,
    /// A file (mode 0600) holding the password; surrounding whitespace is ignored.
    File(PathBuf),
    /// An environment variable holding it.
    Env(String),
}

/// The validated `[storage]` settings of a PostgreSQL backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgSettings {
    /// `postgresql://user@host:port/dbname`, checked to parse and to hold no password.
    pub url: String,
    pub password: PasswordSource,
    pub tls: PgTls,
    /// Trust anchors for the server's certificate (default: the public web roots).
    pub ca_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
    /// How long a claimed message stays with a node that stops renewing its lease.
    pub lease: Duration,
    /// This node's name in leases; `None`: the one kept in `<data_dir>/node-id`.
    pub node_id: Option<String>,
}

impl PgSettings {
    /// Checks a URL as written in the configuration: it parses, and holds no password.
    pub fn check_url(url: &str) -> Result<(), String> {
        let config = tokio_postgres::Config::from_str(url)
            .map_err(|e| format!("not a PostgreSQL URL ({e})"))?;
        if config.get_password().is_some() {
            return Err("holds a password: put it in password_file or password_env".into());
        }
        if config.get_hosts().is_empty() {
            return Err("names no host".into());
        }
        Ok(())
    }

    /// The connection settings, with the password read from its source now.
    pub(super) fn connect_config(&self) -> Result<tokio_postgres::Config, DbError> {
        let mut config = tokio_postgres::Config::from_str(&self.url)
            .map_err(|e| DbError::Settings(format!("storage.url: {e}")))?;
        if let Some(password) = self.read_password()? {
            config.password(password.as_bytes());
        }
        config.ssl_mode(match self.tls {
            PgTls::Disable => SslMode::Disable,
            PgTls::Prefer => SslMode::Prefer,
            PgTls::Require => SslMode::Require,
        });
        if config.get_application_name().is_none() {
            config.application_name("sealpost");
        }
        Ok(config)
    }

    fn read_password(&self) -> Result<Option<Zeroizing<String>>, DbError> {
        match &self.password {
            PasswordSource::None => Ok(None),
            PasswordSource::File(path) => {
                let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
                    DbError::Settings(format!(
                        "storage.password_file: cannot read {}: {e}",
                        path.display()
                    ))
                })?);
                Ok(Some(Zeroizing::new(text.trim().to_string())))
            }
            PasswordSource::Env(name) => match std::env::var(name) {
                Ok(value) => Ok(Some(Zeroizing::new(value))),
                Err(_) => Err(DbError::Settings(format!(
                    "storage.password_env: the environment variable {name} is not set"
                ))),
            },
        }
    }

    /// The database as logs name it: `postgresql://user@host:port/dbname`, no password.
    pub fn location(&self) -> String {
        let Ok(config) = tokio_postgres::Config::from_str(&self.url) else {
            return "postgresql://(bad url)".into();
        };
        let user = config
            .get_user()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        let host = match config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            Some(Host::Unix(p)) => p.display().to_string(),
            None => String::new(),
        };
        let port = config
            .get_ports()
            .first()
            .map(|p| format!(":{p}"))
            .unwrap_or_default();
        let db = config.get_dbname().unwrap_or("");
        format!("postgresql://{user}{host}{port}/{db}")
    }
}

/// Reads this node's id from `path`, or creates the file with a new random id.
pub fn node_id_file(path: &Path) -> std::io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let id = format!("node-{:016x}", rand::random::<u64>());
    std::fs::write(path, format!("{id}\n"))?;
    Ok(id)
}

//! `[admin]` (the metrics, health and reload endpoint, and the token reload requires) and
//! `[trace]` (the message trace log).

use std::fmt;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::ConfigError;

/// `[admin]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// e.g. "127.0.0.1:9025"
    pub listen: Option<String>,
    /// The file holding the bearer token `POST /reload` requires; relative to the config file.
    pub token_file: Option<String>,
}

/// `[trace]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrace {
    /// Default true.
    pub enabled: Option<bool>,
    /// Default `<data_dir>/trace.jsonl`; relative paths are relative to the config file.
    pub path: Option<String>,
}

/// The validated operations settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Operations {
    /// Where `/metrics`, `/healthz` and `/reload` are served; `None` = no admin listener.
    pub admin_listen: Option<SocketAddr>,
    /// `[admin] token_file`, where `sealpost reload` reads the token it sends.
    pub admin_token_file: Option<PathBuf>,
    /// What `POST /reload` must present; `None` = `POST /reload` is refused.
    pub admin_token: Option<AdminToken>,
    /// The JSON-lines message trace log; `None` = no trace.
    pub trace_log: Option<PathBuf>,
}

/// The admin token as the server keeps it: only its SHA-256, so neither the token nor its length
/// is in memory, in `Debug` output or in a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken {
    digest: [u8; 32],
}

impl AdminToken {
    pub fn new(token: &str) -> AdminToken {
        AdminToken {
            digest: Sha256::digest(token.as_bytes()).into(),
        }
    }

    /// Whether `presented` is the token, compared in constant time (over the digests, so the
    /// time does not depend on where the first difference is or on the token's length).
    pub fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        aws_lc_rs::constant_time::verify_slices_are_equal(&self.digest, &digest).is_ok()
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// Tokens shorter than this get a warning (a token is meant to be random, e.g. 64 hex digits).
const SHORT_TOKEN: usize = 16;

/// Reads a token file: its content without surrounding whitespace, which must be non-empty
/// visible ASCII (it travels in an HTTP header). A file writable by group or others is refused,
/// one readable by them gets a warning. The problem never quotes the content.
pub fn read_token_file(path: &Path) -> Result<Zeroizing<String>, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("file not found: {shown}"),
        _ => format!("cannot read {shown}: {e}"),
    })?;
    if !meta.is_file() {
        return Err(format!("not a file: {shown}"));
    }
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(format!(
            "{shown} is writable by group or others (mode {:o}): chmod 600 {shown}",
            mode & 0o777
        ));
    }
    let bytes =
        Zeroizing::new(std::fs::read(path).map_err(|e| format!("cannot read {shown}: {e}"))?);
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| format!("{shown}: the token must be printable ASCII"))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!(
            "{shown} is empty: write a random token into it, e.g. `openssl rand -hex 32 > {shown}`"
        ));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{shown}: the token must be printable ASCII without spaces"
        ));
    }
    if mode & 0o077 != 0 {
        tracing::warn!(
            file = %shown,
            mode = format!("{:o}", mode & 0o777),
            "admin token file is readable by group or others; chmod 600 it"
        );
    }
    if token.len() < SHORT_TOKEN {
        tracing::warn!(file = %shown, "admin token is shorter than {SHORT_TOKEN} characters: use a random one, e.g. `openssl rand -hex 32`");
    }
    Ok(Zeroizing::new(token.to_string()))
}

pub(super) fn validate(
    file: &Path,
    config_dir: &Path,
    data_dir: &Path,
    admin: Option<&RawAdmin>,
    trace: Option<&RawTrace>,
) -> Result<Operations, ConfigError> {
    let err = |key: &str, problem: String| ConfigError {
        file: file.to_path_buf(),
        key: key.to_string(),
        problem,
    };
    let relative = |p: &str| {
        let p = Path::new(p.trim());
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            config_dir.join(p)
        }
    };
    let admin_listen = match admin.and_then(|a| a.listen.as_deref()) {
        None => None,
        Some(text) => {
            let addr = text.trim().parse::<SocketAddr>().map_err(|_| {
                err(
                    "admin.listen",
                    format!("not an address:port: {text:?} (e.g. \"127.0.0.1:9025\")"),
                )
            })?;
            if !addr.ip().is_loopback() {
                tracing::warn!(%addr, "admin.listen is not a loopback address: /metrics and /healthz are readable from the network without authentication, and the reload token travels in clear");
            }
            Some(addr)
        }
    };
    let (admin_token_file, admin_token) = match admin.and_then(|a| a.token_file.as_deref()) {
        None => (None, None),
        Some(p) if p.trim().is_empty() => return Err(err("admin.token_file", "empty path".into())),
        Some(p) => {
            let path = relative(p);
            let token =
                read_token_file(&path).map_err(|problem| err("admin.token_file", problem))?;
            (Some(path), Some(AdminToken::new(&token)))
        }
    };
    let trace = trace.unwrap_or(&RawTrace {
        enabled: None,
        path: None,
    });
    let trace_log = match (trace.enabled.unwrap_or(true), trace.path.as_deref()) {
        (false, _) => None,
        (true, None) => Some(data_dir.join("trace.jsonl")),
        (true, Some(p)) if p.trim().is_empty() => {
            return Err(err("trace.path", "empty path".into()))
        }
        (true, Some(p)) => Some(relative(p)),
    };
    Ok(Operations {
        admin_listen,
        admin_token_file,
        admin_token,
        trace_log,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(dir: &Path, token_file: &str) -> Result<Operations, ConfigError> {
        let raw = RawAdmin {
            listen: Some("127.0.0.1:9025".into()),
            token_file: Some(token_file.into()),
        };
        validate(
            &dir.join("c.toml"),
            dir,
            &dir.join("data"),
            Some(&raw),
            None,
        )
    }

    fn write(path: &Path, content: &str, mode: u32) {
        std::fs::write(path, content).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn token_file_is_relative_to_the_config_and_only_its_digest_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        write(
            &dir.path().join("admin.token"),
            "s3cret-token-0123456789\n",
            0o600,
        );
        let ops = admin(dir.path(), "admin.token").unwrap();
        assert_eq!(ops.admin_token_file, Some(dir.path().join("admin.token")));
        let token = ops.admin_token.clone().unwrap();
        assert!(
            token.matches("s3cret-token-0123456789"),
            "trailing newline ignored"
        );
        for wrong in [
            "",
            "s3cret-token-012345678",
            "s3cret-token-0123456789\n",
            "S3CRET-TOKEN-0123456789",
        ] {
            assert!(!token.matches(wrong), "{wrong:?}");
        }
        assert!(!format!("{ops:?}").contains("s3cret"), "{ops:?}");
        let none = validate(
            &dir.path().join("c.toml"),
            dir.path(),
            dir.path(),
            None,
            None,
        )
        .unwrap();
        assert_eq!((none.admin_token_file, none.admin_token), (None, None));
    }

    #[test]
    fn bad_token_files_name_key_and_problem_but_never_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| dir.path().join(name);
        write(&p("empty"), " \n", 0o600);
        write(&p("spaces"), "two words-with-a-secret\n", 0o600);
        write(&p("group-writable"), "secret-secret-secret", 0o620);
        std::fs::create_dir(p("dir")).unwrap();
        for (file, problem) in [
            ("missing", "file not found"),
            ("empty", "is empty"),
            ("spaces", "printable ASCII without spaces"),
            ("group-writable", "writable by group or others (mode 620)"),
            ("dir", "not a file"),
        ] {
            let e = admin(dir.path(), file).unwrap_err();
            assert_eq!(e.key, "admin.token_file", "{file}: {e}");
            assert!(e.problem.contains(problem), "{file}: {e}");
            assert!(!e.problem.contains("secret"), "{file}: {e}");
            assert!(
                e.to_string()
                    .starts_with(&format!("{}: admin.token_file: ", p("c.toml").display())),
                "{e}"
            );
        }
        // Readable by others: loads (with a warning).
        write(&p("readable"), "readable-token-0123456789", 0o644);
        assert!(admin(dir.path(), "readable").unwrap().admin_token.is_some());
    }
}

//! The one check of a file that holds a secret (root key, admin token): it exists, is a file, is
//! not writable by group or others (refused), and is not readable by them (a warning).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Checks `path` (named `shown` in problems); `what` names the secret in the warning
/// ("root key", "admin token").
pub(super) fn check(path: &Path, shown: &str, what: &str) -> Result<(), String> {
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
    if mode & 0o077 != 0 {
        tracing::warn!(
            file = %path.display(),
            mode = format!("{:o}", mode & 0o777),
            "{what} file is readable by group or others; chmod 600 it"
        );
    }
    Ok(())
}

//! `[smime]`: the recipient certificates of `smime_encrypt` and the signing keys of
//! `smime_sign`, the latter loaded and checked here (and so again on every reload).

use std::path::PathBuf;
use std::time::SystemTime;

use super::file::RawSmime;
use super::validate::Checker;
use super::ConfigError;
use crate::crypto::smime::{SigningKeys, SmimeError};

/// `[smime] signing_dir`, loaded.
#[derive(Debug, Clone)]
pub struct SmimeSigning {
    pub dir: PathBuf,
    pub keys: SigningKeys,
}

/// `[smime]`, checked: the certificate directory, and the signing keys.
pub(super) struct Smime {
    pub certificate_dir: Option<PathBuf>,
    pub signing: Option<SmimeSigning>,
}

pub(super) fn check(c: &Checker, raw: Option<&RawSmime>) -> Result<Smime, ConfigError> {
    let Some(raw) = raw else {
        return Ok(Smime {
            certificate_dir: None,
            signing: None,
        });
    };
    let certificate_dir = match &raw.certificate_dir {
        Some(value) => {
            let dir = c.path(value);
            if !dir.is_dir() {
                return Err(c.err("smime.certificate_dir", format!("not a directory: {value}")));
            }
            Some(dir)
        }
        None => None,
    };
    let signing = match &raw.signing_dir {
        Some(value) => {
            let dir = c.path(value);
            if !dir.is_dir() {
                return Err(c.err("smime.signing_dir", format!("not a directory: {value}")));
            }
            let keys = SigningKeys::load_dir(&dir, SystemTime::now()).map_err(|e| {
                let problem = match e {
                    SmimeError::Certificate { path, problem } => {
                        format!("{}: {problem}", path.display())
                    }
                    other => other.to_string(),
                };
                c.err("smime.signing_dir", problem)
            })?;
            if keys.is_empty() {
                return Err(c.err(
                    "smime.signing_dir",
                    format!(
                        "no signing keys in {value} (<address>.crt + <address>.key, or \
                         <domain>.crt + <domain>.key)"
                    ),
                ));
            }
            Some(SmimeSigning { dir, keys })
        }
        None => None,
    };
    if certificate_dir.is_none() && signing.is_none() {
        return Err(c.err(
            "smime",
            "give certificate_dir (for smime_encrypt), signing_dir (for smime_sign), or both",
        ));
    }
    Ok(Smime {
        certificate_dir,
        signing,
    })
}

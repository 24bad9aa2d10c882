//! What the transport rules need from the rest of the configuration: a rule that encrypts,
//! protects or routes through a connector is refused at load when that part is not configured,
//! instead of every matching message being refused at run time.

use std::path::Path;

use super::connectors::OutboundConnector;
use super::validate::Checker;
use super::ConfigError;
use crate::rules::{Action, RuleSet};

/// The parts of the configuration the rules may lean on.
pub(super) struct Available<'a> {
    pub smime_certificate_dir: Option<&'a Path>,
    pub smime_signing_dir: Option<&'a Path>,
    pub rms_tenant_key_dir: Option<&'a Path>,
    pub outbound_connectors: &'a [OutboundConnector],
}

/// Reports, under `rules.dir`, the first rule whose action needs something `available` lacks.
pub(super) fn check(
    c: &Checker,
    rules: &RuleSet,
    available: &Available,
) -> Result<(), ConfigError> {
    for rule in rules.rules() {
        for action in &rule.actions {
            let missing = match action {
                Action::SmimeEncrypt(_) if available.smime_certificate_dir.is_none() => Some(
                    "S/MIME-encrypts (smime_encrypt), but there is no [smime] certificate_dir"
                        .to_string(),
                ),
                Action::SmimeSign(_) if available.smime_signing_dir.is_none() => Some(
                    "S/MIME-signs (smime_sign), but there is no [smime] signing_dir".to_string(),
                ),
                Action::RmsProtect(_) if available.rms_tenant_key_dir.is_none() => Some(
                    "protects messages (rms_protect), but there is no [rms] tenant_key_dir"
                        .to_string(),
                ),
                Action::RouteVia(r)
                    if !available
                        .outbound_connectors
                        .iter()
                        .any(|o| o.name == r.connector.as_str()) =>
                {
                    Some(format!(
                        "routes via connector {:?}, but no [[connector.outbound]] has that name",
                        r.connector.as_str()
                    ))
                }
                _ => None,
            };
            if let Some(missing) = missing {
                return Err(c.err(
                    "rules.dir",
                    format!("{}: rule {:?} {missing}", rule.file.display(), rule.name),
                ));
            }
        }
    }
    Ok(())
}

//! Built-in templates (`encrypt-only`, `do-not-forward`) and the license request a rule's
//! `rms_protect` action asks for.

use std::collections::BTreeMap;
use std::time::SystemTime;

use super::license::{normalize_principal, Rights, RmsAlgorithm};
use super::LicenseRequest;

/// Rights a built-in template gives each recipient and the sender; `None` for other names.
pub fn builtin(template: &str) -> Option<(Rights, Rights)> {
    let read_reply = Rights::VIEW.union(Rights::REPLY).union(Rights::REPLYALL);
    match template {
        "encrypt-only" => Some((
            read_reply
                .union(Rights::FORWARD)
                .union(Rights::PRINT)
                .union(Rights::EXTRACT),
            Rights::OWNER,
        )),
        "do-not-forward" => Some((read_reply, Rights::OWNER)),
        _ => None,
    }
}

/// The license request for a message protected by `action`: the template's rights for every
/// recipient and for the sender (OWNER), then the rule's `rights` map, whose entries replace a
/// principal's rights or add principals (`*` means ANYONE); `expires_after` gives the expiry.
/// Unknown template names give only the rule's rights (plus the sender's OWNER).
pub fn license_for(
    action: &crate::rules::RmsProtect,
    sender: &str,
    recipients: &[String],
    message_id: Option<&str>,
    now: SystemTime,
) -> LicenseRequest {
    let (for_recipients, for_sender) =
        builtin(&action.template).unwrap_or((Rights::empty(), Rights::OWNER));
    let mut rights: BTreeMap<String, Rights> = BTreeMap::new();
    let mut grant = |who: &str, r: Rights| {
        if r.is_empty() {
            return;
        }
        if let Some(p) = normalize_principal(who) {
            let e = rights.entry(p).or_default();
            *e = e.union(r);
        }
    };
    for r in recipients {
        grant(r, for_recipients);
    }
    grant(sender, for_sender);
    for (principal, list) in &action.rights {
        if let Some(p) = normalize_principal(principal) {
            let r = list
                .iter()
                .fold(Rights::empty(), |acc, x| acc.union(Rights::from(*x)));
            rights.insert(p, r);
        }
    }
    let issuer = normalize_principal(sender)
        .filter(|p| p != super::license::ANYONE)
        .unwrap_or_else(|| "postmaster".to_string());
    LicenseRequest {
        issuer,
        template: action.template.clone(),
        rights,
        issued: now,
        expires: action.expires_after.and_then(|d| now.checked_add(d)),
        message_id: message_id
            .map(str::trim)
            .filter(|m| !m.is_empty() && m.len() <= 998 && !m.chars().any(char::is_control))
            .map(str::to_string),
        algorithm: RmsAlgorithm::default(),
        licensing_url: None,
    }
}

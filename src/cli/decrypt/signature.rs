//! `sealpost decrypt`: checking an S/MIME signature (a signed message, or the signed message
//! inside an encrypted one) and saying on standard error who signed and whether they are trusted.

use std::path::Path;
use std::time::SystemTime;

use crate::crypto::smime::{verify_message, DecryptError, SignerAnchors, SignerTrust, Verified};
use crate::tls::policy::TrustAnchors;

/// The trust anchors of `--trust`: a PEM file of CA certificates, or a directory whose `*.crt`
/// and `*.pem` files are.
pub(super) fn load_anchors(path: &Path) -> Result<TrustAnchors, DecryptError> {
    let key_err = |e: &dyn std::fmt::Display| DecryptError::Key(format!("--trust: {e}"));
    if !path.is_dir() {
        return crate::tls::load_trust_anchors(path).map_err(|e| key_err(&e));
    }
    let entries =
        std::fs::read_dir(path).map_err(|e| key_err(&format!("{}: {e}", path.display())))?;
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "crt" || x == "pem"))
        .collect();
    files.sort();
    let mut roots = rustls::RootCertStore::empty();
    for file in &files {
        let anchors = crate::tls::load_trust_anchors(file).map_err(|e| key_err(&e))?;
        roots.roots.extend(anchors.roots.roots.iter().cloned());
    }
    if roots.is_empty() {
        return Err(key_err(&format!(
            "{}: no CA certificates (*.crt, *.pem) in the directory",
            path.display()
        )));
    }
    Ok(TrustAnchors {
        roots: std::sync::Arc::new(roots),
        label: path.display().to_string(),
    })
}

/// Verifies the signed `message` and reports the signers on standard error. A signature that
/// does not verify is `BadSignature`; with `anchors`, a signer that does not chain to them is
/// `Untrusted`. Returns the message to write (an opaque signature's content unwrapped).
pub(super) fn check(
    message: &[u8],
    anchors: Option<&TrustAnchors>,
) -> Result<Vec<u8>, DecryptError> {
    let label;
    let a = match anchors {
        Some(t) => {
            label = t.label.clone();
            Some(SignerAnchors {
                roots: &t.roots.roots,
                label: &label,
            })
        }
        None => None,
    };
    let verified = verify_message(message, a, SystemTime::now())?;
    report(&verified, from_address(&verified.message).as_deref());
    if anchors.is_some() {
        if let Some(reason) = verified.signers.iter().find_map(|s| match &s.trust {
            SignerTrust::Untrusted { reason } => Some(format!("{}: {reason}", s.subject)),
            _ => None,
        }) {
            return Err(DecryptError::Untrusted(reason));
        }
    }
    Ok(verified.message)
}

fn report(verified: &Verified, from: Option<&str>) {
    for s in &verified.signers {
        let emails = match &s.emails[..] {
            [] => String::new(),
            e => format!(" <{}>", e.join(", ")),
        };
        let when = s
            .signing_time
            .map(|t| format!(" at {}", humantime::format_rfc3339_seconds(t)))
            .unwrap_or_default();
        eprintln!("signature: good, signed by {}{emails}{when}", s.subject);
        match &s.trust {
            SignerTrust::Trusted { anchors } => {
                eprintln!("signer: trusted (the certificate chains to {anchors})")
            }
            SignerTrust::Untrusted { reason } => eprintln!("signer: NOT trusted: {reason}"),
            SignerTrust::NoAnchors => eprintln!(
                "signer: untrusted (not checked: give --trust CA.pem|DIR to check the signer)"
            ),
        }
        if let Some(from) = from {
            if !s.emails.iter().any(|e| e.eq_ignore_ascii_case(from)) {
                eprintln!("warning: the message is from {from}, which the signer's certificate does not name");
            }
        }
    }
}

/// The first From address of a message.
fn from_address(message: &[u8]) -> Option<String> {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(message.len().min(64 * 1024), |i| i + 4);
    let parsed = mail_parser::MessageParser::default().parse_headers(&message[..end])?;
    parsed.from()?.first()?.address().map(str::to_string)
}

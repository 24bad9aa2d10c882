//! How the demo opens the protected mail it delivered, as each recipient's mail client would:
//! S/MIME with the recipient's fixture key, an RMS-protected message through the licensing
//! service its publishing license names, with the reader's own S/MIME certificate.

use std::path::PathBuf;

use crate::cli::decrypt::reader::{ReadError, Reader, Source};
use crate::crypto::rms::{self, format_expiry, License};
use crate::licensing::client::ClientError;

/// Who asks for a forwarded copy of an RMS-protected message, to show that its rights hold:
/// the license names only the recipients, so the service refuses this reader.
const FORWARDED_TO: &str = "dave@fabrikam.test";

/// The fixture identities and where their use licenses are cached.
pub(super) struct Readers {
    /// The fixtures directory (certificates and keys in `pki/smime/`, the CA in `pki/ca.crt`).
    pub fixtures: PathBuf,
    /// The demo's use-license cache.
    pub cache: PathBuf,
}

/// What opening one delivered message showed: the lines to print, and whether something did
/// not go as a recipient expects (a message that does not open, rights not enforced).
#[derive(Default)]
pub(super) struct Shown {
    pub lines: Vec<String>,
    pub failed: bool,
}

impl Shown {
    fn ok(line: String) -> Shown {
        Shown {
            lines: vec![line],
            failed: false,
        }
    }

    fn failed(line: String) -> Shown {
        Shown {
            lines: vec![line],
            failed: true,
        }
    }
}

impl Readers {
    /// Opens `message` from `mailbox`, if it is S/MIME encrypted or RMS-protected.
    pub(super) async fn open(&self, mailbox: &str, message: &[u8]) -> Option<Shown> {
        if rms::is_protected(message) {
            return Some(self.open_rms(mailbox, message).await);
        }
        if crate::crypto::smime::is_encrypted(message) {
            return Some(self.open_smime(mailbox, message));
        }
        None
    }

    fn certificate(&self, address: &str) -> (PathBuf, PathBuf) {
        let dir = self.fixtures.join("pki/smime");
        (
            dir.join(format!("{address}.crt")),
            dir.join(format!("{address}.key")),
        )
    }

    fn reader(&self, address: &str) -> Result<Reader, String> {
        let (cert, key) = self.certificate(address);
        let ca = self.fixtures.join("pki/ca.crt");
        Reader::load(&cert, &key, Some(&ca), Some(&self.cache))
            .map_err(|e| format!("{address}'s certificate and key: {e}"))
    }

    /// The reader `mailbox` asks the licensing service (over HTTPS, its certificate as TLS
    /// client certificate); then a copy forwarded to [`FORWARDED_TO`] is asked for and must be
    /// refused.
    async fn open_rms(&self, mailbox: &str, message: &[u8]) -> Shown {
        let license = match publishing_license(message) {
            Ok(l) => l,
            Err(e) => return Shown::failed(format!("RMS-protected, but unreadable: {e}")),
        };
        let organisation = license
            .issuer
            .rsplit_once('@')
            .and_then(|(_, domain)| domain.split('.').next())
            .unwrap_or("the sender")
            .to_string();
        let reader = match self.reader(mailbox) {
            Ok(r) => r,
            Err(e) => return Shown::failed(format!("RMS-protected, but {e}")),
        };
        let mut notes = Vec::new();
        let opened = reader
            .open(message, &mut |n| notes.push(format!("({n})")))
            .await;
        let mut shown = Shown {
            lines: notes,
            failed: false,
        };
        let opened = match opened {
            Ok(o) => o,
            Err(e) => {
                shown.lines.push(format!(
                    "RMS-protected (template {}), but {mailbox} could not open it through the \
                     licensing service: {e}",
                    license.template
                ));
                shown.failed = true;
                return shown;
            }
        };
        let (cert, _) = self.certificate(mailbox);
        let cert = cert
            .strip_prefix(&self.fixtures)
            .unwrap_or(&cert)
            .display()
            .to_string();
        let via = match &opened.source {
            Source::Service { url } => format!("through {organisation}'s licensing service {url}"),
            Source::Cache { issued_by, .. } => {
                format!(
                    "with a cached use license from {organisation}'s licensing service {issued_by}"
                )
            }
        };
        shown.lines.push(format!(
            "RMS-protected (template {}); {} opened it {via} with the S/MIME certificate {cert} \
             (rights: {}; use license valid until {}): \"{}\"",
            license.template,
            opened.principal,
            opened.rights,
            format_expiry(opened.valid_until),
            first_body_line(&opened.plaintext)
        ));
        if !mailbox.eq_ignore_ascii_case(FORWARDED_TO) {
            let forwarded = self.forwarded(message).await;
            shown.failed |= forwarded.failed;
            shown.lines.extend(forwarded.lines);
        }
        shown
    }

    /// A copy of `message` forwarded to [`FORWARDED_TO`], who asks the service for it.
    async fn forwarded(&self, message: &[u8]) -> Shown {
        let who = FORWARDED_TO;
        let reader = match self.reader(who) {
            Ok(r) => r,
            Err(e) => return Shown::failed(format!("a copy forwarded to {who}: {e}")),
        };
        match reader.open(message, &mut |_| {}).await {
            Err(ReadError::Client(ClientError::Refused { reason, status, .. })) => {
                Shown::ok(format!(
                    "a copy forwarded to {who}: the licensing service refused {who}'s \
                     certificate (HTTP {status}): \"{reason}\""
                ))
            }
            Err(e) => Shown::failed(format!(
                "a copy forwarded to {who}: not refused by the service as expected: {e}"
            )),
            Ok(o) => Shown::failed(format!(
                "a copy forwarded to {who} opened (rights: {}): the rights were not enforced",
                o.rights
            )),
        }
    }

    fn open_smime(&self, mailbox: &str, message: &[u8]) -> Shown {
        let (cert, key) = self.certificate(mailbox);
        let key = match crate::crypto::smime::DecryptKey::from_pem(&key, Some(&cert)) {
            Ok(k) => k,
            Err(e) => {
                return Shown::failed(format!(
                    "S/MIME encrypted, but {mailbox}'s key is unusable: {e}"
                ))
            }
        };
        match crate::crypto::smime::decrypt_message(message, &key) {
            Ok(original) => Shown::ok(format!(
                "S/MIME encrypted; opened with {mailbox}'s key: \"{}\"",
                first_body_line(&original)
            )),
            Err(e) => Shown::failed(format!("S/MIME encrypted, but it did not open: {e}")),
        }
    }
}

/// The publishing license of a protected message (what anyone holding it can read).
fn publishing_license(message: &[u8]) -> Result<License, rms::RmsError> {
    let container = rms::extract_container(message)?;
    let framed = rms::parse_container(&container)?;
    License::decode(framed.license)
}

/// The first line of a message's body.
fn first_body_line(message: &[u8]) -> String {
    let text = String::from_utf8_lossy(message);
    text.split_once("\r\n\r\n")
        .and_then(|(_, body)| body.lines().next())
        .unwrap_or_default()
        .to_string()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn first_body_line_skips_the_header() {
        assert_eq!(
            first_body_line(b"Subject: s\r\nTo: x\r\n\r\nHello\r\nmore\r\n"),
            "Hello"
        );
        assert_eq!(first_body_line(b"Subject: s\r\n"), "");
    }

    #[test]
    fn an_unprotected_message_is_not_opened() {
        let readers = Readers {
            fixtures: Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures"),
            cache: std::env::temp_dir(),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert!(rt
            .block_on(readers.open("bob@fabrikam.test", b"Subject: s\r\n\r\nplain\r\n"))
            .is_none());
    }
}

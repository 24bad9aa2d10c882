//! The actions a matching rule asks cleanup to apply, with their options and validation.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use super::values::{Address, ConnectorName, HeaderName, HeaderText, List};

/// What a matching rule asks for. In a rule file: `[[actions]]` tables with a `type` key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    /// S/MIME-encrypt the message for the recipient (DESIGN.md §5).
    SmimeEncrypt(SmimeEncrypt),
    /// S/MIME-sign the message with the sender's (or its domain's) key, before any encryption.
    SmimeSign(SmimeSign),
    /// RMS-style protection under the tenant key (DESIGN.md §5).
    RmsProtect(RmsProtect),
    /// Add a header field (after any existing ones of that name).
    AddHeader(HeaderField),
    /// Replace every header field of that name with this one.
    SetHeader(HeaderField),
    /// Put text in front of the subject.
    PrependSubject(PrependSubject),
    /// Deliver to these addresses instead of the recipient.
    RedirectTo(RedirectTo),
    /// Refuse the message with this reply.
    Reject(Reject),
    /// Send through this outbound connector.
    RouteVia(RouteVia),
    /// The message leaves only over TLS (verified or not, per the route's TLS level).
    RequireTls(RequireTls),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SmimeAlgorithm {
    /// EnvelopedData, AES-256-CBC.
    #[default]
    Aes256Cbc,
    /// AuthEnvelopedData, AES-256-GCM.
    Aes256Gcm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyTransport {
    /// RSAES-OAEP with SHA-256.
    #[default]
    RsaOaep,
    /// RSA PKCS#1 v1.5, for old clients.
    RsaPkcs1,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnMissingCertificate {
    /// Refuse the message for that recipient.
    #[default]
    Reject,
    DeliverUnencrypted,
    RmsProtect,
}

/// `type = "smime_encrypt"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmimeEncrypt {
    #[serde(default)]
    pub algorithm: SmimeAlgorithm,
    #[serde(default)]
    pub key_transport: KeyTransport,
    #[serde(default)]
    pub on_missing_certificate: OnMissingCertificate,
}

/// What to do when the sender has no usable signing key (neither its own nor its domain's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnMissingSigningKey {
    /// Refuse the message (550 5.7.1), as `smime_encrypt` does by default.
    #[default]
    Reject,
    /// Refuse it for now (451 4.7.1): the client tries again, e.g. after the key is installed.
    Defer,
    /// Deliver it unsigned; a warning is logged and counted.
    DeliverUnsigned,
}

/// The RSA signature scheme of `smime_sign`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureScheme {
    /// RSASSA-PKCS1-v1_5 with SHA-256: every S/MIME client verifies it.
    #[default]
    RsaPkcs1,
    /// RSASSA-PSS with SHA-256.
    RsaPss,
}

/// `type = "smime_sign"`: `signature` rsa-pkcs1 | rsa-pss, `on_missing_certificate` reject |
/// defer | deliver-unsigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmimeSign {
    #[serde(default)]
    pub signature: SignatureScheme,
    #[serde(default)]
    pub on_missing_certificate: OnMissingSigningKey,
}

/// A usage right of an RMS-protected message (DESIGN.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Right {
    View,
    Reply,
    #[serde(alias = "reply-all", alias = "reply_all")]
    ReplyAll,
    Forward,
    Print,
    Extract,
    Owner,
}

/// `type = "rms_protect"`: `template`, optional `rights = { "principal" = ["view", ...] }` and
/// `expires_after = "30d"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawRmsProtect")]
pub struct RmsProtect {
    pub template: String,
    /// Principal (an address, `*@domain` or `*`) → rights.
    pub rights: BTreeMap<String, Vec<Right>>,
    pub expires_after: Option<Duration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRmsProtect {
    template: String,
    #[serde(default)]
    rights: BTreeMap<String, Vec<Right>>,
    expires_after: Option<String>,
}

impl TryFrom<RawRmsProtect> for RmsProtect {
    type Error = String;
    fn try_from(raw: RawRmsProtect) -> Result<Self, String> {
        let template = raw.template.trim();
        if template.is_empty() || template.len() > 200 || template.chars().any(char::is_control) {
            return Err(format!("not a template name: {:?}", raw.template));
        }
        for (principal, rights) in &raw.rights {
            if principal.is_empty()
                || principal
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(format!("not a principal: {principal:?}"));
            }
            if rights.is_empty() {
                return Err(format!("no rights given for {principal:?}"));
            }
        }
        let expires_after = match raw.expires_after.as_deref() {
            None => None,
            Some(text) => {
                let d = crate::units::parse_duration(text)?;
                if d.is_zero() {
                    return Err("expires_after must be above zero".into());
                }
                Some(d)
            }
        };
        Ok(RmsProtect {
            template: template.to_string(),
            rights: raw.rights,
            expires_after,
        })
    }
}

/// `type = "add_header"` / `"set_header"`: `name`, `value`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawHeaderField")]
pub struct HeaderField {
    pub name: HeaderName,
    pub value: HeaderText,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeaderField {
    name: HeaderName,
    value: HeaderText,
}

impl TryFrom<RawHeaderField> for HeaderField {
    type Error = String;
    fn try_from(raw: RawHeaderField) -> Result<Self, String> {
        if raw.name.is_mime_structure() {
            return Err(format!(
                "{} describes the MIME structure and cannot be written by a rule",
                raw.name
            ));
        }
        Ok(HeaderField {
            name: raw.name,
            value: raw.value,
        })
    }
}

/// `type = "prepend_subject"`: `text`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrependSubject {
    pub text: HeaderText,
}

/// `type = "redirect_to"`: `addresses` (one address or a list).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "RawRedirectTo")]
pub struct RedirectTo {
    pub addresses: Vec<Address>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedirectTo {
    addresses: List<Address>,
}

impl From<RawRedirectTo> for RedirectTo {
    fn from(raw: RawRedirectTo) -> Self {
        RedirectTo {
            addresses: raw.addresses.0,
        }
    }
}

/// `type = "reject"`: `code` (4xx or 5xx, default 550), `enhanced` (default 5.7.1, or 4.7.1
/// for a 4xx code; its class must agree with the code), `text`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawReject")]
pub struct Reject {
    pub code: u16,
    pub enhanced: [u16; 3],
    pub text: String,
}

/// Exchange's wording for a message refused by a transport rule.
const DEFAULT_REJECT_TEXT: &str = "Delivery not authorized, message refused";

impl Reject {
    /// The SMTP reply for the client (or the DSN).
    pub fn reply(&self) -> crate::mail::Reply {
        crate::mail::Reply::new(self.code, self.enhanced, self.text.clone())
    }

    pub fn is_temporary(&self) -> bool {
        self.code < 500
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReject {
    code: Option<u16>,
    enhanced: Option<String>,
    text: Option<HeaderText>,
}

impl TryFrom<RawReject> for Reject {
    type Error = String;
    fn try_from(raw: RawReject) -> Result<Self, String> {
        let code = raw.code.unwrap_or(550);
        let class = code / 100;
        if !(4..=5).contains(&class) || (code / 10) % 10 > 5 {
            return Err(format!(
                "reject code must be a 4xx or 5xx SMTP reply code, not {code}"
            ));
        }
        let enhanced = match raw.enhanced.as_deref() {
            None => [class, 7, 1],
            Some(text) => parse_enhanced(text)?,
        };
        if enhanced[0] != class {
            return Err(format!(
                "enhanced code {}.{}.{} does not agree with reply code {code}",
                enhanced[0], enhanced[1], enhanced[2]
            ));
        }
        Ok(Reject {
            code,
            enhanced,
            text: raw.text.map_or_else(
                || DEFAULT_REJECT_TEXT.to_string(),
                |t| t.as_str().to_string(),
            ),
        })
    }
}

/// RFC 3463 `class.subject.detail`, e.g. "5.7.1".
fn parse_enhanced(text: &str) -> Result<[u16; 3], String> {
    let bad = || format!("not an enhanced status code (like \"5.7.1\"): {text:?}");
    let mut out = [0u16; 3];
    let mut parts = text.split('.');
    for (i, slot) in out.iter_mut().enumerate() {
        let part = parts.next().ok_or_else(bad)?;
        let max_len = if i == 0 { 1 } else { 3 };
        if part.is_empty() || part.len() > max_len || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        *slot = part.parse().map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(out)
}

/// `type = "route_via"`: `connector`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteVia {
    pub connector: ConnectorName,
}

/// `type = "require_tls"` (no options).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequireTls {}

impl Action {
    /// The action's `type` in a rule file.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::SmimeEncrypt(_) => "smime_encrypt",
            Action::SmimeSign(_) => "smime_sign",
            Action::RmsProtect(_) => "rms_protect",
            Action::AddHeader(_) => "add_header",
            Action::SetHeader(_) => "set_header",
            Action::PrependSubject(_) => "prepend_subject",
            Action::RedirectTo(_) => "redirect_to",
            Action::Reject(_) => "reject",
            Action::RouteVia(_) => "route_via",
            Action::RequireTls(_) => "require_tls",
        }
    }
}

fn kebab<T: fmt::Debug>(value: T) -> String {
    let debug = format!("{value:?}");
    let mut out = String::new();
    for (i, c) in debug.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

impl fmt::Display for Action {
    /// One line, like an inline table in a rule file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind())?;
        match self {
            Action::SmimeEncrypt(s) => write!(
                f,
                " {{ algorithm = {:?}, key_transport = {:?}, on_missing_certificate = {:?} }}",
                kebab(s.algorithm),
                kebab(s.key_transport),
                kebab(s.on_missing_certificate)
            ),
            Action::SmimeSign(s) => write!(
                f,
                " {{ signature = {:?}, on_missing_certificate = {:?} }}",
                kebab(s.signature),
                kebab(s.on_missing_certificate)
            ),
            Action::RmsProtect(r) => {
                write!(f, " {{ template = {:?}", r.template)?;
                if !r.rights.is_empty() {
                    let rights: Vec<String> = r
                        .rights
                        .iter()
                        .map(|(p, rs)| {
                            let names: Vec<String> = rs.iter().map(kebab).collect();
                            format!("{p:?} = {names:?}")
                        })
                        .collect();
                    write!(f, ", rights = {{ {} }}", rights.join(", "))?;
                }
                if let Some(d) = r.expires_after {
                    write!(f, ", expires_after = \"{}\"", humantime::format_duration(d))?;
                }
                f.write_str(" }")
            }
            Action::AddHeader(h) | Action::SetHeader(h) => write!(
                f,
                " {{ name = {:?}, value = {:?} }}",
                h.name.as_str(),
                h.value.as_str()
            ),
            Action::PrependSubject(p) => write!(f, " {{ text = {:?} }}", p.text.as_str()),
            Action::RedirectTo(r) => {
                let list: Vec<&str> = r.addresses.iter().map(Address::as_str).collect();
                write!(f, " {{ addresses = {list:?} }}")
            }
            Action::Reject(r) => write!(
                f,
                " {{ code = {}, enhanced = \"{}.{}.{}\", text = {:?} }}",
                r.code, r.enhanced[0], r.enhanced[1], r.enhanced[2], r.text
            ),
            Action::RouteVia(r) => write!(f, " {{ connector = {:?} }}", r.connector.as_str()),
            Action::RequireTls(_) => Ok(()),
        }
    }
}

//! RFC 3461 DSN parameters: RET and ENVID on MAIL, NOTIFY and ORCPT on RCPT, and xtext.
//!
//! Values are parsed strictly (a malformed one is `501 5.5.4`), kept decoded, and encoded again
//! as xtext when they are passed on to the next hop.

use serde::{Deserialize, Serialize};

use super::Reply;

/// ENVID is at most 100 characters (RFC 3461 §4.4), after xtext decoding.
pub const MAX_ENVID: usize = 100;
/// ORCPT is at most 500 characters (RFC 3461 §4.2); we bound the decoded address the same way.
pub const MAX_ORCPT: usize = 500;

/// RET: what a failure notice returns of the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Ret {
    /// The whole message.
    Full,
    /// Its header section only.
    Hdrs,
}

impl Ret {
    pub fn as_str(self) -> &'static str {
        match self {
            Ret::Full => "FULL",
            Ret::Hdrs => "HDRS",
        }
    }
}

/// NOTIFY: the conditions a notice is wanted for; none of them is `NEVER`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Notify {
    pub success: bool,
    pub failure: bool,
    pub delay: bool,
}

impl Notify {
    pub const NEVER: Notify = Notify {
        success: false,
        failure: false,
        delay: false,
    };

    /// Parses `NEVER` or a comma list of SUCCESS, FAILURE, DELAY (each once), any case.
    pub fn parse(value: &str) -> Option<Notify> {
        if value.eq_ignore_ascii_case("NEVER") {
            return Some(Notify::NEVER);
        }
        let mut notify = Notify::NEVER;
        for word in value.split(',') {
            let flag = match word.to_ascii_uppercase().as_str() {
                "SUCCESS" => &mut notify.success,
                "FAILURE" => &mut notify.failure,
                "DELAY" => &mut notify.delay,
                _ => return None,
            };
            if *flag {
                return None;
            }
            *flag = true;
        }
        Some(notify)
    }
}

impl std::fmt::Display for Notify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let words: Vec<&str> = [
            (self.success, "SUCCESS"),
            (self.failure, "FAILURE"),
            (self.delay, "DELAY"),
        ]
        .into_iter()
        .filter_map(|(set, word)| set.then_some(word))
        .collect();
        if words.is_empty() {
            f.write_str("NEVER")
        } else {
            f.write_str(&words.join(","))
        }
    }
}

impl From<Notify> for String {
    fn from(n: Notify) -> String {
        n.to_string()
    }
}

impl TryFrom<String> for Notify {
    type Error = String;
    fn try_from(s: String) -> Result<Notify, String> {
        Notify::parse(&s).ok_or_else(|| format!("bad NOTIFY value {s:?}"))
    }
}

/// ORCPT: the recipient as the original sender gave it, decoded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Orcpt {
    /// The address type, e.g. "rfc822".
    pub addr_type: String,
    /// The address, xtext-decoded.
    pub address: String,
}

impl Orcpt {
    /// Parses `addr-type;xtext`: an atom of letters, digits and hyphens, then valid xtext that
    /// decodes to printable ASCII.
    pub fn parse(value: &str) -> Option<Orcpt> {
        let (addr_type, text) = value.split_once(';')?;
        let atom_ok = !addr_type.is_empty()
            && addr_type
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        let address = xtext_decode(text)?;
        (atom_ok && !address.is_empty() && address.len() <= MAX_ORCPT).then(|| Orcpt {
            addr_type: addr_type.to_string(),
            address,
        })
    }

    /// The wire form, `addr-type;xtext`.
    pub fn encode(&self) -> String {
        format!("{};{}", self.addr_type, xtext_encode(&self.address))
    }
}

/// The DSN parameters of MAIL FROM.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MailDsn {
    pub ret: Option<Ret>,
    /// ENVID, decoded.
    pub envid: Option<String>,
}

/// The DSN parameters of one RCPT TO.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RcptDsn {
    pub notify: Option<Notify>,
    pub orcpt: Option<Orcpt>,
}

/// The DSN parameters of one outbound transaction: MAIL's, and one RCPT entry per recipient.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransactionDsn {
    pub mail: MailDsn,
    pub rcpts: Vec<RcptDsn>,
}

/// The MAIL FROM parameters to pass on, each with its leading space (empty when none).
pub fn mail_params(ret: Option<Ret>, envid: Option<&str>) -> String {
    let mut out = String::new();
    if let Some(ret) = ret {
        out.push_str(&format!(" RET={}", ret.as_str()));
    }
    if let Some(envid) = envid {
        out.push_str(&format!(" ENVID={}", xtext_encode(envid)));
    }
    out
}

/// The RCPT TO parameters to pass on, each with its leading space (empty when none).
pub fn rcpt_params(rcpt: &RcptDsn) -> String {
    let mut out = String::new();
    if let Some(notify) = rcpt.notify {
        out.push_str(&format!(" NOTIFY={notify}"));
    }
    if let Some(orcpt) = &rcpt.orcpt {
        out.push_str(&format!(" ORCPT={}", orcpt.encode()));
    }
    out
}

pub(crate) fn bad(param: &str, expected: &str) -> Reply {
    Reply::new(
        501,
        [5, 5, 4],
        format!("Bad {param} parameter syntax: {expected}"),
    )
}

pub(crate) fn ret(value: Option<&str>) -> Result<Ret, Reply> {
    match value {
        Some(v) if v.eq_ignore_ascii_case("FULL") => Ok(Ret::Full),
        Some(v) if v.eq_ignore_ascii_case("HDRS") => Ok(Ret::Hdrs),
        _ => Err(bad("RET", "FULL or HDRS")),
    }
}

pub(crate) fn envid(value: Option<&str>) -> Result<String, Reply> {
    let expected = "xtext of at most 100 printable characters";
    let decoded = value
        .and_then(xtext_decode)
        .ok_or_else(|| bad("ENVID", expected))?;
    if decoded.is_empty() || decoded.len() > MAX_ENVID {
        return Err(bad("ENVID", expected));
    }
    Ok(decoded)
}

pub(crate) fn notify(value: Option<&str>) -> Result<Notify, Reply> {
    value
        .and_then(Notify::parse)
        .ok_or_else(|| bad("NOTIFY", "NEVER or a list of SUCCESS, FAILURE, DELAY"))
}

pub(crate) fn orcpt(value: Option<&str>) -> Result<Orcpt, Reply> {
    value
        .and_then(Orcpt::parse)
        .ok_or_else(|| bad("ORCPT", "addr-type;xtext, e.g. rfc822;user@example.com"))
}

/// Decodes xtext (RFC 3461 §4): characters `!`..`~` except `+` and `=` stand for themselves,
/// `+XX` for the octet with that hex value. The result must be printable ASCII (space allowed).
pub fn xtext_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let c = match b {
            b'+' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                if !hex.bytes().all(|h| h.is_ascii_hexdigit()) {
                    return None;
                }
                i += 3;
                u8::from_str_radix(hex, 16).ok()?
            }
            b'=' => return None,
            b'!'..=b'~' => {
                i += 1;
                b
            }
            _ => return None,
        };
        if !(b' '..=b'~').contains(&c) {
            return None;
        }
        out.push(char::from(c));
    }
    Some(out)
}

/// Encodes text as xtext: `+`, `=`, blanks and anything outside `!`..`~` as `+XX`.
pub fn xtext_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'+' | b'=' => out.push_str(&format!("+{b:02X}")),
            b'!'..=b'~' => out.push(char::from(b)),
            _ => out.push_str(&format!("+{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xtext_round_trips_and_rejects_bad_forms() {
        assert_eq!(xtext_decode("a+2Bb+3Dc").as_deref(), Some("a+b=c"));
        assert_eq!(xtext_decode("x+20y").as_deref(), Some("x y"));
        assert_eq!(xtext_decode("").as_deref(), Some(""));
        for bad in [
            "a=b", "a+", "a+2", "a+G0", "a+0A", "a+7F", "é", "a b", "+C3+A9",
        ] {
            assert_eq!(xtext_decode(bad), None, "{bad:?}");
        }
        let text = "Q+1=2 <x@y.test>";
        assert_eq!(xtext_encode(text), "Q+2B1+3D2+20<x@y.test>");
        assert_eq!(xtext_decode(&xtext_encode(text)).as_deref(), Some(text));
    }

    #[test]
    fn notify_parses_never_alone_or_a_list_once_each() {
        let all = Notify {
            success: true,
            failure: true,
            delay: true,
        };
        assert_eq!(Notify::parse("never"), Some(Notify::NEVER));
        assert_eq!(Notify::parse("delay,Success,FAILURE"), Some(all));
        assert_eq!(all.to_string(), "SUCCESS,FAILURE,DELAY");
        assert_eq!(Notify::NEVER.to_string(), "NEVER");
        for bad in [
            "",
            "NEVER,SUCCESS",
            "SUCCESS,",
            "SUCCESS,SUCCESS",
            "ALWAYS",
            ",DELAY",
        ] {
            assert_eq!(Notify::parse(bad), None, "{bad:?}");
        }
        let json = serde_json::to_string(&all).unwrap();
        assert_eq!(json, "\"SUCCESS,FAILURE,DELAY\"");
        assert_eq!(serde_json::from_str::<Notify>(&json).unwrap(), all);
        assert!(serde_json::from_str::<Notify>("\"SOMETIMES\"").is_err());
    }

    #[test]
    fn orcpt_needs_a_type_and_an_address() {
        let o = Orcpt::parse("rfc822;bob+2Bx@example.com").unwrap();
        assert_eq!(o.addr_type, "rfc822");
        assert_eq!(o.address, "bob+x@example.com");
        assert_eq!(o.encode(), "rfc822;bob+2Bx@example.com");
        for bad in [
            "bob@example.com",
            ";bob@x",
            "rfc822;",
            "rfc 822;b@x",
            "rfc822;b=x",
        ] {
            assert_eq!(Orcpt::parse(bad), None, "{bad:?}");
        }
        let long = format!("rfc822;{}", "a".repeat(MAX_ORCPT + 1));
        assert_eq!(Orcpt::parse(&long), None);
    }

    #[test]
    fn params_are_written_in_wire_form() {
        assert_eq!(mail_params(None, None), "");
        assert_eq!(
            mail_params(Some(Ret::Hdrs), Some("id 1+")),
            " RET=HDRS ENVID=id+201+2B"
        );
        let rcpt = RcptDsn {
            notify: Some(Notify::parse("FAILURE,DELAY").unwrap()),
            orcpt: Orcpt::parse("rfc822;a@b.test"),
        };
        assert_eq!(
            rcpt_params(&rcpt),
            " NOTIFY=FAILURE,DELAY ORCPT=rfc822;a@b.test"
        );
        assert_eq!(envid(Some(&"x".repeat(MAX_ENVID))).unwrap().len(), 100);
        assert!(envid(Some(&"x".repeat(MAX_ENVID + 1))).is_err());
        assert!(envid(Some("")).is_err());
        assert!(envid(None).is_err());
    }
}

//! The two texts of MTA-STS (RFC 8461), parsed without I/O: the `_mta-sts` TXT record (§3.1)
//! and the policy file (§3.2), and the MX host patterns a policy names (§4.1).

use std::fmt;

/// The longest `max_age` a policy may give: one year (RFC 8461 §3.2).
pub const MAX_AGE_LIMIT: u32 = 31_557_600;

/// What a domain's policy asks of senders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Deliver only to matching MX hosts over verified TLS.
    Enforce,
    /// Check as in enforce, report what fails, deliver anyway.
    Testing,
    /// The domain withdraws its policy: as if it had none.
    None,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        }
    }
}

/// One `mx:` pattern: a host name, or `*.` followed by a name for exactly one more label.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MxPattern(String);

impl MxPattern {
    /// Lower-cases and checks a pattern; the wildcard may only be the whole leftmost label.
    pub fn parse(text: &str) -> Option<MxPattern> {
        let t = text.trim().trim_end_matches('.').to_ascii_lowercase();
        let rest = t.strip_prefix("*.").unwrap_or(&t);
        if !is_host_name(rest) || (t.starts_with("*.") && !rest.contains('.')) {
            return None;
        }
        Some(MxPattern(t))
    }

    /// RFC 8461 §4.1: `mail.example.com` matches itself; `*.example.com` matches
    /// `mx1.example.com` but neither `example.com` nor `a.b.example.com`. Case and a trailing
    /// dot of `host` do not matter.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        match self.0.strip_prefix("*.") {
            Some(parent) => host
                .split_once('.')
                .is_some_and(|(first, rest)| !first.is_empty() && rest == parent),
            None => host == self.0,
        }
    }
}

impl fmt::Display for MxPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A parsed policy file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Policy {
    pub mode: Mode,
    /// Empty only in mode `none`.
    pub mx: Vec<MxPattern>,
    /// Seconds the policy may be cached (at most [`MAX_AGE_LIMIT`]).
    pub max_age: u32,
}

impl Policy {
    /// Whether `host` (an MX host name) is one the policy names.
    pub fn allows_mx(&self, host: &str) -> bool {
        self.mx.iter().any(|p| p.matches(host))
    }

    /// The patterns, joined for messages: "mx.example.test, *.mx.example.test".
    pub fn patterns(&self) -> String {
        let list: Vec<String> = self.mx.iter().map(ToString::to_string).collect();
        list.join(", ")
    }
}

/// Why a TXT record or a policy file is not valid: the domain is then treated as publishing no
/// policy (RFC 8461 §3.1, §3.2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("no TXT record starts with v=STSv1")]
    NoRecord,
    #[error("{0} TXT records start with v=STSv1 (exactly one is allowed)")]
    ManyRecords(usize),
    #[error("TXT record: {0}")]
    BadRecord(String),
    #[error("policy file: {0}")]
    BadPolicy(String),
}

/// The one `v=STSv1` record of `_mta-sts.<domain>`: its `id` names the policy version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxtRecord {
    pub id: String,
}

/// RFC 8461 §3.1: records not starting with `v=STSv1;` are discarded; of the rest there must be
/// exactly one, and it must be valid. Each item is one TXT record (its strings joined).
pub fn parse_txt<S: AsRef<str>>(records: &[S]) -> Result<TxtRecord, PolicyError> {
    let sts: Vec<&str> = records
        .iter()
        .map(AsRef::as_ref)
        .filter(|r| r.starts_with("v=STSv1;") || *r == "v=STSv1")
        .collect();
    match sts.as_slice() {
        [] => Err(PolicyError::NoRecord),
        [one] => parse_one_txt(one),
        many => Err(PolicyError::ManyRecords(many.len())),
    }
}

fn parse_one_txt(record: &str) -> Result<TxtRecord, PolicyError> {
    let bad = |why: String| PolicyError::BadRecord(why);
    let mut id = None;
    for (i, field) in record.split(';').enumerate() {
        // sts-field-delim is ";" with optional spaces or tabs around it; a final ";" is allowed.
        let field = field.trim_matches([' ', '\t']);
        if field.is_empty() && i > 0 {
            continue;
        }
        let (key, value) = field
            .split_once('=')
            .ok_or_else(|| bad(format!("field {field:?} is not key=value")))?;
        let key_ok = is_field_name(key);
        let value_ok = !value.is_empty()
            && value
                .bytes()
                .all(|b| (0x21..=0x7e).contains(&b) && b != b';' && b != b'=');
        if !key_ok || !value_ok {
            return Err(bad(format!("field {field:?} is not valid")));
        }
        match (i, key) {
            (0, "v") if value == "STSv1" => {}
            (0, _) => return Err(bad("the first field must be v=STSv1".into())),
            (_, "id") if id.is_none() => {
                if value.len() > 32 || !value.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    return Err(bad(format!(
                        "id {value:?} is not 1 to 32 letters or digits"
                    )));
                }
                id = Some(value.to_string());
            }
            // Unknown fields (and a repeated id) are ignored.
            _ => {}
        }
    }
    id.map(|id| TxtRecord { id })
        .ok_or_else(|| bad("no id field".into()))
}

/// RFC 8461 §3.2: `key: value` lines ending in LF or CRLF; `version: STSv1`, `mode`, `max_age`
/// are required and `mx` is repeated (required unless mode is `none`). Unknown keys are
/// ignored; of a repeated `version`, `mode` or `max_age` the first counts. Any line that is not
/// a valid `key: value` pair makes the whole policy invalid.
pub fn parse_policy(body: &[u8]) -> Result<Policy, PolicyError> {
    let bad = |why: String| PolicyError::BadPolicy(why);
    let text = std::str::from_utf8(body).map_err(|_| bad("not UTF-8 text".into()))?;
    let (mut version, mut mode, mut max_age) = (None, None, None);
    let mut mx = Vec::new();
    let mut lines: Vec<&str> = text.split('\n').collect();
    // A final line terminator leaves one empty item behind; blank lines elsewhere are errors.
    if lines.last() == Some(&"") {
        lines.pop();
    }
    for (n, line) in lines.iter().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let shown = || {
            let cut: String = line.chars().take(40).collect();
            format!("line {}: {cut:?}", n + 1)
        };
        let (key, value) = line
            .split_once(':')
            .ok_or_else(|| bad(format!("{} is not key: value", shown())))?;
        let value = value.trim_matches([' ', '\t']);
        let key_ok = is_field_name(key);
        if !key_ok || value.chars().any(char::is_control) {
            return Err(bad(format!("{} is not a valid field", shown())));
        }
        match key {
            "version" if version.is_none() => version = Some(value),
            "mode" if mode.is_none() => {
                mode = Some(match value {
                    "enforce" => Mode::Enforce,
                    "testing" => Mode::Testing,
                    "none" => Mode::None,
                    other => return Err(bad(format!("unknown mode {other:?}"))),
                })
            }
            "max_age" if max_age.is_none() => {
                let age = (!value.is_empty()
                    && value.len() <= 10
                    && value.bytes().all(|b| b.is_ascii_digit()))
                .then(|| value.parse::<u64>().ok())
                .flatten()
                .filter(|a| *a <= u64::from(MAX_AGE_LIMIT))
                .ok_or_else(|| {
                    bad(format!(
                        "max_age {value:?} is not a number of seconds up to {MAX_AGE_LIMIT}"
                    ))
                })?;
                max_age = Some(age as u32);
            }
            "mx" => mx.push(
                MxPattern::parse(value)
                    .ok_or_else(|| bad(format!("mx {value:?} is not a host name pattern")))?,
            ),
            _ => {}
        }
    }
    match version {
        Some("STSv1") => {}
        Some(v) => return Err(bad(format!("version {v:?} is not STSv1"))),
        None => return Err(bad("no version field".into())),
    }
    let mode = mode.ok_or_else(|| bad("no mode field".into()))?;
    let max_age = max_age.ok_or_else(|| bad("no max_age field".into()))?;
    if mx.is_empty() && mode != Mode::None {
        return Err(bad(format!("mode {} needs at least one mx", mode.as_str())));
    }
    Ok(Policy { mode, mx, max_age })
}

/// LDH labels of 1 to 63 characters, at most 253 in all.
fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// A field name of the TXT record or the policy file (RFC 8461 §3.1 `sts-field-name`,
/// §3.2 `sts-policy-field-name`): 1–32 of letters, digits, `_`, `-`, `.`, starting alphanumeric.
fn is_field_name(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 32
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        && key.as_bytes()[0].is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfc_example_policy_parses() {
        // RFC 8461 §3.2.
        let body = b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n";
        let p = parse_policy(body).unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.max_age, 604_800);
        assert_eq!(
            p.patterns(),
            "mail.example.com, *.example.net, backupmx.example.com"
        );
        // LF alone, no final newline, spaces around values, unknown keys: all fine.
        let p = parse_policy(
            b"version: STSv1\nmode:testing\nmx:  MX.Example.COM \nfoo: bar\nmax_age: 0",
        )
        .unwrap();
        assert_eq!((p.mode, p.max_age), (Mode::Testing, 0));
        assert!(p.allows_mx("mx.example.com."));
    }

    #[test]
    fn invalid_policies_are_refused() {
        let cases: &[&[u8]] = &[
            b"",
            b"version: STSv2\nmode: enforce\nmx: a.test\nmax_age: 1\n",
            b"mode: enforce\nmx: a.test\nmax_age: 1\n",
            b"version: STSv1\nmode: strict\nmx: a.test\nmax_age: 1\n",
            b"version: STSv1\nmode: enforce\nmax_age: 1\n",
            b"version: STSv1\nmode: enforce\nmx: a.test\n",
            b"version: STSv1\nmode: enforce\nmx: a.test\nmax_age: 31557601\n",
            b"version: STSv1\nmode: enforce\nmx: a.test\nmax_age: -1\n",
            b"version: STSv1\nmode: enforce\nmx: a.*.test\nmax_age: 1\n",
            b"version: STSv1\nmode: enforce\nmx: *.test.\nmax_age: 1\nmx: *\n",
            b"version: STSv1\nmode: enforce\n\nmx: a.test\nmax_age: 1\n",
            b"<html><body>version: STSv1</body></html>\n",
            b"version: STSv1\nmode: enforce\nmx: a.test\nmax_age: 1\n\xff\n",
        ];
        for body in cases {
            assert!(
                parse_policy(body).is_err(),
                "{:?} was accepted",
                String::from_utf8_lossy(body)
            );
        }
        // Mode none needs no mx; the first of a repeated mode counts.
        let p = parse_policy(b"version: STSv1\nmode: none\nmax_age: 86400\n").unwrap();
        assert_eq!(p.mode, Mode::None);
        let p =
            parse_policy(b"version: STSv1\nmode: testing\nmode: enforce\nmx: a.test\nmax_age: 5\n")
                .unwrap();
        assert_eq!(p.mode, Mode::Testing);
    }

    #[test]
    fn wildcards_cover_exactly_one_leftmost_label() {
        let p = MxPattern::parse("*.example.com").unwrap();
        assert!(p.matches("mx1.example.com") && p.matches("MX1.EXAMPLE.COM."));
        assert!(!p.matches("example.com"));
        assert!(!p.matches("a.b.example.com"));
        assert!(!p.matches("evilexample.com"));
        let exact = MxPattern::parse("mail.example.com").unwrap();
        assert!(exact.matches("mail.example.com") && !exact.matches("x.mail.example.com"));
        for bad in [
            "*", "*.", "*.com", "a.*.com", "**.a.com", "-a.com", "a b.com", "",
        ] {
            assert!(MxPattern::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn txt_records_follow_section_3_1() {
        // RFC 8461 §3.1 example.
        let r = parse_txt(&["v=STSv1; id=20160831085700Z;"]).unwrap();
        assert_eq!(r.id, "20160831085700Z");
        let r = parse_txt(&["v=spf1 -all", "v=STSv1;id=abc123"]).unwrap();
        assert_eq!(r.id, "abc123");
        assert_eq!(parse_txt(&["v=spf1 -all"]), Err(PolicyError::NoRecord));
        assert_eq!(
            parse_txt(&["v=STSv1; id=a;", "v=STSv1; id=b;"]),
            Err(PolicyError::ManyRecords(2))
        );
        let invalid = [
            "v=STSv1;",
            "v=STSv1; id=;",
            "v=STSv1; id=has-dash;",
            "v=STSv1; id=0123456789012345678901234567890123;",
            "v=STSv1; junk",
            "v=STSv1; id=a; =b",
        ];
        for t in invalid {
            assert!(
                matches!(parse_txt(&[t]), Err(PolicyError::BadRecord(_))),
                "{t}"
            );
        }
        // Unknown fields are ignored; "v=STSv10;" is not this version.
        assert_eq!(parse_txt(&["v=STSv1; foo=bar; id=x1"]).unwrap().id, "x1");
        assert_eq!(parse_txt(&["v=STSv10; id=x"]), Err(PolicyError::NoRecord));
    }
}

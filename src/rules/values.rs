//! Validated values that appear in rule files (header names and text, addresses, connector
//! names, sizes, "one or many" lists); each refuses bad input while the file is parsed, so
//! the error carries the line.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

/// Longest header line allowed by RFC 5322 §2.1.1, without CRLF.
const MAX_HEADER_TEXT: usize = 998;

/// A header field name (RFC 5322 §2.2: printable ASCII without `:`), e.g. `X-Sealpost-External`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct HeaderName(String);

impl HeaderName {
    pub fn new(name: &str) -> Result<HeaderName, String> {
        if name.is_empty() || name.len() > 76 {
            return Err(format!("header name must be 1 to 76 characters: {name:?}"));
        }
        if !name.bytes().all(|b| (33..=126).contains(&b) && b != b':') {
            return Err(format!(
                "header name may hold only printable ASCII without ':' or spaces: {name:?}"
            ));
        }
        Ok(HeaderName(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Content-* and MIME-Version describe the body: rules may match them but not write them.
    pub fn is_mime_structure(&self) -> bool {
        let lower = self.0.to_ascii_lowercase();
        lower.starts_with("content-") || lower == "mime-version"
    }
}

impl TryFrom<String> for HeaderName {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        HeaderName::new(&value)
    }
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Text written into a header: printable ASCII and spaces only (no CR, LF, tab or other
/// control characters, so a rule can never inject a header line), at most 998 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct HeaderText(String);

impl HeaderText {
    pub fn new(text: &str) -> Result<HeaderText, String> {
        if text.contains(['\r', '\n']) {
            return Err(format!("header text must not contain CR or LF: {text:?}"));
        }
        if !text.bytes().all(|b| (32..=126).contains(&b)) {
            return Err(format!(
                "header text must be printable ASCII (encode other text with RFC 2047): {text:?}"
            ));
        }
        if text.trim().is_empty() || text.len() > MAX_HEADER_TEXT {
            return Err(format!(
                "header text must be 1 to {MAX_HEADER_TEXT} characters and not blank: {text:?}"
            ));
        }
        Ok(HeaderText(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for HeaderText {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        HeaderText::new(&value)
    }
}

impl fmt::Display for HeaderText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A mailbox address `local@domain` (RFC 5321 syntax, without angle brackets). Compared
/// ignoring case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Address {
    text: String,
    lower: String,
}

impl Address {
    pub fn new(text: &str) -> Result<Address, String> {
        let wrapped = format!("<{text}>");
        match crate::mail::address::parse_path(&wrapped) {
            Some((mailbox, "")) if mailbox == text && !text.is_empty() => Ok(Address {
                text: text.to_string(),
                lower: text.to_lowercase(),
            }),
            _ => Err(format!("not a mail address (local@domain): {text:?}")),
        }
    }

    /// The address as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The address in lowercase, for comparisons.
    pub fn lower(&self) -> &str {
        &self.lower
    }
}

impl TryFrom<String> for Address {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        Address::new(&value)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The name of a connector (`[[connector.inbound]]` / `[[connector.outbound]]`): letters,
/// digits, `.`, `_` and `-`, at most 64 characters. Compared exactly.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct ConnectorName(String);

impl ConnectorName {
    pub fn new(name: &str) -> Result<ConnectorName, String> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(ConnectorName(name.to_string()))
        } else {
            Err(format!(
                "not a connector name (letters, digits, '.', '_', '-'; at most 64): {name:?}"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ConnectorName {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        ConnectorName::new(&value)
    }
}

impl fmt::Display for ConnectorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Text searched for in a subject or body: stored lowercase with runs of white space folded
/// to one space, the same normalisation the searched text gets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Needle(String);

impl Needle {
    pub fn new(text: &str) -> Result<Needle, String> {
        let folded = normalize_text(text);
        if folded.trim().is_empty() {
            return Err("empty search text".into());
        }
        if folded.chars().any(char::is_control) {
            return Err(format!("control character in search text {text:?}"));
        }
        Ok(Needle(folded))
    }

    /// The normalised (lowercase, white space folded) text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Needle {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        Needle::new(&value)
    }
}

impl fmt::Display for Needle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Lowercase, with every run of white space (including line breaks) turned into one space.
pub(crate) fn normalize_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            if !in_space {
                out.push(' ');
            }
            in_space = true;
        } else {
            out.extend(c.to_lowercase());
            in_space = false;
        }
    }
    out
}

/// A size in bytes, written as an integer (`10485760`) or a string with a binary unit
/// (`"10MB"`, `"512 KiB"`, `"1g"`; K = 1024, M = 1024², G = 1024³).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl Size {
    pub fn parse(text: &str) -> Result<Size, String> {
        let t = text.trim();
        let digits = t.bytes().take_while(u8::is_ascii_digit).count();
        let (number, unit) = t.split_at(digits);
        let n: u64 = number
            .parse()
            .map_err(|_| format!("not a size: {text:?} (e.g. 1048576 or \"10MB\")"))?;
        let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            "g" | "gb" | "gib" => 1 << 30,
            _ => {
                return Err(format!(
                    "unknown size unit in {text:?} (use B, KB, MB or GB)"
                ))
            }
        };
        n.checked_mul(factor)
            .map(Size)
            .ok_or_else(|| format!("size too large: {text:?}"))
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size in bytes, or a string such as \"10MB\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                Size::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(SizeVisitor)
    }
}

/// One value or a non-empty list of values (`recipient_domain = "a.test"` or `= ["a.test",
/// "b.test"]`); a condition with a list holds when any value matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct List<T>(pub Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ListVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ListVisitor<T> {
            type Value = List<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<List<T>, E> {
                T::deserialize(de::value::StrDeserializer::<E>::new(v)).map(|t| List(vec![t]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<List<T>, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element()? {
                    out.push(item);
                }
                if out.is_empty() {
                    return Err(de::Error::custom(
                        "empty list: give at least one value or leave the key out",
                    ));
                }
                Ok(List(out))
            }
        }
        d.deserialize_any(ListVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_are_printable_ascii_without_colon() {
        assert!(HeaderName::new("X-Sealpost-External").is_ok());
        for bad in [
            "",
            "X Bad",
            "X:Bad",
            "X-Bad\r\n",
            "Ünicode",
            &"x".repeat(77),
        ] {
            assert!(HeaderName::new(bad).is_err(), "{bad:?}");
        }
        assert!(HeaderName::new("content-type").unwrap().is_mime_structure());
        assert!(HeaderName::new("MIME-Version").unwrap().is_mime_structure());
        assert!(!HeaderName::new("X-Content").unwrap().is_mime_structure());
    }

    #[test]
    fn header_text_refuses_crlf_controls_and_non_ascii() {
        assert!(HeaderText::new("yes").is_ok());
        assert!(HeaderText::new("[EXTERNAL]").is_ok());
        let e = HeaderText::new("yes\r\nBcc: evil@x.test").unwrap_err();
        assert!(e.contains("CR or LF"), "{e}");
        for bad in ["a\nb", "a\tb", "a\0b", "é", "  ", ""] {
            assert!(HeaderText::new(bad).is_err(), "{bad:?}");
        }
        assert!(HeaderText::new(&"x".repeat(999)).is_err());
    }

    #[test]
    fn addresses_follow_smtp_syntax() {
        let a = Address::new("Bob@Fabrikam.test").unwrap();
        assert_eq!(a.as_str(), "Bob@Fabrikam.test");
        assert_eq!(a.lower(), "bob@fabrikam.test");
        for bad in [
            "",
            "bob",
            "bob@",
            "@x.test",
            "a b@x.test",
            "<a@x.test>",
            "a@x.test>",
        ] {
            assert!(Address::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn connector_names() {
        assert!(ConnectorName::new("to-fabrikam").is_ok());
        assert!(ConnectorName::new("from_partner.1").is_ok());
        assert!(ConnectorName::new("").is_err());
        assert!(ConnectorName::new("a b").is_err());
    }

    #[test]
    fn needles_are_folded_lowercase() {
        assert_eq!(
            Needle::new("Top  SECRET\n").unwrap().as_str(),
            "top secret "
        );
        assert!(Needle::new("   ").is_err());
        assert!(Needle::new("a\u{7}b").is_err());
        assert_eq!(normalize_text("A\r\n\t b"), "a b");
    }

    #[test]
    fn sizes_in_bytes_or_with_binary_units() {
        assert_eq!(Size::parse("1024").unwrap(), Size(1024));
        assert_eq!(Size::parse("10MB").unwrap(), Size(10 << 20));
        assert_eq!(Size::parse("10 mb").unwrap(), Size(10 << 20));
        assert_eq!(Size::parse("512KiB").unwrap(), Size(512 << 10));
        assert_eq!(Size::parse("2g").unwrap(), Size(2 << 30));
        for bad in ["", "MB", "1.5MB", "10 TB", "-1", "99999999999999999999"] {
            assert!(Size::parse(bad).is_err(), "{bad}");
        }
        assert!(Size::parse("18446744073709551615G").is_err());
    }
}

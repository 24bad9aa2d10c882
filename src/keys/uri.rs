//! RFC 7512 `pkcs11:` URIs: which token and which object a key reference names.

use std::fmt;

use super::KeyError;

/// A parsed `pkcs11:` URI. Only the path attributes that select a token and a key are kept
/// (`token`, `object`, `id`); a PIN inside the URI (`pin-value`) is refused.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pkcs11Uri {
    /// The token label (`token=`).
    pub token: String,
    /// The object label (`object=`, CKA_LABEL).
    pub object: Option<String>,
    /// The object id (`id=`, CKA_ID), raw bytes.
    pub id: Option<Vec<u8>>,
}

/// Whether `text` looks like a PKCS#11 URI rather than a file path.
pub fn is_pkcs11_uri(text: &str) -> bool {
    text.trim_start().starts_with("pkcs11:")
}

impl Pkcs11Uri {
    /// Parses `pkcs11:token=...;object=...[;id=%01%02][?query]`. A token label and an object
    /// label or id are required.
    pub fn parse(text: &str) -> Result<Pkcs11Uri, KeyError> {
        let bad = |problem: &str| KeyError::Uri(format!("{text:?}: {problem}"));
        let rest = text
            .trim()
            .strip_prefix("pkcs11:")
            .ok_or_else(|| bad("does not start with pkcs11:"))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        for attr in query.split('&').filter(|a| !a.is_empty()) {
            let name = attr.split_once('=').map_or(attr, |(n, _)| n);
            if name == "pin-value" || name == "pin-source" {
                // Not echoing the URI: it holds the PIN.
                return Err(KeyError::Uri(
                    "a PIN does not belong in a pkcs11: URI: use [pkcs11] pin_file or pin_env"
                        .into(),
                ));
            }
        }
        let mut uri = Pkcs11Uri {
            token: String::new(),
            object: None,
            id: None,
        };
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (name, value) = attr
                .split_once('=')
                .ok_or_else(|| bad(&format!("attribute {attr:?} has no value")))?;
            let value = percent_decode(value).ok_or_else(|| bad("bad %-escape"))?;
            match name {
                "token" => {
                    uri.token = String::from_utf8(value).map_err(|_| bad("token is not UTF-8"))?
                }
                "object" => {
                    uri.object =
                        Some(String::from_utf8(value).map_err(|_| bad("object is not UTF-8"))?)
                }
                "id" => uri.id = Some(value),
                "type" if value == b"private" || value == b"public" => {}
                "manufacturer"
                | "model"
                | "serial"
                | "library-description"
                | "library-manufacturer"
                | "library-version"
                | "slot-description"
                | "slot-id"
                | "slot-manufacturer" => {}
                other => return Err(bad(&format!("unsupported attribute {other:?}"))),
            }
        }
        if uri.token.is_empty() {
            return Err(bad("names no token (token=...)"));
        }
        if uri.object.is_none() && uri.id.is_none() {
            return Err(bad("names no key (object=... or id=...)"));
        }
        Ok(uri)
    }
}

impl fmt::Display for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pkcs11:token={}", percent_encode(self.token.as_bytes()))?;
        if let Some(object) = &self.object {
            write!(f, ";object={}", percent_encode(object.as_bytes()))?;
        }
        if let Some(id) = &self.id {
            f.write_str(";id=")?;
            for b in id {
                write!(f, "%{b:02X}")?;
            }
        }
        Ok(())
    }
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

fn percent_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~:[]@!$'()*+,&".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_token_object_and_id() {
        let uri =
            Pkcs11Uri::parse("pkcs11:token=seal%20post;object=contoso-tenant;id=%01%ab").unwrap();
        assert_eq!(uri.token, "seal post");
        assert_eq!(uri.object.as_deref(), Some("contoso-tenant"));
        assert_eq!(uri.id.as_deref(), Some(&[1u8, 0xab][..]));
        assert_eq!(
            uri.to_string(),
            "pkcs11:token=seal%20post;object=contoso-tenant;id=%01%AB"
        );
        assert_eq!(Pkcs11Uri::parse(&uri.to_string()).unwrap(), uri);
    }

    #[test]
    fn refuses_pins_and_incomplete_uris() {
        let err = |s: &str| Pkcs11Uri::parse(s).unwrap_err().to_string();
        assert!(err("pkcs11:token=a;object=b?pin-value=1234").contains("pin_file"));
        assert!(!err("pkcs11:token=a;object=b?pin-value=1234").contains("pin-value=1234"));
        assert!(err("pkcs11:object=b").contains("no token"));
        assert!(err("pkcs11:token=a").contains("no key"));
        assert!(err("pkcs11:token=a;object=%zz").contains("%-escape"));
        assert!(err("pkcs11:token=a;color=red;object=b").contains("color"));
        assert!(err("keys/tenant.pem").contains("pkcs11:"));
        assert!(is_pkcs11_uri("pkcs11:token=a;object=b"));
        assert!(!is_pkcs11_uri("keys/roots/a.key"));
    }
}

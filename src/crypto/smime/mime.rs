//! MIME plumbing for S/MIME: splitting raw header fields, recognising encrypted messages,
//! building the outer `application/pkcs7-mime` message and merging a decrypted entity back.
//!
//! Everything works on raw bytes: header fields are copied with their folding and line endings,
//! so what goes in comes out byte for byte.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

use super::{b64, DecryptError};

/// One raw header field: its name and every byte of it (folded lines and line ending included).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field<'a> {
    pub name: &'a [u8],
    pub raw: &'a [u8],
}

impl Field<'_> {
    pub(crate) fn is_content(&self) -> bool {
        self.name.len() >= 8 && self.name[..8].eq_ignore_ascii_case(b"content-")
    }

    pub(crate) fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }

    /// The value after the colon, unfolded (line breaks removed), as text.
    fn value(&self) -> String {
        let colon = self
            .raw
            .iter()
            .position(|&b| b == b':')
            .map_or(0, |i| i + 1);
        let v: Vec<u8> = self.raw[colon..]
            .iter()
            .copied()
            .filter(|&b| b != b'\r' && b != b'\n')
            .collect();
        String::from_utf8_lossy(&v).trim().to_string()
    }
}

/// A message split into header fields, the empty line, and the body.
#[derive(Debug)]
pub(crate) struct Parts<'a> {
    pub fields: Vec<Field<'a>>,
    /// The empty line between header and body ("\r\n" or "\n"), empty if there is no body.
    pub separator: &'a [u8],
    pub body: &'a [u8],
    /// The message's line ending, taken from its first line.
    pub eol: &'static [u8],
}

/// Splits a message at its first empty line. Lines starting with a space or tab continue the
/// field before them; a line without a colon is kept as a field of its own.
pub(crate) fn split(message: &[u8]) -> Parts<'_> {
    let eol: &'static [u8] = match message.iter().position(|&b| b == b'\n') {
        Some(i) if i > 0 && message[i - 1] == b'\r' => b"\r\n",
        Some(_) => b"\n",
        None => b"\r\n",
    };
    let mut fields: Vec<Field<'_>> = Vec::new();
    let mut pos = 0;
    while pos < message.len() {
        let end = message[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(message.len(), |i| pos + i + 1);
        let line = &message[pos..end];
        if line == b"\r\n" || line == b"\n" {
            return Parts {
                fields,
                separator: line,
                body: &message[end..],
                eol,
            };
        }
        let continues = matches!(line.first(), Some(b' ' | b'\t'));
        match fields.last_mut() {
            Some(last) if continues => {
                let start = last.raw.as_ptr() as usize - message.as_ptr() as usize;
                last.raw = &message[start..end];
            }
            _ => {
                let name_end = line.iter().position(|&b| b == b':').unwrap_or(line.len());
                fields.push(Field {
                    name: trim(&line[..name_end]),
                    raw: line,
                });
            }
        }
        pos = end;
    }
    Parts {
        fields,
        separator: b"",
        body: b"",
        eol,
    }
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if first.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if last.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    s
}

/// Appends a raw field, adding a line ending if it is the last line of a message without one.
fn push_field(out: &mut Vec<u8>, raw: &[u8], eol: &[u8]) {
    out.extend_from_slice(raw);
    if !raw.ends_with(b"\n") {
        out.extend_from_slice(eol);
    }
}

impl Parts<'_> {
    fn field(&self, name: &str) -> Option<&Field<'_>> {
        self.fields.iter().find(|f| f.is(name))
    }

    pub(crate) fn content_type(&self) -> Option<ContentType> {
        self.field("content-type")
            .map(|f| ContentType::parse(&f.value()))
    }

    /// The entity to encrypt: the Content-* fields as they were, the empty line, the body.
    pub fn inner_entity(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.inner_entity_len());
        self.write_inner_entity(&mut out);
        out
    }

    /// The length of `inner_entity()`.
    pub fn inner_entity_len(&self) -> usize {
        let fields: usize = self
            .fields
            .iter()
            .filter(|f| f.is_content())
            .map(|f| {
                f.raw.len()
                    + if f.raw.ends_with(b"\n") {
                        0
                    } else {
                        self.eol.len()
                    }
            })
            .sum();
        let separator = if self.separator.is_empty() {
            self.eol.len()
        } else {
            self.separator.len()
        };
        fields + separator + self.body.len()
    }

    /// Appends `inner_entity()` to `out`.
    pub fn write_inner_entity(&self, out: &mut Vec<u8>) {
        for f in self.fields.iter().filter(|f| f.is_content()) {
            push_field(out, f.raw, self.eol);
        }
        if self.separator.is_empty() {
            out.extend_from_slice(self.eol);
        } else {
            out.extend_from_slice(self.separator);
        }
        out.extend_from_slice(self.body);
    }

    /// The routing header fields (all but Content-*), then the S/MIME Content-* fields and the
    /// CMS structure in base64 lines of 76 characters.
    pub fn outer_message(&self, smime_type: &str, der: &[u8]) -> Vec<u8> {
        let eol = self.eol;
        let mut out = Vec::with_capacity(
            self.fields.iter().map(|f| f.raw.len() + 2).sum::<usize>()
                + 256
                + b64::encoded_lines_len(der.len(), eol.len()),
        );
        for f in self.fields.iter().filter(|f| !f.is_content()) {
            push_field(&mut out, f.raw, eol);
        }
        let mut line = |s: &str| {
            out.extend_from_slice(s.as_bytes());
            out.extend_from_slice(eol);
        };
        if self.field("mime-version").is_none() {
            line("MIME-Version: 1.0");
        }
        line(&format!(
            "Content-Type: application/pkcs7-mime; smime-type={smime_type};"
        ));
        line("\tname=smime.p7m");
        line("Content-Disposition: attachment; filename=smime.p7m");
        line("Content-Transfer-Encoding: base64");
        line("");
        b64::encode_lines(der, eol, &mut out);
        out
    }

    /// The outer routing fields followed by the decrypted inner entity.
    pub fn merge(&self, inner: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(inner.len() + 2048);
        for f in self.fields.iter().filter(|f| !f.is_content()) {
            push_field(&mut out, f.raw, self.eol);
        }
        out.extend_from_slice(inner);
        out
    }
}

/// A parsed Content-Type value: lower-case `type/subtype` and parameters (names lower-case).
#[derive(Debug, PartialEq)]
pub(crate) struct ContentType {
    pub mime: String,
    pub params: Vec<(String, String)>,
}

impl ContentType {
    pub fn parse(value: &str) -> ContentType {
        let value = strip_comments(value);
        let mut pieces = split_unquoted(&value, ';').into_iter();
        let mime = pieces
            .next()
            .map(|m| m.trim().to_ascii_lowercase())
            .unwrap_or_default();
        let params = pieces
            .filter_map(|p| {
                let (name, v) = p.split_once('=')?;
                Some((name.trim().to_ascii_lowercase(), unquote(v.trim())))
            })
            .collect();
        ContentType { mime, params }
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn is_pkcs7_mime(&self) -> bool {
        self.mime == "application/pkcs7-mime" || self.mime == "application/x-pkcs7-mime"
    }

    /// `application/octet-stream` named `*.p7m` and no smime-type: how some agents label
    /// S/MIME (RFC 8551 §3.2.2); only the CMS content type inside tells what it is.
    fn is_p7m_file(&self) -> bool {
        self.mime == "application/octet-stream"
            && self.param("smime-type").is_none()
            && [self.param("name"), self.param("filename")]
                .into_iter()
                .flatten()
                .any(|n| n.to_ascii_lowercase().ends_with(".p7m"))
    }
}

fn strip_comments(s: &str) -> String {
    let (mut out, mut depth, mut quoted, mut escaped) = (String::new(), 0u32, false, false);
    for c in s.chars() {
        if escaped {
            escaped = false;
            if depth == 0 {
                out.push(c);
            }
            continue;
        }
        match c {
            '\\' => {
                escaped = true;
                if depth == 0 {
                    out.push(c);
                }
            }
            '"' if depth == 0 => {
                quoted = !quoted;
                out.push(c);
            }
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

fn split_unquoted(s: &str, sep: char) -> Vec<String> {
    let (mut parts, mut cur, mut quoted, mut escaped) = (Vec::new(), String::new(), false, false);
    for c in s.chars() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            parts.push(std::mem::take(&mut cur));
            continue;
        }
        cur.push(c);
    }
    parts.push(cur);
    parts
}

fn unquote(v: &str) -> String {
    match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::new();
            let mut escaped = false;
            for c in inner.chars() {
                if !escaped && c == '\\' {
                    escaped = true;
                } else {
                    escaped = false;
                    out.push(c);
                }
            }
            out
        }
        None => v.to_string(),
    }
}

/// True for S/MIME enveloped or authEnveloped data, PGP/MIME (multipart/encrypted), and inline
/// PGP ("-----BEGIN PGP MESSAGE-----" at the start of a body line).
pub fn is_encrypted(message: &[u8]) -> bool {
    let parts = split(message);
    if let Some(ct) = parts.content_type() {
        if ct.mime == "multipart/encrypted" || ct.mime == "application/pgp-encrypted" {
            return true;
        }
        if ct.is_pkcs7_mime() {
            match ct.param("smime-type").map(str::to_ascii_lowercase) {
                Some(t) if t == "enveloped-data" || t == "authenveloped-data" => return true,
                Some(_) => {}
                // No smime-type: look at the CMS content type itself.
                None => {
                    if let Ok(der) = decode_body(&parts) {
                        if super::open::is_enveloped(&der) {
                            return true;
                        }
                    }
                }
            }
        } else if ct.is_p7m_file()
            && decode_body(&parts).is_ok_and(|der| super::open::is_enveloped(&der))
        {
            return true;
        }
    }
    const PGP: &[u8] = b"-----BEGIN PGP MESSAGE-----";
    parts.body.starts_with(PGP)
        || memchr::memmem::find(parts.body, b"\n-----BEGIN PGP MESSAGE-----").is_some()
}

/// Finds the CMS structure: in an S/MIME message (returned with its parts), or a bare `.p7m`
/// (DER/BER, or PEM "PKCS7"/"CMS"), returned without parts.
pub(crate) fn extract_cms(message: &[u8]) -> Result<(Option<Parts<'_>>, Vec<u8>), DecryptError> {
    if message.first() == Some(&0x30) {
        return Ok((None, message.to_vec()));
    }
    let text = trim(message);
    if text.starts_with(b"-----BEGIN PKCS7-----") || text.starts_with(b"-----BEGIN CMS-----") {
        let (_, der) =
            der::pem::decode_vec(text).map_err(|e| DecryptError::Corrupted(format!("PEM: {e}")))?;
        return Ok((None, der));
    }
    let parts = split(message);
    let Some(ct) = parts.content_type() else {
        return Err(DecryptError::NotEncrypted);
    };
    let smime_type = ct.param("smime-type").map(str::to_ascii_lowercase);
    let looks_right = match smime_type.as_deref() {
        Some("enveloped-data" | "authenveloped-data") => ct.is_pkcs7_mime(),
        Some(_) => false,
        None => ct.is_pkcs7_mime() || ct.is_p7m_file(),
    };
    if !looks_right {
        return Err(DecryptError::NotEncrypted);
    }
    let der = decode_body(&parts)?;
    Ok((Some(parts), der))
}

/// The body as bytes, undoing Content-Transfer-Encoding base64 (anything else is taken raw).
pub(crate) fn decode_body(parts: &Parts<'_>) -> Result<Vec<u8>, DecryptError> {
    let cte = parts
        .field("content-transfer-encoding")
        .map(|f| f.value().to_ascii_lowercase());
    if cte.as_deref() != Some("base64") {
        return Ok(parts.body.to_vec());
    }
    let clean: Vec<u8> = parts
        .body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let engine = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    engine
        .decode(&clean)
        .map_err(|e| DecryptError::Corrupted(format!("base64 body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"Received: from x\r\n\tby y\r\nFrom: a@b.test\r\nSubject: hi\r\n\
MIME-Version: 1.0\r\nContent-Type: text/plain;\r\n charset=utf-8\r\n\
Content-Transfer-Encoding: 8bit\r\nTo: c@d.test\r\n\r\nbody\r\n";

    #[test]
    fn split_keeps_folded_fields_whole() {
        let p = split(MSG);
        assert_eq!(p.fields.len(), 7);
        assert_eq!(p.fields[0].raw, b"Received: from x\r\n\tby y\r\n");
        assert_eq!(p.fields[4].name, b"Content-Type");
        assert_eq!(p.body, b"body\r\n");
        assert_eq!(p.eol, b"\r\n");
        assert_eq!(p.fields[4].value(), "text/plain; charset=utf-8");
    }

    #[test]
    fn inner_entity_is_content_fields_and_body() {
        let p = split(MSG);
        assert_eq!(
            p.inner_entity(),
            b"Content-Type: text/plain;\r\n charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nbody\r\n"
        );
        // Merging it back gives the message with the Content-* fields moved last.
        let merged = p.merge(&p.inner_entity());
        assert!(merged.starts_with(b"Received: from x\r\n\tby y\r\nFrom: a@b.test\r\n"));
        assert!(merged.ends_with(b"To: c@d.test\r\nContent-Type: text/plain;\r\n charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nbody\r\n"));
    }

    #[test]
    fn outer_message_has_smime_fields_and_short_lines() {
        let p = split(MSG);
        let out = p.outer_message("enveloped-data", &[0u8; 200]);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Subject: hi\r\nMIME-Version: 1.0\r\nTo: c@d.test\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data;\r\n\tname=smime.p7m\r\n"));
        assert!(!text.contains("text/plain"));
        assert_eq!(text.matches("MIME-Version").count(), 1);
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        assert!(body.lines().all(|l| l.len() <= 76));
        assert_eq!(body.lines().next().unwrap().len(), 76);
    }

    #[test]
    fn message_without_body_or_separator() {
        let p = split(b"Subject: x\nContent-Type: text/plain");
        assert_eq!(p.eol, b"\n");
        assert_eq!(p.inner_entity(), b"Content-Type: text/plain\n\n");
        let p = split(b"");
        assert!(p.fields.is_empty());
        assert_eq!(p.inner_entity(), b"\r\n");
    }

    #[test]
    fn content_type_parameters() {
        let ct = ContentType::parse(
            "Application/PKCS7-MIME (c) ; smime-type=\"enveloped-data\"; name=\"a;b.p7m\"",
        );
        assert_eq!(ct.mime, "application/pkcs7-mime");
        assert_eq!(ct.param("smime-type"), Some("enveloped-data"));
        assert_eq!(ct.param("name"), Some("a;b.p7m"));
    }

    #[test]
    fn recognises_encrypted_messages() {
        assert!(!is_encrypted(MSG));
        assert!(is_encrypted(
            b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\nx"
        ));
        assert!(is_encrypted(
            b"Content-Type: application/x-pkcs7-mime; smime-type=authEnveloped-data\r\n\r\nx"
        ));
        assert!(!is_encrypted(
            b"Content-Type: application/pkcs7-mime; smime-type=signed-data\r\n\r\nx"
        ));
        assert!(is_encrypted(
            b"Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b\r\n\r\n--b\r\n"
        ));
        assert!(is_encrypted(
            b"Subject: x\r\n\r\nhello\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nhQEM\r\n"
        ));
        assert!(!is_encrypted(
            b"Subject: x\r\n\r\nquote: -----BEGIN PGP MESSAGE----- inline\r\n"
        ));
    }

    #[test]
    fn extract_refuses_plain_and_signed_messages() {
        assert!(matches!(extract_cms(MSG), Err(DecryptError::NotEncrypted)));
        assert!(matches!(
            extract_cms(
                b"Content-Type: application/pkcs7-mime; smime-type=signed-data\r\n\r\nMA==\r\n"
            ),
            Err(DecryptError::NotEncrypted)
        ));
        assert!(matches!(
            extract_cms(b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\nContent-Transfer-Encoding: base64\r\n\r\nMII*\r\n"),
            Err(DecryptError::Corrupted(_))
        ));
    }
}

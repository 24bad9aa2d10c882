//! MIME for S/MIME signatures (RFC 1847, RFC 8551 §3.5): the canonical, 7-bit entity that is
//! signed, the `multipart/signed` message around it, and finding the signed content and the
//! signature again in a received message (detached or `signed-data`).

use base64::Engine;

use super::mime::{decode_body, split, ContentType, Parts};
use super::DecryptError;

/// Line length above which a body is re-encoded (RFC 5322 §2.1.1 allows 998 characters).
const MAX_LINE: usize = 998;

/// `entity` with every line ending as CRLF and every leaf body 7-bit: a body with 8-bit or NUL
/// bytes or over-long lines is base64-encoded (its Content-Transfer-Encoding replaced); multipart
/// bodies are treated part by part. An entity that already qualifies is only given CRLFs.
pub(crate) fn canonical_entity(entity: &[u8]) -> Vec<u8> {
    let crlf = to_crlf(entity);
    if is_7bit(&crlf) {
        return crlf;
    }
    seven_bit(&crlf)
}

/// Converts bare LF line endings to CRLF.
pub(crate) fn to_crlf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 40);
    let mut prev = 0u8;
    for &b in bytes {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

fn is_7bit(bytes: &[u8]) -> bool {
    !bytes.iter().any(|&b| b >= 0x80 || b == 0)
        && bytes
            .split(|&b| b == b'\n')
            .all(|l| l.len() <= MAX_LINE + 1)
}

fn seven_bit(entity: &[u8]) -> Vec<u8> {
    let parts = split(entity);
    let ct = parts.content_type();
    let boundary = ct
        .as_ref()
        .filter(|ct| ct.mime.starts_with("multipart/"))
        .and_then(|ct| ct.param("boundary").map(str::to_string));
    if let Some(boundary) = boundary {
        let mut out = head_of(&parts, None);
        let mut at = 0;
        for (start, end) in part_ranges(parts.body, &boundary) {
            out.extend_from_slice(&parts.body[at..start]);
            out.extend_from_slice(&canonical_entity(&parts.body[start..end]));
            at = end;
        }
        out.extend_from_slice(&parts.body[at..]);
        return out;
    }
    if is_7bit(parts.body) {
        return entity.to_vec();
    }
    let mut out = head_of(&parts, Some("base64"));
    let encoded = base64::engine::general_purpose::STANDARD.encode(parts.body);
    for chunk in encoded.as_bytes().chunks(76) {
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The header section (with its empty line); with `cte`, Content-Transfer-Encoding replaced.
fn head_of(parts: &Parts<'_>, cte: Option<&str>) -> Vec<u8> {
    let mut out = Vec::new();
    for f in &parts.fields {
        if cte.is_some() && f.name.eq_ignore_ascii_case(b"content-transfer-encoding") {
            continue;
        }
        out.extend_from_slice(f.raw);
    }
    if let Some(cte) = cte {
        out.extend_from_slice(format!("Content-Transfer-Encoding: {cte}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The byte ranges of a multipart body's parts: each from after its delimiter line to before
/// the CRLF that precedes the next delimiter (RFC 2046 §5.1.1).
fn part_ranges(body: &[u8], boundary: &str) -> Vec<(usize, usize)> {
    let delimiter = format!("--{boundary}");
    let mut ranges = Vec::new();
    let mut open: Option<usize> = None;
    let mut pos = 0;
    while pos < body.len() {
        let end = body[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(body.len(), |i| pos + i + 1);
        let line = &body[pos..end];
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if let Some(rest) = text.strip_prefix(delimiter.as_bytes()) {
            let closing = rest.starts_with(b"--");
            let rest = if closing { &rest[2..] } else { rest };
            if rest.iter().all(|b| *b == b' ' || *b == b'\t') {
                if let Some(start) = open.take() {
                    // The line break before the delimiter belongs to the delimiter.
                    let mut stop = pos;
                    if stop > start && body[stop - 1] == b'\n' {
                        stop -= 1;
                        if stop > start && body[stop - 1] == b'\r' {
                            stop -= 1;
                        }
                    }
                    ranges.push((start, stop.max(start)));
                }
                if closing {
                    return ranges;
                }
                open = Some(end);
            }
        }
        pos = end;
    }
    ranges
}

/// A new boundary that appears nowhere in `content`.
fn boundary_for(content: &[u8]) -> String {
    loop {
        let mut r = [0u8; 12];
        if aws_lc_rs::rand::fill(&mut r).is_err() {
            r = [0x5a; 12];
        }
        let b = format!("----=_sealpost_signed_{}", hex::encode(r));
        if !content.windows(b.len()).any(|w| w == b.as_bytes()) {
            return b;
        }
    }
}

/// The `multipart/signed` message: the routing header fields of `parts` (CRLF), the canonical
/// `entity` as the first part and the detached signature `der` as `smime.p7s`.
pub(crate) fn multipart_signed(parts: &Parts<'_>, entity: &[u8], der: &[u8]) -> Vec<u8> {
    let boundary = boundary_for(entity);
    let mut out = Vec::with_capacity(entity.len() + der.len() * 2 + 2048);
    let mut has_mime_version = false;
    for f in parts.fields.iter().filter(|f| !f.is_content()) {
        has_mime_version |= f.is("mime-version");
        let raw = to_crlf(f.raw);
        out.extend_from_slice(&raw);
        if !raw.ends_with(b"\n") {
            out.extend_from_slice(b"\r\n");
        }
    }
    let mut line = |s: &str| {
        out.extend_from_slice(s.as_bytes());
        out.extend_from_slice(b"\r\n");
    };
    if !has_mime_version {
        line("MIME-Version: 1.0");
    }
    line("Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\";");
    line(&format!("\tmicalg=sha-256; boundary=\"{boundary}\""));
    line("");
    line("This is an S/MIME signed message.");
    line("");
    line(&format!("--{boundary}"));
    out.extend_from_slice(entity);
    let mut line = |s: &str| {
        out.extend_from_slice(s.as_bytes());
        out.extend_from_slice(b"\r\n");
    };
    line("");
    line(&format!("--{boundary}"));
    line("Content-Type: application/pkcs7-signature; name=smime.p7s");
    line("Content-Transfer-Encoding: base64");
    line("Content-Disposition: attachment; filename=smime.p7s");
    line("");
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    for chunk in encoded.as_bytes().chunks(76) {
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

/// A signed message as found: detached (the canonical signed entity and the signature) or
/// opaque (`signed-data`, the content inside the CMS structure).
#[derive(Debug)]
pub(crate) enum SignedParts<'a> {
    Detached {
        content: Vec<u8>,
        cms: Vec<u8>,
    },
    Opaque {
        parts: Option<Parts<'a>>,
        cms: Vec<u8>,
    },
}

/// True for `multipart/signed` with a PKCS#7 protocol and `application/pkcs7-mime;
/// smime-type=signed-data`.
pub fn is_signed(message: &[u8]) -> bool {
    let parts = split(message);
    parts
        .content_type()
        .is_some_and(|ct| signed_kind(&ct).is_some())
}

#[derive(PartialEq)]
enum Kind {
    Detached(String),
    Opaque,
}

fn signed_kind(ct: &ContentType) -> Option<Kind> {
    if ct.mime == "multipart/signed" {
        let protocol = ct.param("protocol").unwrap_or("").to_ascii_lowercase();
        let pkcs7 = protocol == "application/pkcs7-signature"
            || protocol == "application/x-pkcs7-signature";
        return match (pkcs7, ct.param("boundary")) {
            (true, Some(b)) => Some(Kind::Detached(b.to_string())),
            _ => None,
        };
    }
    let pkcs7_mime = ct.mime == "application/pkcs7-mime" || ct.mime == "application/x-pkcs7-mime";
    let signed_data = ct
        .param("smime-type")
        .is_some_and(|t| t.eq_ignore_ascii_case("signed-data"));
    (pkcs7_mime && signed_data).then_some(Kind::Opaque)
}

/// Finds the signature (and for a detached one, the signed content) in a message; a bare CMS
/// structure (DER) counts as opaque. `NotSigned` when there is no S/MIME signature.
pub(crate) fn extract_signed(message: &[u8]) -> Result<SignedParts<'_>, DecryptError> {
    if message.first() == Some(&0x30) {
        return Ok(SignedParts::Opaque {
            parts: None,
            cms: message.to_vec(),
        });
    }
    let parts = split(message);
    let kind = parts
        .content_type()
        .and_then(|ct| signed_kind(&ct))
        .ok_or(DecryptError::NotSigned)?;
    match kind {
        Kind::Opaque => {
            let cms = decode_body(&parts)?;
            Ok(SignedParts::Opaque {
                parts: Some(parts),
                cms,
            })
        }
        Kind::Detached(boundary) => {
            let ranges = part_ranges(parts.body, &boundary);
            let [(c0, c1), (s0, s1), ..] = ranges[..] else {
                return Err(DecryptError::Corrupted(
                    "multipart/signed without its two parts (content and signature)".into(),
                ));
            };
            let content = to_crlf(&parts.body[c0..c1]);
            let signature = split(&parts.body[s0..s1]);
            let cms = decode_body(&signature)?;
            Ok(SignedParts::Detached { content, cms })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seven_bit_entities_only_get_crlf() {
        let e = b"Content-Type: text/plain\n\nhello\nworld\n";
        assert_eq!(
            canonical_entity(e),
            b"Content-Type: text/plain\r\n\r\nhello\r\nworld\r\n"
        );
    }

    #[test]
    fn eight_bit_leaves_become_base64_inside_multiparts() {
        let e = b"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\npre\r\n--b\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n\
--b\r\nContent-Type: text/plain\r\n\r\nplain\r\n--b--\r\nepilogue\r\n";
        let out = canonical_entity(e);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("Content-Transfer-Encoding: base64\r\n\r\nR3LDvMOfZQ==\r\n\r\n--b\r\n"),
            "{text}"
        );
        assert!(
            text.contains("--b\r\nContent-Type: text/plain\r\n\r\nplain\r\n--b--\r\nepilogue\r\n")
        );
        assert!(!text.contains("8bit"));
        assert!(is_7bit(text.as_bytes()));
    }

    #[test]
    fn parts_exclude_the_crlf_before_the_delimiter() {
        let body = b"preamble\r\n--x\r\nA\r\n\r\n--x\r\nB\r\n--x--\r\n";
        let r = part_ranges(body, "x");
        assert_eq!(r.len(), 2);
        assert_eq!(&body[r[0].0..r[0].1], b"A\r\n");
        assert_eq!(&body[r[1].0..r[1].1], b"B");
    }

    #[test]
    fn unsigned_and_broken_messages() {
        assert!(matches!(
            extract_signed(b"Subject: x\r\n\r\nhi\r\n"),
            Err(DecryptError::NotSigned)
        ));
        let one_part = b"Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=b\r\n\r\n--b\r\nx\r\n--b--\r\n";
        assert!(is_signed(one_part));
        assert!(matches!(
            extract_signed(one_part),
            Err(DecryptError::Corrupted(_))
        ));
    }
}

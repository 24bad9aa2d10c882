//! The outer message of a protected message: routing header fields, a short notice and the
//! `message.sealed` attachment; and finding that attachment again.

use base64::Engine;
use mail_parser::MimeHeaders;

use super::container::MAGIC;
use super::license::License;
use super::RmsError;

/// Header fields copied from the original message to the outer one (compared ignoring case).
const KEPT: [&str; 10] = [
    "return-path",
    "received",
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "date",
    "message-id",
    "subject",
];

/// The header field marking a protected message.
pub const MARKER: &str = "X-Sealpost-Protected";

/// The original's header fields worth keeping outside, raw (folding kept), in order.
fn kept_fields(message: &[u8]) -> (Vec<&[u8]>, &'static [u8]) {
    let eol: &'static [u8] = match message.iter().position(|&b| b == b'\n') {
        Some(i) if i > 0 && message[i - 1] == b'\r' => b"\r\n",
        _ => b"\n",
    };
    let mut fields: Vec<(bool, usize, usize)> = Vec::new();
    let mut pos = 0;
    while pos < message.len() {
        let end = message[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(message.len(), |i| pos + i + 1);
        let line = &message[pos..end];
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if matches!(line.first(), Some(b' ' | b'\t')) {
            if let Some(last) = fields.last_mut() {
                last.2 = end;
            }
        } else {
            let name = line
                .iter()
                .position(|&b| b == b':')
                .map_or(&line[..0], |i| &line[..i]);
            let name = String::from_utf8_lossy(name).trim().to_ascii_lowercase();
            fields.push((KEPT.contains(&name.as_str()), pos, end));
        }
        pos = end;
    }
    let kept = fields
        .into_iter()
        .filter(|f| f.0)
        .map(|(_, s, e)| &message[s..e])
        .collect();
    (kept, eol)
}

/// Whether the message is already a protected message: it carries the marker field and is
/// nothing but the notice and a `message.sealed` attachment holding a well-framed container.
/// A marker field alone (anyone can write one) does not count, so it cannot be used to slip a
/// message past protection.
pub fn is_protected(message: &[u8]) -> bool {
    if message.starts_with(MAGIC) {
        return true;
    }
    let head_end = message
        .windows(2)
        .position(|w| w == b"\n\n")
        .or_else(|| message.windows(4).position(|w| w == b"\r\n\r\n"))
        .unwrap_or(message.len());
    let head = String::from_utf8_lossy(&message[..head_end]).to_ascii_lowercase();
    let marker = MARKER.to_ascii_lowercase();
    if !(head.starts_with(&format!("{marker}:")) || head.contains(&format!("\n{marker}:"))) {
        return false;
    }
    let Some(parsed) = mail_parser::MessageParser::default().parse(message) else {
        return false;
    };
    parsed.parts.len() <= 3
        && parsed.attachments().count() == 1
        && extract_container(message).is_ok_and(|c| super::container::parse(&c).is_ok())
}

/// Builds the outer message around the container, in the original's line ending.
pub fn outer_message(original: &[u8], container: &[u8], license: &License) -> Vec<u8> {
    let (kept, eol) = kept_fields(original);
    let eol_s = if eol == b"\r\n" { "\r\n" } else { "\n" };
    let mut rnd = [0u8; 12];
    let _ = aws_lc_rs::rand::fill(&mut rnd);
    let boundary = format!("=_sealpost-rms-{}", hex::encode(rnd));
    let mut out = Vec::with_capacity(container.len() * 4 / 3 + 2048);
    for f in kept {
        out.extend_from_slice(f);
        if !f.ends_with(b"\n") {
            out.extend_from_slice(eol);
        }
    }
    let head = [
        "MIME-Version: 1.0".to_string(),
        format!(
            "{MARKER}: rms; version={}; template=\"{}\"",
            license.version(),
            license.template.replace(['"', '\\'], "")
        ),
        format!("Content-Type: multipart/mixed; boundary=\"{boundary}\""),
        String::new(),
        "This is a protected message in MIME format.".into(),
        String::new(),
        format!("--{boundary}"),
        "Content-Type: text/plain; charset=utf-8".into(),
        "Content-Transfer-Encoding: 8bit".into(),
        String::new(),
        format!(
            "{issuer} sent you a protected message (template \"{template}\").",
            issuer = sanitize(&license.issuer),
            template = sanitize(&license.template)
        ),
        "Its content is encrypted in the attachment message.sealed; it opens only with the".into(),
        format!(
            "tenant key of the sender's organisation ({domain}). To read it, ask {issuer}",
            domain = sanitize(license.issuer.rsplit('@').next().unwrap_or("")),
            issuer = sanitize(&license.issuer)
        ),
        "or their mail administrator, who opens it with:".into(),
        "  sealpost decrypt --tenant-key <tenant key directory> <this message>".into(),
        String::new(),
        format!("--{boundary}"),
        "Content-Type: application/vnd.sealpost.rms; name=\"message.sealed\"".into(),
        "Content-Disposition: attachment; filename=\"message.sealed\"".into(),
        "Content-Transfer-Encoding: base64".into(),
        String::new(),
    ];
    for line in head {
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(eol);
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(container);
    for chunk in b64.as_bytes().chunks(76) {
        out.extend_from_slice(chunk);
        out.extend_from_slice(eol);
    }
    out.extend_from_slice(format!("--{boundary}--{eol_s}").as_bytes());
    out
}

/// Text from the license for the notice: no quotes, backslashes or line breaks.
fn sanitize(text: &str) -> String {
    text.chars()
        .filter(|c| !matches!(c, '"' | '\\') && !c.is_control())
        .collect()
}

/// Finds the container: the input itself if it starts with the magic, else the decoded
/// `message.sealed` attachment of a message.
pub fn extract_container(input: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, RmsError> {
    if input.starts_with(MAGIC) {
        return Ok(std::borrow::Cow::Borrowed(input));
    }
    let message = mail_parser::MessageParser::default()
        .parse(input)
        .ok_or(RmsError::NotProtected)?;
    let part = message
        .attachments()
        .find(|p| {
            p.attachment_name()
                .is_some_and(|n| n.eq_ignore_ascii_case("message.sealed"))
        })
        .ok_or(RmsError::NotProtected)?;
    let bytes = part.contents();
    if !bytes.starts_with(MAGIC) {
        return Err(RmsError::Corrupted(
            "message.sealed is not a complete protected container: the message looks \
             truncated or damaged (was it saved or copied in full?)"
                .into(),
        ));
    }
    Ok(std::borrow::Cow::Owned(bytes.to_vec()))
}

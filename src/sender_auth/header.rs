//! The header fields sender authentication writes, and the removal of forged ones: an arriving
//! Authentication-Results field that claims our host name (RFC 8601 §5), or our quarantine mark.

/// The field a quarantined message carries (DMARC `p=quarantine`).
pub const QUARANTINE_FIELD: &str = "X-Sealpost-Quarantine";

/// The fields of a header section (up to, not including, the empty line), each with its folded
/// continuation lines and line end.
pub fn fields(header: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < header.len() {
        let end = header[i..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(header.len(), |p| i + p + 1);
        let line = &header[i..end];
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if !continuation && i > start {
            out.push(&header[start..i]);
            start = i;
        }
        i = end;
    }
    if i > start {
        out.push(&header[start..i]);
    }
    out
}

/// The field's name and value (unfolded, trimmed), when it has a colon.
fn split(field: &[u8]) -> Option<(&str, String)> {
    let colon = field.iter().position(|&b| b == b':')?;
    let name = std::str::from_utf8(&field[..colon]).ok()?.trim();
    let value = String::from_utf8_lossy(&field[colon + 1..])
        .replace(['\r', '\n'], "")
        .trim()
        .to_string();
    Some((name, value))
}

/// Whether a field arriving from outside must be dropped: an Authentication-Results field whose
/// authserv-id is `hostname` (any case), or a quarantine mark.
pub fn is_forged(field: &[u8], hostname: &str) -> bool {
    let Some((name, value)) = split(field) else {
        return false;
    };
    if name.eq_ignore_ascii_case(QUARANTINE_FIELD) {
        return true;
    }
    if !name.eq_ignore_ascii_case("Authentication-Results") {
        return false;
    }
    // authserv-id [version] ; ... — comments (in parentheses) may precede it.
    let mut rest = value.as_str();
    while let Some(after) = rest.trim_start().strip_prefix('(') {
        rest = after.split_once(')').map_or("", |(_, r)| r);
    }
    let id = rest
        .trim_start()
        .split(|c: char| c == ';' || c.is_whitespace())
        .next()
        .unwrap_or("");
    id.trim_end_matches('.').eq_ignore_ascii_case(hostname)
}

/// The header section without the fields `drop` names.
pub fn without(header: &[u8], drop: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let kept = fields(header);
    let mut out = Vec::with_capacity(header.len());
    let mut consumed = 0;
    for f in kept {
        consumed += f.len();
        if !drop(f) {
            out.extend_from_slice(f);
        }
    }
    out.extend_from_slice(&header[consumed..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &[u8] = b"Authentication-Results: mx.b.test;\r\n\tdkim=pass header.d=evil.test\r\n\
Authentication-Results: (comment) MX.B.TEST. 1; spf=pass\r\n\
Authentication-Results: mx.other.test; spf=fail\r\n\
X-Sealpost-Quarantine: no\r\n\
Subject: hi\r\n\r\nbody\r\n";

    #[test]
    fn forged_results_are_dropped_and_others_kept() {
        let out = without(HEAD, |f| is_forged(f, "mx.b.test"));
        assert_eq!(
            out,
            b"Authentication-Results: mx.other.test; spf=fail\r\nSubject: hi\r\n\r\nbody\r\n"
        );
    }

    #[test]
    fn fields_keep_their_folds() {
        let f = fields(HEAD);
        assert_eq!(f.len(), 5);
        assert!(f[0].ends_with(b"evil.test\r\n"));
        assert_eq!(f[4], b"Subject: hi\r\n");
    }
}

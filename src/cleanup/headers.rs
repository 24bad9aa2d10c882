//! Pure edits of a message's header section on raw bytes (the body is never touched).

/// Where the header section ends: the index of the empty line's first byte (the body follows
/// it), or the message length when there is no body.
fn header_end(message: &[u8]) -> usize {
    let mut pos = 0;
    while pos < message.len() {
        let line_end = message[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| pos + i + 1)
            .unwrap_or(message.len());
        let line = &message[pos..line_end];
        if line == b"\r\n" || line == b"\n" {
            return pos;
        }
        pos = line_end;
    }
    message.len()
}

/// Length of the header section with the empty line after it; the whole message when there is
/// no empty line (then it is all header).
pub fn section_len(message: &[u8]) -> usize {
    let end = header_end(message);
    match message.get(end..) {
        Some([b'\r', b'\n', ..]) => end + 2,
        Some([b'\n', ..]) => end + 1,
        _ => message.len(),
    }
}

/// The byte ranges of every header field named `name` (any case), continuation lines included.
fn fields(message: &[u8], name: &str) -> Vec<(usize, usize)> {
    let end = header_end(message);
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < end {
        let mut field_end = pos;
        loop {
            field_end = message[field_end..end]
                .iter()
                .position(|&b| b == b'\n')
                .map(|i| field_end + i + 1)
                .unwrap_or(end);
            if field_end >= end || !matches!(message[field_end], b' ' | b'\t') {
                break;
            }
        }
        let line = &message[pos..field_end];
        let matches = line.len() > name.len()
            && line[name.len()] == b':'
            && line[..name.len()].eq_ignore_ascii_case(name.as_bytes());
        if matches {
            out.push((pos, field_end));
        }
        pos = field_end;
    }
    out
}

/// Whether the header section has a field named `name` (any case).
pub fn has(message: &[u8], name: &str) -> bool {
    !fields(message, name).is_empty()
}

/// Adds `Name: value` at the end of the header section.
pub fn add(message: &[u8], name: &str, value: &str) -> Vec<u8> {
    let end = header_end(message);
    let mut out = Vec::with_capacity(message.len() + name.len() + value.len() + 4);
    out.extend_from_slice(&message[..end]);
    if end > 0 && !message[..end].ends_with(b"\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    out.extend_from_slice(&message[end..]);
    out
}

/// Removes every field named `name`.
pub fn remove(message: &[u8], name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len());
    let mut pos = 0;
    for (start, end) in fields(message, name) {
        out.extend_from_slice(&message[pos..start]);
        pos = end;
    }
    out.extend_from_slice(&message[pos..]);
    out
}

/// Replaces every field named `name` with one `Name: value`.
pub fn set(message: &[u8], name: &str, value: &str) -> Vec<u8> {
    add(&remove(message, name), name, value)
}

/// Puts `text` in front of the Subject (adding a Subject when there is none).
pub fn prepend_subject(message: &[u8], text: &str) -> Vec<u8> {
    match fields(message, "Subject").first() {
        Some(&(start, end)) => {
            let value_start = start + "Subject:".len();
            let value = &message[value_start..end];
            let trimmed = value
                .iter()
                .position(|&b| b != b' ' && b != b'\t')
                .unwrap_or(value.len());
            let mut out = Vec::with_capacity(message.len() + text.len() + 1);
            out.extend_from_slice(&message[..value_start]);
            out.push(b' ');
            out.extend_from_slice(text.as_bytes());
            out.push(b' ');
            out.extend_from_slice(&value[trimmed..]);
            out.extend_from_slice(&message[end..]);
            out
        }
        None => add(message, "Subject", text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] =
        b"Received: x\r\nSubject: hello\r\n there\r\nX-Tag: a\r\nx-tag: b\r\n\r\nSubject: body\r\n";

    #[test]
    fn add_goes_to_the_end_of_the_header() {
        let out = add(MSG, "X-New", "1");
        assert_eq!(out, b"Received: x\r\nSubject: hello\r\n there\r\nX-Tag: a\r\nx-tag: b\r\nX-New: 1\r\n\r\nSubject: body\r\n");
        assert_eq!(add(b"A: b\r\n", "C", "d"), b"A: b\r\nC: d\r\n");
    }

    #[test]
    fn set_replaces_every_field_of_the_name() {
        let out = set(MSG, "X-TAG", "c");
        assert_eq!(
            out,
            b"Received: x\r\nSubject: hello\r\n there\r\nX-TAG: c\r\n\r\nSubject: body\r\n"
        );
        // Folded fields go whole; the body is never touched.
        let out = remove(MSG, "subject");
        assert_eq!(
            out,
            b"Received: x\r\nX-Tag: a\r\nx-tag: b\r\n\r\nSubject: body\r\n"
        );
    }

    #[test]
    fn prepend_subject_keeps_the_fold() {
        assert_eq!(
            prepend_subject(MSG, "[ext]"),
            b"Received: x\r\nSubject: [ext] hello\r\n there\r\nX-Tag: a\r\nx-tag: b\r\n\r\nSubject: body\r\n"
        );
        assert_eq!(
            prepend_subject(b"A: b\r\n\r\nx", "[t]"),
            b"A: b\r\nSubject: [t]\r\n\r\nx"
        );
    }
}

//! RFC 5321 §4.1.2 path syntax: `<local@domain>`, quoted local parts, address literals, UTF-8.
//!
//! Non-ASCII bytes are accepted in local parts and domain labels (RFC 6531); whether they are
//! allowed in a given transaction (SMTPUTF8) is the session's decision.

/// Longest local part, in octets (RFC 5321 §4.5.3.1.1).
const MAX_LOCAL_PART: usize = 64;
/// Longest domain, in octets (RFC 5321 §4.5.3.1.2).
const MAX_DOMAIN: usize = 255;
/// Longest mailbox: a path is at most 256 octets including the angle brackets.
const MAX_MAILBOX: usize = 254;

/// Parses a path at the start of `input`: `<>` or `<[source-route:]local@domain>`.
/// Returns the mailbox (empty for `<>`; the obsolete source route is dropped) and the text
/// after `>`. `None` means bad syntax.
pub fn parse_path(input: &str) -> Option<(&str, &str)> {
    let b = input.as_bytes();
    if b.first() != Some(&b'<') {
        return None;
    }
    if b.get(1) == Some(&b'>') {
        return Some(("", input.get(2..)?));
    }
    let start = if b.get(1) == Some(&b'@') {
        skip_source_route(b, 1)?
    } else {
        1
    };
    let at = local_part(b, start)?;
    if at - start > MAX_LOCAL_PART || b.get(at) != Some(&b'@') {
        return None;
    }
    let end = domain(b, at + 1)?;
    if b.get(end) != Some(&b'>') || end - start > MAX_MAILBOX {
        return None;
    }
    Some((input.get(start..end)?, input.get(end + 1..)?))
}

/// The domain of a mailbox: the text after the last `@` (empty when there is none).
pub fn domain_of(mailbox: &str) -> &str {
    mailbox.rsplit_once('@').map_or("", |(_, domain)| domain)
}

/// `@a.example,@b.example:` — returns the index after the colon.
fn skip_source_route(b: &[u8], mut i: usize) -> Option<usize> {
    loop {
        if b.get(i) != Some(&b'@') {
            return None;
        }
        i = domain(b, i + 1)?;
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b':') => return Some(i + 1),
            _ => return None,
        }
    }
}

/// A dot-string or a quoted string starting at `i`; returns the index after it.
fn local_part(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) == Some(&b'"') {
        let mut j = i + 1;
        loop {
            match *b.get(j)? {
                b'"' => return Some(j + 1),
                b'\\' => match *b.get(j + 1)? {
                    0x20..=0x7e => j += 2,
                    _ => return None,
                },
                0x20 | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff => j += 1,
                _ => return None,
            }
        }
    }
    dotted(b, i, is_atext, usize::MAX)
}

/// A domain name or an address literal (`[192.0.2.1]`, `[IPv6:...]`) starting at `i`;
/// returns the index after it.
fn domain(b: &[u8], i: usize) -> Option<usize> {
    let end = if b.get(i) == Some(&b'[') {
        let mut j = i + 1;
        loop {
            match *b.get(j)? {
                b']' if j > i + 1 => break j + 1,
                33..=90 | 94..=126 => j += 1,
                _ => return None,
            }
        }
    } else {
        dotted(b, i, is_label_char, 63)?
    };
    (end - i <= MAX_DOMAIN).then_some(end)
}

/// One or more non-empty runs of `allowed` bytes separated by single dots, each run at most
/// `max_run` long; returns the index after the last run.
fn dotted(b: &[u8], mut i: usize, allowed: fn(u8) -> bool, max_run: usize) -> Option<usize> {
    loop {
        let run = b.get(i..)?.iter().take_while(|&&c| allowed(c)).count();
        if run == 0 || run > max_run {
            return None;
        }
        i += run;
        if b.get(i) != Some(&b'.') {
            return Some(i);
        }
        i += 1;
    }
}

fn is_atext(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&c) || c >= 0x80
}

fn is_label_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c >= 0x80
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_quoted_literal_and_utf8_mailboxes() {
        for (input, mailbox, rest) in [
            ("<alice@contoso.test>", "alice@contoso.test", ""),
            (
                "<Alice.B+tag@Contoso.Test> SIZE=1",
                "Alice.B+tag@Contoso.Test",
                " SIZE=1",
            ),
            ("<\"a b>c\\\"d\"@x.test>", "\"a b>c\\\"d\"@x.test", ""),
            ("<a@[192.0.2.1]>", "a@[192.0.2.1]", ""),
            ("<a@[IPv6:2001:db8::1]>", "a@[IPv6:2001:db8::1]", ""),
            ("<@relay.test,@b.test:bob@x.test>", "bob@x.test", ""),
            ("<jöran@bücher.test>", "jöran@bücher.test", ""),
            ("<>", "", ""),
            ("<> BODY=8BITMIME", "", " BODY=8BITMIME"),
        ] {
            assert_eq!(parse_path(input), Some((mailbox, rest)), "{input}");
        }
    }

    #[test]
    fn rejects_bad_syntax() {
        let long_local = format!("<{}@x.test>", "a".repeat(65));
        let long_label = format!("<a@{}.test>", "b".repeat(64));
        let long_domain = format!("<a@{}x.test>", "b.".repeat(126));
        let long_mailbox = mailbox_of_length(255);
        for input in [
            "alice@contoso.test",
            "<alice@contoso.test",
            "<alice>",
            "<postmaster>",
            "<@contoso.test>",
            "<alice@>",
            "<alice@contoso..test>",
            "<.alice@x.test>",
            "<alice.@x.test>",
            "<a..b@x.test>",
            "<a b@x.test>",
            "<a@b@x.test>",
            "<a@x.test.>",
            "<a@[]>",
            "<\"unterminated@x.test>",
            "<\"ctl\u{1}\"@x.test>",
            "<@relay.test:>",
            "<@relay.test bob@x.test>",
            "<a@x_y.test>",
            "",
            "<",
            long_local.as_str(),
            long_label.as_str(),
            long_domain.as_str(),
            long_mailbox.as_str(),
        ] {
            assert_eq!(parse_path(input), None, "{input}");
        }
    }

    /// `<aaa...@bbb...ccc...ddd.test>` whose mailbox is `len` octets (len >= 201).
    fn mailbox_of_length(len: usize) -> String {
        let d = "d".repeat(len - 64 - 1 - 63 - 1 - 63 - 1 - 5);
        format!(
            "<{}@{}.{}.{d}.test>",
            "a".repeat(64),
            "b".repeat(63),
            "c".repeat(63)
        )
    }

    #[test]
    fn the_longest_mailbox_is_254_octets() {
        let path = mailbox_of_length(254);
        let parsed = parse_path(&path).map(|(mailbox, _)| mailbox.len());
        assert_eq!(parsed, Some(254));
        assert_eq!(parse_path(&mailbox_of_length(255)), None);
    }

    #[test]
    fn domain_of_takes_the_last_at() {
        assert_eq!(domain_of("\"a@b\"@Contoso.Test"), "Contoso.Test");
        assert_eq!(domain_of("postmaster"), "");
    }
}

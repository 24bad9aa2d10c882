//! Delivery status notifications (RFC 3464): the multipart/report a sender gets when recipients
//! fail for good or wait too long. Built as text here (pure: no clock, no I/O); the runner
//! queues it with the null sender, so a DSN never causes another DSN.

use chrono::{DateTime, Utc};

use super::Envelope;

/// Why the notice is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Some recipients failed permanently (or their message expired).
    Failure,
    /// Delivery is taking long; the queue keeps trying.
    Delay,
}

/// One recipient reported on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    pub address: String,
    /// The last reply or error, e.g. "550 5.1.1 ..." or a connector's TLS reason.
    pub diagnostic: String,
}

/// Messages larger than this are returned as their header only.
pub const RETURN_FULL_LIMIT: usize = 256 * 1024;

/// The RFC 3463 status for a diagnostic: the first "d.d.d" it contains of the right class, else
/// a generic one. A failure is always reported as 5.x.x, a delay as 4.x.x.
fn status(kind: Kind, diagnostic: &str) -> String {
    let found = diagnostic
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .find_map(|w| {
            let parts: Vec<&str> = w.split('.').collect();
            (parts.len() == 3
                && parts.iter().all(|p| {
                    !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit())
                })
                && matches!(parts[0], "2" | "4" | "5"))
            .then(|| (parts[1].to_string(), parts[2].to_string()))
        });
    let class = if kind == Kind::Failure { "5" } else { "4" };
    match found {
        Some((subject, detail)) => format!("{class}.{subject}.{detail}"),
        None => format!("{class}.0.0"),
    }
}

/// The header section of a message (up to the empty line), for returning headers only.
fn header_part(message: &[u8]) -> &[u8] {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 2);
    &message[..end.unwrap_or(message.len())]
}

/// Builds the notice to `envelope.mail_from` about `recipients`, as a complete RFC 5322 message.
pub fn build(
    kind: Kind,
    hostname: &str,
    envelope: &Envelope,
    recipients: &[Reported],
    original: &[u8],
    dsn_id: &str,
    now: DateTime<Utc>,
) -> Vec<u8> {
    let boundary = format!("{dsn_id}/{hostname}");
    let date = now.to_rfc2822();
    let arrival = DateTime::from_timestamp(envelope.received_at, 0)
        .map(|t| t.to_rfc2822())
        .unwrap_or_default();
    let (subject, intro, action) = match kind {
        Kind::Failure => (
            "Undelivered Mail Returned to Sender",
            "I'm sorry to have to inform you that your message could not\r\nbe delivered to one or more recipients. It's attached below.",
            "failed",
        ),
        Kind::Delay => (
            "Delayed Mail (still being retried)",
            "Your message could not be delivered yet. The mail system will keep\r\ntrying; you do not need to send it again.",
            "delayed",
        ),
    };
    let mut m = String::new();
    m.push_str(&format!(
        "From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\n"
    ));
    m.push_str(&format!("To: <{}>\r\n", envelope.mail_from));
    m.push_str(&format!("Subject: {subject}\r\n"));
    m.push_str(&format!("Date: {date}\r\n"));
    m.push_str(&format!("Message-ID: <{dsn_id}@{hostname}>\r\n"));
    m.push_str("Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n");
    m.push_str(&format!(
        "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\r\n"
    ));
    m.push_str(&format!(
        "--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    ));
    m.push_str(&format!(
        "This is the mail system at host {hostname}.\r\n\r\n{intro}\r\n\r\n"
    ));
    for r in recipients {
        m.push_str(&format!("<{}>: {}\r\n", r.address, one_line(&r.diagnostic)));
    }
    m.push_str(&format!(
        "\r\n--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
    ));
    m.push_str(&format!(
        "Reporting-MTA: dns; {hostname}\r\nX-Sealpost-Queue-ID: {}\r\n",
        envelope.id
    ));
    m.push_str(&format!("Arrival-Date: {arrival}\r\n"));
    for r in recipients {
        m.push_str(&format!(
            "\r\nFinal-Recipient: rfc822; {}\r\nAction: {action}\r\nStatus: {}\r\nDiagnostic-Code: smtp; {}\r\n",
            r.address,
            status(kind, &r.diagnostic),
            one_line(&r.diagnostic)
        ));
    }
    let full = original.len() <= RETURN_FULL_LIMIT;
    let part_type = if full {
        "message/rfc822"
    } else {
        "text/rfc822-headers"
    };
    m.push_str(&format!(
        "\r\n--{boundary}\r\nContent-Type: {part_type}\r\n\r\n"
    ));
    let mut out = m.into_bytes();
    out.extend_from_slice(if full {
        original
    } else {
        header_part(original)
    });
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

/// Keeps a diagnostic on one line and printable.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope() -> Envelope {
        Envelope::new(
            "Q1",
            "alice@contoso.test",
            vec!["bob@fabrikam.test".into()],
            "c.test",
            "127.0.0.1:1",
            1_700_000_000,
        )
    }

    #[test]
    fn failure_report_has_the_three_parts_and_the_reason() {
        let rcpt = Reported {
            address: "bob@fabrikam.test".into(),
            diagnostic:
                "451 4.7.4 TLS required by connector to-fabrikam: peer did not offer STARTTLS"
                    .into(),
        };
        let now = DateTime::parse_from_rfc3339("2026-11-22T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let out = build(
            Kind::Failure,
            "mx.contoso.test",
            &envelope(),
            &[rcpt],
            b"Subject: hi\r\n\r\nbody\r\n",
            "D1",
            now,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("From: Mail Delivery System <MAILER-DAEMON@mx.contoso.test>\r\nTo: <alice@contoso.test>\r\n"));
        assert!(text.contains("Content-Type: multipart/report; report-type=delivery-status;"));
        assert!(text.contains("Auto-Submitted: auto-replied\r\n"));
        assert!(text.contains(
            "Final-Recipient: rfc822; bob@fabrikam.test\r\nAction: failed\r\nStatus: 5.7.4\r\n"
        ));
        assert!(text.contains("Diagnostic-Code: smtp; 451 4.7.4 TLS required by connector to-fabrikam: peer did not offer STARTTLS"));
        assert!(text.contains("Content-Type: message/rfc822\r\n\r\nSubject: hi\r\n\r\nbody\r\n"));
        assert!(text.ends_with("--D1/mx.contoso.test--\r\n"));
        // The parts parse as MIME.
        let parsed = mail_parser::MessageParser::default()
            .parse(text.as_bytes())
            .unwrap();
        assert_eq!(parsed.parts.len(), 4, "multipart + text + status + message");
    }

    #[test]
    fn statuses_and_large_messages() {
        assert_eq!(status(Kind::Failure, "550 5.1.1 User unknown"), "5.1.1");
        assert_eq!(status(Kind::Failure, "connect: refused"), "5.0.0");
        assert_eq!(status(Kind::Delay, "451 4.4.1 (timeout)"), "4.4.1");
        let big = [
            b"Subject: big\r\n\r\n".as_slice(),
            &vec![b'x'; RETURN_FULL_LIMIT],
        ]
        .concat();
        let r = Reported {
            address: "b@f.test".into(),
            diagnostic: "x".into(),
        };
        let out = build(Kind::Delay, "h", &envelope(), &[r], &big, "D2", Utc::now());
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.contains("Content-Type: text/rfc822-headers\r\n\r\nSubject: big\r\n\r\n--D2/h--"),
            "headers only"
        );
        assert!(text.contains("Action: delayed\r\nStatus: 4.0.0\r\n"));
    }
}

//! Delivery status notifications (RFC 3464): the multipart/report a sender gets when recipients
//! fail for good, wait too long, or (NOTIFY=SUCCESS, RFC 3461) were delivered or relayed. Built
//! as text here (pure: no clock, no I/O); the runner queues it with the null sender, so a DSN
//! never causes another DSN.
//!
//! What is returned of the message: RET=HDRS its header section, RET=FULL all of it; without
//! RET the whole message up to [`RETURN_FULL_LIMIT`], its header section beyond. Success
//! notices return the header section only.

use chrono::{DateTime, Utc};

use super::{Envelope, NoticeAction};
use crate::mail::dsn::{Orcpt, Ret};

/// Why the notice is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Some recipients failed permanently (or their message expired).
    Failure,
    /// Delivery is taking long; the queue keeps trying.
    Delay,
    /// Recipients that asked for NOTIFY=SUCCESS were delivered or relayed.
    Success,
}

/// One recipient reported on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    pub address: String,
    /// The last reply or error, e.g. "550 5.1.1 ..." or a connector's TLS reason.
    pub diagnostic: String,
    /// For success notices: delivered or relayed (other kinds imply their action).
    pub action: Option<NoticeAction>,
    /// ORCPT as given with the recipient.
    pub orcpt: Option<Orcpt>,
}

/// Without RET, messages larger than this are returned as their header only.
pub const RETURN_FULL_LIMIT: usize = 256 * 1024;

/// The `Action:` field of one recipient.
fn action(kind: Kind, r: &Reported) -> &'static str {
    match (kind, r.action) {
        (Kind::Failure, _) => "failed",
        (Kind::Delay, _) => "delayed",
        (Kind::Success, Some(NoticeAction::Relayed)) => "relayed",
        (Kind::Success, _) => "delivered",
    }
}

/// Whether the whole message is returned, rather than its header section.
fn returns_full(kind: Kind, ret: Option<Ret>, len: usize) -> bool {
    match (kind, ret) {
        (Kind::Success, _) | (_, Some(Ret::Hdrs)) => false,
        (_, Some(Ret::Full)) => true,
        (_, None) => len <= RETURN_FULL_LIMIT,
    }
}

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
    let class = match kind {
        Kind::Failure => "5",
        Kind::Delay => "4",
        Kind::Success => return "2.0.0".to_string(),
    };
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
    let (subject, intro) = match kind {
        Kind::Failure => (
            "Undelivered Mail Returned to Sender",
            "I'm sorry to have to inform you that your message could not\r\nbe delivered to one or more recipients. It's attached below.",
        ),
        Kind::Delay => (
            "Delayed Mail (still being retried)",
            "Your message could not be delivered yet. The mail system will keep\r\ntrying; you do not need to send it again.",
        ),
        Kind::Success => (
            "Successful Mail Delivery Report",
            "Your message was delivered to the mailbox of, or relayed onwards for, the\r\nrecipients below. A relayed message may get no further notice.",
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
        let line = match (kind, r.action) {
            (Kind::Success, Some(NoticeAction::Relayed)) => {
                format!("relayed to a server without notices: {}", r.diagnostic)
            }
            (Kind::Success, _) => "delivered to mailbox".to_string(),
            _ => r.diagnostic.clone(),
        };
        m.push_str(&format!("<{}>: {}\r\n", r.address, one_line(&line)));
    }
    m.push_str(&format!(
        "\r\n--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
    ));
    if let Some(envid) = &envelope.envid {
        m.push_str(&format!("Original-Envelope-Id: {}\r\n", one_line(envid)));
    }
    m.push_str(&format!(
        "Reporting-MTA: dns; {hostname}\r\nX-Sealpost-Queue-ID: {}\r\n",
        envelope.id
    ));
    m.push_str(&format!("Arrival-Date: {arrival}\r\n"));
    for r in recipients {
        m.push_str("\r\n");
        if let Some(o) = &r.orcpt {
            m.push_str(&format!(
                "Original-Recipient: {}; {}\r\n",
                one_line(&o.addr_type),
                one_line(&o.address)
            ));
        }
        m.push_str(&format!(
            "Final-Recipient: rfc822; {}\r\nAction: {}\r\nStatus: {}\r\n",
            r.address,
            action(kind, r),
            status(kind, &r.diagnostic),
        ));
        let delivered = kind == Kind::Success && r.action != Some(NoticeAction::Relayed);
        if !delivered && !r.diagnostic.is_empty() {
            m.push_str(&format!(
                "Diagnostic-Code: smtp; {}\r\n",
                one_line(&r.diagnostic)
            ));
        }
    }
    // RFC 8689 §5: the body of a REQUIRETLS message is not returned, whatever RET says; the
    // header section is enough to tell which message failed.
    let full = !envelope.requiretls && returns_full(kind, envelope.ret, original.len());
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
            action: None,
            orcpt: None,
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
            action: None,
            orcpt: None,
        };
        let out = build(Kind::Delay, "h", &envelope(), &[r], &big, "D2", Utc::now());
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.contains("Content-Type: text/rfc822-headers\r\n\r\nSubject: big\r\n\r\n--D2/h--"),
            "headers only"
        );
        assert!(text.contains("Action: delayed\r\nStatus: 4.0.0\r\n"));
    }

    fn text(kind: Kind, env: &Envelope, rcpts: &[Reported], original: &[u8]) -> String {
        let out = build(kind, "h", env, rcpts, original, "D3", Utc::now());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn ret_chooses_what_is_returned() {
        let small = b"Subject: s\r\n\r\nsecret body\r\n";
        let big = [
            b"Subject: big\r\n\r\n".as_slice(),
            &vec![b'x'; RETURN_FULL_LIMIT + 1],
        ]
        .concat();
        let r = Reported {
            address: "b@f.test".into(),
            diagnostic: "550 5.1.1 no".into(),
            action: None,
            orcpt: None,
        };
        let mut env = envelope();
        env.ret = Some(Ret::Hdrs);
        let hdrs = text(Kind::Failure, &env, std::slice::from_ref(&r), small);
        assert!(
            hdrs.contains("Content-Type: text/rfc822-headers\r\n\r\nSubject: s\r\n\r\n--D3/h--")
        );
        assert!(!hdrs.contains("secret body"), "{hdrs}");
        env.ret = Some(Ret::Full);
        let full = text(Kind::Failure, &env, std::slice::from_ref(&r), &big);
        assert!(full.contains("Content-Type: message/rfc822\r\n\r\nSubject: big"));
        assert!(full.contains(&"x".repeat(RETURN_FULL_LIMIT + 1)));
        env.ret = None;
        let default = text(Kind::Failure, &env, std::slice::from_ref(&r), small);
        assert!(default.contains("message/rfc822") && default.contains("secret body"));
        env.ret = Some(Ret::Full);
        env.requiretls = true;
        let protected = text(Kind::Failure, &env, std::slice::from_ref(&r), small);
        assert!(
            protected.contains("text/rfc822-headers") && !protected.contains("secret body"),
            "a REQUIRETLS message's body is never returned: {protected}"
        );
    }

    #[test]
    fn envid_orcpt_and_success_actions_are_reported() {
        let mut env = envelope();
        env.envid = Some("QQ+1".into());
        let delivered = Reported {
            address: "bob@contoso.test".into(),
            diagnostic: "stored as 12".into(),
            action: Some(NoticeAction::Delivered),
            orcpt: Orcpt::parse("rfc822;Bob+2Bx@contoso.test"),
        };
        let relayed = Reported {
            address: "dave@fabrikam.test".into(),
            diagnostic: "127.0.0.1 said: 250 2.0.0 Ok".into(),
            action: Some(NoticeAction::Relayed),
            orcpt: None,
        };
        let t = text(
            Kind::Success,
            &env,
            &[delivered, relayed],
            b"Subject: s\r\n\r\nsecret body\r\n",
        );
        assert!(
            t.contains("Subject: Successful Mail Delivery Report\r\n"),
            "{t}"
        );
        assert!(
            t.contains("Original-Envelope-Id: QQ+1\r\nReporting-MTA: dns; h\r\n"),
            "{t}"
        );
        assert!(t.contains(
            "\r\nOriginal-Recipient: rfc822; Bob+x@contoso.test\r\nFinal-Recipient: rfc822; bob@contoso.test\r\nAction: delivered\r\nStatus: 2.0.0\r\n\r\n"
        ), "{t}");
        assert!(t.contains(
            "Final-Recipient: rfc822; dave@fabrikam.test\r\nAction: relayed\r\nStatus: 2.0.0\r\nDiagnostic-Code: smtp; 127.0.0.1 said: 250 2.0.0 Ok\r\n"
        ), "{t}");
        assert!(
            t.contains("text/rfc822-headers") && !t.contains("secret body"),
            "{t}"
        );
    }
}

//! SMTP replies with enhanced status codes (RFC 5321 §4.2, RFC 3463).

use std::fmt;

/// One SMTP reply: a three-digit code, an optional enhanced status code and text.
/// Text with several lines (separated by `\n`) is written as a multi-line reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub enhanced: Option<[u16; 3]>,
    pub text: String,
}

impl Reply {
    /// A reply with an enhanced status code, e.g. `Reply::new(250, [2, 0, 0], "Ok")`.
    pub fn new(code: u16, enhanced: [u16; 3], text: impl Into<String>) -> Self {
        Reply {
            code,
            enhanced: Some(enhanced),
            text: text.into(),
        }
    }

    /// A reply without an enhanced status code (greeting, EHLO, 354, or a peer that sent none).
    pub fn bare(code: u16, text: impl Into<String>) -> Self {
        Reply {
            code,
            enhanced: None,
            text: text.into(),
        }
    }

    /// 2xx or 3xx.
    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    /// 4xx: try again later.
    pub fn is_temporary(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx: do not try again.
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// The reply as written on the wire, every line ending in CRLF.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.text.len() + 16);
        let lines: Vec<&str> = self.text.split('\n').collect();
        for (i, line) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            out.extend_from_slice(format!("{}{}", self.code, sep).as_bytes());
            if let Some([a, b, c]) = self.enhanced {
                out.extend_from_slice(format!("{a}.{b}.{c} ").as_bytes());
            }
            out.extend_from_slice(line.trim_end_matches('\r').as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out
    }
}

impl fmt::Display for Reply {
    /// One line, as shown in logs and `queue list`: `450 4.7.0 text` (lines joined by "; ").
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some([a, b, c]) = self.enhanced {
            write!(f, " {a}.{b}.{c}")?;
        }
        write!(f, " {}", self.text.replace('\n', "; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_line_with_enhanced_code() {
        let r = Reply::new(250, [2, 0, 0], "Ok: queued as ABC");
        assert_eq!(r.to_bytes(), b"250 2.0.0 Ok: queued as ABC\r\n");
        assert_eq!(r.to_string(), "250 2.0.0 Ok: queued as ABC");
    }

    #[test]
    fn multi_line_uses_dash_continuations() {
        let r = Reply::bare(250, "mx.test\nPIPELINING\nSTARTTLS");
        assert_eq!(
            r.to_bytes(),
            b"250-mx.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n"
        );
        assert!(r.is_positive() && !r.is_temporary() && !r.is_permanent());
        assert!(Reply::bare(451, "x").is_temporary());
        assert!(Reply::bare(550, "x").is_permanent());
    }
}

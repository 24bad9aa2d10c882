//! One TLSA record (RFC 6698 §2.1) as the DNS gives it, in presentation format and in the terms
//! DANE for SMTP uses (RFC 7672 §3.1.3: only DANE-TA and DANE-EE are usable). Matching it
//! against a certificate is the TLS side's part (`tls::dane`).

use std::fmt;

/// One TLSA record (RFC 6698 §2.1).
#[derive(Clone, PartialEq, Eq)]
pub struct Tlsa {
    pub usage: u8,
    pub selector: u8,
    pub matching: u8,
    pub data: Vec<u8>,
}

/// DANE-TA(2): a trust anchor for the server's chain.
pub const DANE_TA: u8 = 2;
/// DANE-EE(3): the server's own certificate or key.
pub const DANE_EE: u8 = 3;

impl fmt::Debug for Tlsa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for Tlsa {
    /// Presentation format: `3 1 1 <hex>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {}",
            self.usage,
            self.selector,
            self.matching,
            hex::encode(&self.data)
        )
    }
}

impl Tlsa {
    /// Reads the presentation format, `usage selector matching hex` (the hex may be split by
    /// spaces, as zone files do).
    pub fn parse(text: &str) -> Result<Tlsa, String> {
        let mut fields = text.split_whitespace();
        let mut number = |what: &str| {
            fields
                .next()
                .and_then(|f| f.parse::<u8>().ok())
                .ok_or_else(|| format!("TLSA {text:?}: {what} is not a number from 0 to 255"))
        };
        let (usage, selector, matching) = (
            number("usage")?,
            number("selector")?,
            number("matching type")?,
        );
        let hex_text: String = fields.collect();
        let data = hex::decode(&hex_text)
            .map_err(|_| format!("TLSA {text:?}: the association data is not hex"))?;
        if data.is_empty() {
            return Err(format!("TLSA {text:?}: no association data"));
        }
        Ok(Tlsa {
            usage,
            selector,
            matching,
            data,
        })
    }

    /// Whether this record can be used for SMTP (usage, selector, matching type and length).
    pub fn usable(&self) -> bool {
        let length_ok = match self.matching {
            0 => !self.data.is_empty(),
            1 => self.data.len() == 32,
            2 => self.data.len() == 64,
            _ => false,
        };
        matches!(self.usage, DANE_TA | DANE_EE) && self.selector <= 1 && length_ok
    }
}

//! Sender authentication: DKIM signing of our own outbound mail, and SPF, DKIM, DMARC and ARC
//! checks of mail from outside, reported in an Authentication-Results header (RFC 8601).

pub mod dkim_sign;
pub mod header;
pub mod static_txt;
pub mod verify;

pub use dkim_sign::{DkimKey, KeyAlgorithm, KeyError, Signer, Signers};
pub use static_txt::StaticTxt;
pub use verify::{AuthOutcome, Disposition, DmarcOverride, Inbound, Verifier, VerifySettings};

use std::fmt;

/// One method's result as RFC 8601 §2.7 names it (what transport rules match on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AuthResult {
    Pass,
    Fail,
    SoftFail,
    Neutral,
    None,
    TempError,
    PermError,
}

impl AuthResult {
    /// Every value, for validation messages.
    pub const ALL: [AuthResult; 7] = [
        AuthResult::Pass,
        AuthResult::Fail,
        AuthResult::SoftFail,
        AuthResult::Neutral,
        AuthResult::None,
        AuthResult::TempError,
        AuthResult::PermError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuthResult::Pass => "pass",
            AuthResult::Fail => "fail",
            AuthResult::SoftFail => "softfail",
            AuthResult::Neutral => "neutral",
            AuthResult::None => "none",
            AuthResult::TempError => "temperror",
            AuthResult::PermError => "permerror",
        }
    }

    /// Parses the RFC 8601 name (any case).
    pub fn parse(text: &str) -> Option<AuthResult> {
        AuthResult::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(text.trim()))
    }
}

impl<'de> serde::Deserialize<'de> for AuthResult {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        AuthResult::parse(&text).ok_or_else(|| {
            let all: Vec<&str> = AuthResult::ALL.iter().map(|r| r.as_str()).collect();
            serde::de::Error::custom(format!(
                "{text:?} is not a result; expected one of {}",
                all.join(", ")
            ))
        })
    }
}

impl fmt::Display for AuthResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

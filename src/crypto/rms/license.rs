//! The publishing license: its fields, usage rights, and the canonical byte encoding that the
//! tenant's signature covers (docs/protected-message-format.md).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::RmsError;

/// Content encryption algorithm of a protected message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RmsAlgorithm {
    /// AES-256-CBC with PKCS#7 padding (the default).
    #[default]
    Aes256Cbc,
    /// AES-128-CBC with PKCS#7 padding (parity with RMS "mode 2").
    Aes128Cbc,
}

impl RmsAlgorithm {
    /// The byte written in the license.
    pub fn code(self) -> u8 {
        match self {
            RmsAlgorithm::Aes256Cbc => 1,
            RmsAlgorithm::Aes128Cbc => 2,
        }
    }

    /// The content key length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            RmsAlgorithm::Aes256Cbc => 32,
            RmsAlgorithm::Aes128Cbc => 16,
        }
    }

    fn from_code(c: u8) -> Result<Self, RmsError> {
        match c {
            1 => Ok(RmsAlgorithm::Aes256Cbc),
            2 => Ok(RmsAlgorithm::Aes128Cbc),
            other => Err(RmsError::Unsupported(format!(
                "content algorithm {other} (known: 1 = AES-256-CBC, 2 = AES-128-CBC)"
            ))),
        }
    }

    /// Its name, e.g. "AES-256-CBC".
    pub fn name(self) -> &'static str {
        match self {
            RmsAlgorithm::Aes256Cbc => "AES-256-CBC",
            RmsAlgorithm::Aes128Cbc => "AES-128-CBC",
        }
    }
}

/// A set of usage rights, one bit each (the bit values are the wire encoding).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Rights(u8);

impl Rights {
    pub const VIEW: Rights = Rights(0x01);
    pub const REPLY: Rights = Rights(0x02);
    pub const REPLYALL: Rights = Rights(0x04);
    pub const FORWARD: Rights = Rights(0x08);
    pub const PRINT: Rights = Rights(0x10);
    pub const EXTRACT: Rights = Rights(0x20);
    pub const OWNER: Rights = Rights(0x40);
    const ALL_BITS: u8 = 0x7f;
    const NAMES: [(Rights, &'static str); 7] = [
        (Rights::VIEW, "VIEW"),
        (Rights::REPLY, "REPLY"),
        (Rights::REPLYALL, "REPLYALL"),
        (Rights::FORWARD, "FORWARD"),
        (Rights::PRINT, "PRINT"),
        (Rights::EXTRACT, "EXTRACT"),
        (Rights::OWNER, "OWNER"),
    ];

    /// No rights.
    pub const fn empty() -> Rights {
        Rights(0)
    }

    /// The wire byte.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// From the wire byte; `None` if a reserved bit (0x80) is set.
    pub fn from_bits(b: u8) -> Option<Rights> {
        (b & !Self::ALL_BITS == 0).then_some(Rights(b))
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether every right in `other` is held here.
    pub fn contains(self, other: Rights) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn union(self, other: Rights) -> Rights {
        Rights(self.0 | other.0)
    }

    /// What these rights allow: OWNER implies every right.
    pub fn effective(self) -> Rights {
        if self.contains(Rights::OWNER) {
            Rights(Self::ALL_BITS)
        } else {
            self
        }
    }

    /// The names of the rights held, in wire-bit order.
    pub fn names(self) -> Vec<&'static str> {
        Self::NAMES
            .iter()
            .filter(|(r, _)| self.contains(*r))
            .map(|(_, n)| *n)
            .collect()
    }
}

impl From<crate::rules::Right> for Rights {
    fn from(r: crate::rules::Right) -> Rights {
        use crate::rules::Right;
        match r {
            Right::View => Rights::VIEW,
            Right::Reply => Rights::REPLY,
            Right::ReplyAll => Rights::REPLYALL,
            Right::Forward => Rights::FORWARD,
            Right::Print => Rights::PRINT,
            Right::Extract => Rights::EXTRACT,
            Right::Owner => Rights::OWNER,
        }
    }
}

impl std::fmt::Display for Rights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            f.write_str("(none)")
        } else {
            f.write_str(&self.names().join(", "))
        }
    }
}

/// The principal that stands for everyone.
pub const ANYONE: &str = "ANYONE";

/// Normalises a principal: addresses and `*@domain` in lower case, `*` / `anyone` → `ANYONE`.
/// `None` if it is not a principal.
pub fn normalize_principal(p: &str) -> Option<String> {
    let p = p.trim();
    if p == "*" || p.eq_ignore_ascii_case(ANYONE) {
        return Some(ANYONE.to_string());
    }
    let (local, domain) = p.split_once('@')?;
    let ok = !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && p.len() <= 320
        && !p.chars().any(|c| c.is_whitespace() || c.is_control());
    ok.then(|| p.to_lowercase())
}

/// A signed publishing license (all fields as written on the wire).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct License {
    /// Who protected the message (the sender's address).
    pub issuer: String,
    /// SHA-256 of the tenant public key's SubjectPublicKeyInfo DER.
    pub tenant_key_id: [u8; 32],
    pub algorithm: RmsAlgorithm,
    pub iv: [u8; 16],
    /// The content key, RSA-OAEP-SHA256 (MGF1-SHA256, empty label) under the tenant key.
    pub wrapped_key: Vec<u8>,
    /// SHA-256 of the ciphertext.
    pub ciphertext_sha256: [u8; 32],
    /// Principal → rights; principals normalised (see `normalize_principal`).
    pub rights: BTreeMap<String, Rights>,
    /// Seconds since the Unix epoch.
    pub issued: u64,
    /// Seconds since the Unix epoch.
    pub expires: Option<u64>,
    pub template: String,
    /// The original message's Message-ID, as written in its header (angle brackets included).
    pub message_id: Option<String>,
    /// Where readers ask for a use license (`https://...`); present only in version 2.
    pub licensing_url: Option<String>,
}

// Field tags, in the order they must appear.
const T_ISSUER: u8 = 0x01;
const T_KEY_ID: u8 = 0x02;
const T_ALGORITHM: u8 = 0x03;
const T_IV: u8 = 0x04;
const T_WRAPPED_KEY: u8 = 0x05;
const T_DIGEST: u8 = 0x06;
const T_RIGHTS: u8 = 0x07;
const T_ISSUED: u8 = 0x08;
const T_EXPIRES: u8 = 0x09;
const T_TEMPLATE: u8 = 0x0a;
const T_MESSAGE_ID: u8 = 0x0b;
const T_LICENSING_URL: u8 = 0x0c;

/// Longest licensing URL, in bytes.
pub const MAX_URL: usize = 2048;

/// Whether `url` may be written as a licensing URL: `https://` followed by a host, at most
/// `MAX_URL` bytes, no spaces or control characters. `None` if it may, else the problem.
pub fn licensing_url_problem(url: &str) -> Option<&'static str> {
    let Some(rest) = url.strip_prefix("https://") else {
        return Some("must start with https://");
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    };
    if url.len() > MAX_URL {
        Some("longer than 2048 bytes")
    } else if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("contains spaces or control characters")
    } else if host.is_empty() {
        Some("has no host")
    } else {
        None
    }
}

/// Longest text field (issuer, template, message id), in bytes.
const MAX_TEXT: usize = 998;
/// Latest time a license may carry: 9999-12-31T23:59:59Z.
pub(crate) const MAX_TIME: u64 = 253_402_300_799;
/// Longest license accepted.
pub(crate) const MAX_LICENSE: usize = 1 << 20;

fn corrupted(what: impl std::fmt::Display) -> RmsError {
    RmsError::Corrupted(format!("license: {what}"))
}

/// Appends one field: `tag(1) | len(4, big-endian) | value` (licenses and use licenses alike).
pub(super) fn put(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&(value.len() as u32).to_be_bytes());
    out.extend_from_slice(value);
}

fn text_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_TEXT && !s.chars().any(char::is_control)
}

impl License {
    /// The format version: 2 when the license carries a licensing URL, else 1 (the container
    /// version that carries it).
    pub fn version(&self) -> u8 {
        if self.licensing_url.is_some() {
            2
        } else {
            1
        }
    }

    /// The key id in hex (lower case), as the key file is named.
    pub fn tenant_key_hex(&self) -> String {
        hex::encode(self.tenant_key_id)
    }

    /// The time the license was issued.
    pub fn issued_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.issued)
    }

    /// The expiry time, if any.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires.map(|s| UNIX_EPOCH + Duration::from_secs(s))
    }

    /// The rights `address` holds: the union of its own entry, its domain's `*@domain` entry
    /// and `ANYONE`, with OWNER implying every right.
    pub fn rights_of(&self, address: &str) -> Rights {
        let address = address.trim().to_lowercase();
        let domain = address
            .rsplit_once('@')
            .map(|(_, d)| format!("*@{d}"))
            .unwrap_or_default();
        self.rights
            .iter()
            .filter(|(p, _)| **p == address || **p == domain || p.as_str() == ANYONE)
            .fold(Rights::empty(), |acc, (_, r)| acc.union(*r))
            .effective()
    }

    /// The canonical encoding: `tag (1) | length (4, big endian) | value` for each field present,
    /// in increasing tag order. This is exactly what the signature covers.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512 + self.wrapped_key.len());
        put(&mut out, T_ISSUER, self.issuer.as_bytes());
        put(&mut out, T_KEY_ID, &self.tenant_key_id);
        put(&mut out, T_ALGORITHM, &[self.algorithm.code()]);
        put(&mut out, T_IV, &self.iv);
        put(&mut out, T_WRAPPED_KEY, &self.wrapped_key);
        put(&mut out, T_DIGEST, &self.ciphertext_sha256);
        let mut rights = Vec::new();
        for (principal, r) in &self.rights {
            rights.extend_from_slice(&(principal.len() as u16).to_be_bytes());
            rights.extend_from_slice(principal.as_bytes());
            rights.push(r.bits());
        }
        put(&mut out, T_RIGHTS, &rights);
        put(&mut out, T_ISSUED, &self.issued.to_be_bytes());
        if let Some(e) = self.expires {
            put(&mut out, T_EXPIRES, &e.to_be_bytes());
        }
        put(&mut out, T_TEMPLATE, self.template.as_bytes());
        if let Some(m) = &self.message_id {
            put(&mut out, T_MESSAGE_ID, m.as_bytes());
        }
        if let Some(u) = &self.licensing_url {
            put(&mut out, T_LICENSING_URL, u.as_bytes());
        }
        out
    }

    /// Parses the canonical encoding strictly: every required field once, tags increasing, no
    /// trailing bytes, values of the right lengths; so `decode(b)?.encode() == b`.
    pub fn decode(bytes: &[u8]) -> Result<License, RmsError> {
        if bytes.len() > MAX_LICENSE {
            return Err(corrupted("too long"));
        }
        let mut fields: BTreeMap<u8, &[u8]> = BTreeMap::new();
        let mut rest = bytes;
        let mut last = 0u8;
        while let [tag, tail @ ..] = rest {
            let (len, tail) = tail
                .split_first_chunk::<4>()
                .ok_or_else(|| corrupted("truncated field length"))?;
            let len = u32::from_be_bytes(*len) as usize;
            if tail.len() < len {
                return Err(corrupted(format!("field {tag:#04x} truncated")));
            }
            if *tag <= last {
                return Err(corrupted(format!("field {tag:#04x} out of order")));
            }
            if *tag > T_LICENSING_URL {
                return Err(RmsError::Unsupported(format!("license field {tag:#04x}")));
            }
            last = *tag;
            fields.insert(*tag, &tail[..len]);
            rest = &tail[len..];
        }
        let need = |t: u8, name: &str| {
            fields
                .get(&t)
                .copied()
                .ok_or_else(|| corrupted(format!("no {name}")))
        };
        let text = |t: u8, name: &str| -> Result<Option<String>, RmsError> {
            match fields.get(&t) {
                None => Ok(None),
                Some(v) => match std::str::from_utf8(v) {
                    Ok(s) if text_ok(s) => Ok(Some(s.to_string())),
                    _ => Err(corrupted(format!("bad {name}"))),
                },
            }
        };
        let fixed = |t: u8, name: &str, n: usize| -> Result<&[u8], RmsError> {
            let v = need(t, name)?;
            if v.len() == n {
                Ok(v)
            } else {
                Err(corrupted(format!("{name} is {} bytes, not {n}", v.len())))
            }
        };
        let u64_field = |v: &[u8], name: &str| -> Result<u64, RmsError> {
            let t = <[u8; 8]>::try_from(v)
                .map(u64::from_be_bytes)
                .map_err(|_| corrupted(format!("{name} is not 8 bytes")))?;
            if t > MAX_TIME {
                return Err(corrupted(format!("{name} after the year 9999")));
            }
            Ok(t)
        };
        let issuer = text(T_ISSUER, "issuer")?.ok_or_else(|| corrupted("no issuer"))?;
        let mut tenant_key_id = [0u8; 32];
        tenant_key_id.copy_from_slice(fixed(T_KEY_ID, "tenant key id", 32)?);
        let algorithm = RmsAlgorithm::from_code(fixed(T_ALGORITHM, "algorithm", 1)?[0])?;
        let mut iv = [0u8; 16];
        iv.copy_from_slice(fixed(T_IV, "IV", 16)?);
        let wrapped_key = need(T_WRAPPED_KEY, "wrapped key")?.to_vec();
        if !(256..=1024).contains(&wrapped_key.len()) {
            return Err(corrupted("wrapped key length"));
        }
        let mut ciphertext_sha256 = [0u8; 32];
        ciphertext_sha256.copy_from_slice(fixed(T_DIGEST, "ciphertext digest", 32)?);
        let rights = decode_rights(need(T_RIGHTS, "rights")?)?;
        let issued = u64_field(need(T_ISSUED, "issue time")?, "issue time")?;
        let expires = match fields.get(&T_EXPIRES) {
            Some(v) => Some(u64_field(v, "expiry")?),
            None => None,
        };
        let template = text(T_TEMPLATE, "template")?.ok_or_else(|| corrupted("no template"))?;
        let message_id = text(T_MESSAGE_ID, "message id")?;
        let licensing_url = match fields.get(&T_LICENSING_URL) {
            None => None,
            Some(v) => match std::str::from_utf8(v) {
                Ok(u) if licensing_url_problem(u).is_none() => Some(u.to_string()),
                _ => return Err(corrupted("bad licensing URL")),
            },
        };
        Ok(License {
            issuer,
            tenant_key_id,
            algorithm,
            iv,
            wrapped_key,
            ciphertext_sha256,
            rights,
            issued,
            expires,
            template,
            message_id,
            licensing_url,
        })
    }

    /// A human summary: issuer, template, algorithm, times, rights per principal.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "protected by {} with template {:?} ({}, tenant key {})\nissued {}\n",
            self.issuer,
            self.template,
            self.algorithm.name(),
            self.tenant_key_hex(),
            super::format_time(self.issued_at()),
        );
        match self.expires_at() {
            Some(t) => s.push_str(&format!("expires {}\n", super::format_time(t))),
            None => s.push_str("does not expire\n"),
        }
        if let Some(m) = &self.message_id {
            s.push_str(&format!("original Message-ID {m}\n"));
        }
        if let Some(u) = &self.licensing_url {
            s.push_str(&format!("licensing service {u}\n"));
        }
        s.push_str("rights:\n");
        for (p, r) in &self.rights {
            s.push_str(&format!("  {p}: {r}\n"));
        }
        s
    }
}

fn decode_rights(mut v: &[u8]) -> Result<BTreeMap<String, Rights>, RmsError> {
    let mut rights = BTreeMap::new();
    let mut previous: Option<String> = None;
    while !v.is_empty() {
        let (len, tail) = v
            .split_first_chunk::<2>()
            .ok_or_else(|| corrupted("rights truncated"))?;
        let len = u16::from_be_bytes(*len) as usize;
        if tail.len() < len + 1 {
            return Err(corrupted("rights truncated"));
        }
        let principal = std::str::from_utf8(&tail[..len])
            .map_err(|_| corrupted("principal is not UTF-8"))?
            .to_string();
        if normalize_principal(&principal).as_deref() != Some(principal.as_str()) {
            return Err(corrupted(format!("not a principal: {principal:?}")));
        }
        if previous.as_ref().is_some_and(|p| *p >= principal) {
            return Err(corrupted("principals not in increasing order"));
        }
        let r = Rights::from_bits(tail[len])
            .filter(|r| !r.is_empty())
            .ok_or_else(|| corrupted(format!("bad rights byte for {principal}")))?;
        previous = Some(principal.clone());
        rights.insert(principal, r);
        v = &tail[len + 1..];
    }
    if rights.is_empty() {
        return Err(corrupted("no rights"));
    }
    Ok(rights)
}

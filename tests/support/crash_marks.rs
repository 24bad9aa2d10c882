//! What the crash tests share: the seed of a kill schedule, and the marks that tell one sent
//! message (its token header) and one stored copy (the receiving queue id) apart.

/// The header that carries a message's token.
pub const TOKEN_HEADER: &str = "X-Crash-Token: ";

/// The kill schedule's seed: `SEALPOST_CRASH_SEED` when set (to repeat a run), else the clock.
pub fn seed() -> u64 {
    std::env::var("SEALPOST_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

/// The queue id in the first (newest, the receiver's) Received header.
pub fn receiving_id(message: &[u8]) -> String {
    let text = String::from_utf8_lossy(message);
    text.split_once("(sealpost) with ")
        .and_then(|(_, rest)| rest.split_once(" id "))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or("?")
        .to_string()
}

/// The token of a stored message.
pub fn token_of(message: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(message);
    let start = text.find(TOKEN_HEADER)? + TOKEN_HEADER.len();
    let rest = &text[start..];
    let end = rest.find("\r\n")?;
    Some(rest[..end].to_string())
}

//! Quantities as admins write them in configuration and rule files.

use std::time::Duration;

/// Parses "90s", "5m", "1h", "5d" (humantime syntax).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| format!("not a duration ({e}): {text:?}"))
}

//! `[limits]` and `server.shutdown_timeout`: session limits and timeouts, validated.

use std::time::Duration;

use super::file::{RawLimits, RawServer};
use super::validate::Checker;
use super::{ConfigError, Limits};

/// RFC 5321 §4.5.3.2.7: a server waits at least 5 minutes for the next command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
/// The longest pause allowed between chunks of message data (§4.5.3.2.5 gives 3 minutes per
/// DATA block).
const DATA_TIMEOUT: Duration = Duration::from_secs(180);
/// How long transactions in flight may take to finish after SIGTERM.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// The least default for the in-flight budget: about 14 messages of the default maximum size.
const IN_FLIGHT_SIZE: u64 = 512 << 20;

impl Checker<'_> {
    /// A duration that must be above zero.
    fn positive_duration(
        &self,
        key: &str,
        value: Option<&str>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let d = self.duration(key, value, default)?;
        if d.is_zero() {
            return Err(self.err(key, "must be above zero"));
        }
        Ok(d)
    }
}

pub(super) fn limits(c: &Checker, raw: &RawLimits) -> Result<Limits, ConfigError> {
    let (key, value) = match (&raw.command_timeout, &raw.idle_timeout) {
        (Some(_), Some(_)) => {
            return Err(c.err(
                "limits.idle_timeout",
                "is the old name of limits.command_timeout: give only command_timeout",
            ))
        }
        (None, Some(old)) => {
            tracing::warn!(
                "limits.idle_timeout is deprecated: it is now called limits.command_timeout"
            );
            ("limits.idle_timeout", Some(old.as_str()))
        }
        (new, None) => ("limits.command_timeout", new.as_deref()),
    };
    let max_message_size = raw.max_message_size.unwrap_or(35_882_577);
    // A message counts once as it arrives and twice more while a transport rule reads all of it
    // (its copy in memory, and what the rule makes of it).
    let least_in_flight = (max_message_size as u64).saturating_mul(3);
    let max_in_flight_size = match raw.max_in_flight_size {
        None => IN_FLIGHT_SIZE.max(least_in_flight),
        Some(n) if n < least_in_flight => {
            return Err(c.err(
                "limits.max_in_flight_size",
                format!(
                    "must be at least three times limits.max_message_size ({least_in_flight}): \
                     a message counts once as it arrives and twice more while transport rules \
                     read it"
                ),
            ))
        }
        Some(n) => n,
    };
    Ok(Limits {
        max_message_size,
        max_in_flight_size,
        max_recipients: raw.max_recipients.unwrap_or(1000),
        command_timeout: c.positive_duration(key, value, COMMAND_TIMEOUT)?,
        data_timeout: c.positive_duration(
            "limits.data_timeout",
            raw.data_timeout.as_deref(),
            DATA_TIMEOUT,
        )?,
        bare_newline: raw.bare_newline.unwrap_or_default(),
        max_connections: raw.max_connections.unwrap_or(1000).max(1),
        max_connections_per_ip: raw.max_connections_per_ip.unwrap_or(50).max(1),
    })
}

pub(super) fn shutdown_timeout(c: &Checker, raw: &RawServer) -> Result<Duration, ConfigError> {
    c.positive_duration(
        "server.shutdown_timeout",
        raw.shutdown_timeout.as_deref(),
        SHUTDOWN_TIMEOUT,
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    const BASE: &str = "[server]\nhostname = \"mx.example.test\"\ndata_dir = \"d\"\n";

    fn load(server: &str, limits: &str) -> Result<Config, ConfigError> {
        let text = format!("{BASE}{server}\n[limits]\n{limits}\n");
        Config::from_toml(Path::new("/etc/sealpost/test.toml"), &text, None)
    }

    #[test]
    fn defaults_follow_rfc_5321() {
        let c = load("", "").unwrap();
        assert_eq!(c.limits.command_timeout, Duration::from_secs(300));
        assert_eq!(c.limits.data_timeout, Duration::from_secs(180));
        assert_eq!(c.shutdown_timeout, Duration::from_secs(30));
    }

    #[test]
    fn the_in_flight_budget_is_at_least_three_times_the_largest_message() {
        let c = load("", "").unwrap();
        assert_eq!(c.limits.max_in_flight_size, 512 << 20);
        let big = load("", "max_message_size = 400000000").unwrap();
        assert_eq!(big.limits.max_in_flight_size, 1_200_000_000);
        let set = load(
            "",
            "max_in_flight_size = 150000000\nmax_message_size = 50000000",
        )
        .unwrap();
        assert_eq!(set.limits.max_in_flight_size, 150_000_000);
        let e = load(
            "",
            "max_in_flight_size = 149999999\nmax_message_size = 50000000",
        )
        .unwrap_err();
        assert_eq!(e.key, "limits.max_in_flight_size");
        assert!(
            e.problem.contains("three times limits.max_message_size"),
            "{e}"
        );
    }

    #[test]
    fn both_timeouts_and_the_grace_period_are_read() {
        let c = load(
            "shutdown_timeout = \"2m\"",
            "command_timeout = \"90s\"\ndata_timeout = \"10m\"",
        )
        .unwrap();
        assert_eq!(c.limits.command_timeout, Duration::from_secs(90));
        assert_eq!(c.limits.data_timeout, Duration::from_secs(600));
        assert_eq!(c.shutdown_timeout, Duration::from_secs(120));
    }

    #[test]
    fn idle_timeout_is_still_accepted_as_the_command_timeout() {
        let c = load("", "idle_timeout = \"42s\"").unwrap();
        assert_eq!(c.limits.command_timeout, Duration::from_secs(42));
        assert_eq!(
            c.limits.data_timeout, DATA_TIMEOUT,
            "unchanged by the old name"
        );
        let e = load("", "idle_timeout = \"42s\"\ncommand_timeout = \"1m\"").unwrap_err();
        assert_eq!(e.key, "limits.idle_timeout");
        assert!(e.problem.contains("command_timeout"), "{e}");
    }

    #[test]
    fn zero_or_malformed_values_are_refused_with_file_and_key() {
        let cases = [
            ("", "command_timeout = \"0s\"", "limits.command_timeout"),
            ("", "idle_timeout = \"0s\"", "limits.idle_timeout"),
            ("", "data_timeout = \"0s\"", "limits.data_timeout"),
            ("", "data_timeout = \"soon\"", "limits.data_timeout"),
            ("shutdown_timeout = \"0s\"", "", "server.shutdown_timeout"),
        ];
        for (server, limits, key) in cases {
            let e = load(server, limits).unwrap_err();
            assert_eq!(e.key, key, "{server} {limits}: {e}");
            assert!(
                e.to_string()
                    .starts_with(&format!("/etc/sealpost/test.toml: {key}: ")),
                "{e}"
            );
        }
        let e = load("", "command_timeout = \"0s\"").unwrap_err();
        assert_eq!(e.problem, "must be above zero");
    }
}

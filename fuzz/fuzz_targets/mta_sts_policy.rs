//! Fuzz target: the MTA-STS policy file and TXT record parsers (RFC 8461 §3.1, §3.2).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealpost::tls::mta_sts::policy::{parse_policy, parse_txt, Mode, MAX_AGE_LIMIT};

fuzz_target!(|data: &[u8]| {
    if let Ok(policy) = parse_policy(data) {
        assert!(policy.max_age <= MAX_AGE_LIMIT);
        assert!(policy.mode == Mode::None || !policy.mx.is_empty());
        // Every pattern matches a host made from it (a label in place of the wildcard).
        for pattern in &policy.mx {
            let text = pattern.to_string();
            let host = match text.strip_prefix("*.") {
                Some(rest) => format!("mx.{rest}"),
                None => text.clone(),
            };
            assert!(pattern.matches(&host), "{text} does not match {host}");
        }
    }
    // The same bytes as TXT records, split at newlines.
    let text = String::from_utf8_lossy(data);
    let records: Vec<&str> = text.split('\n').collect();
    if let Ok(record) = parse_txt(&records) {
        assert!(!record.id.is_empty() && record.id.len() <= 32);
        assert!(record.id.bytes().all(|b| b.is_ascii_alphanumeric()));
    }
});

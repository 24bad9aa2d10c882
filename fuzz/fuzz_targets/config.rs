//! Fuzz target: the configuration loader (TOML parsing and validation) on arbitrary text.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sealpost::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/nonexistent/sealpost-fuzz/sealpost.toml");
    match Config::from_toml(path, text, None) {
        Ok(config) => {
            for domain in &config.local_domains {
                assert_eq!(*domain, domain.to_ascii_lowercase());
            }
            for mailbox in &config.mailboxes {
                assert!(config.is_local_mailbox(mailbox));
                let domain = mailbox.rsplit_once('@').map_or("", |(_, d)| d);
                assert!(config.is_local_domain(domain), "{mailbox}");
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});

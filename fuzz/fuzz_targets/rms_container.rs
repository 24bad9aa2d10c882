//! Fuzz target: the protected-message container and publishing-license parser, and the
//! verify-then-decrypt reader with the fixture tenant key.
#![no_main]

use std::sync::OnceLock;
use std::time::SystemTime;

use libfuzzer_sys::fuzz_target;
use sealpost::crypto::rms::{extract_container, parse_container, unprotect, License, TenantKeys};

fn keys() -> Option<&'static TenantKeys> {
    static KEYS: OnceLock<Option<TenantKeys>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/keys/tenant");
        TenantKeys::load_dir(std::path::Path::new(dir)).ok()
    })
    .as_ref()
}

fuzz_target!(|data: &[u8]| {
    // The license decoder alone: canonical, so what decodes encodes to the same bytes.
    if let Ok(license) = License::decode(data) {
        assert_eq!(license.encode(), data);
        let _ = license.summary();
        let _ = license.rights_of("bob@fabrikam.test");
    }
    // The container framing: the parts it returns lie inside the input.
    if let Ok(framed) = parse_container(data) {
        assert!(framed.license.len() + framed.signature.len() + framed.ciphertext.len() < data.len());
        if let Ok(license) = License::decode(framed.license) {
            assert_eq!(license.encode(), framed.license);
        }
    }
    let _ = extract_container(data);
    if let Some(keys) = keys() {
        // Only a genuinely signed container opens (the seed does); its license is the one
        // framed in the input.
        if let Ok((license, _plain)) = unprotect(data, keys, SystemTime::now(), true) {
            if let Ok(framed) = parse_container(data) {
                assert_eq!(license.encode(), framed.license);
            }
        }
    }
});

//! Fuzz target: what a licensing client or service reads from the other side: a use license
//! (`UseLicense::decode`) and a use-license request body (`parse_request`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealpost::crypto::rms::UseLicense;
use sealpost::licensing::service::parse_request;

fuzz_target!(|data: &[u8]| {
    // A use license that decodes is canonical: encoding it gives back exactly the input.
    if let Ok(license) = UseLicense::decode(data) {
        assert_eq!(license.encode(), data);
        assert!(license.valid_until_at() > std::time::UNIX_EPOCH);
    }
    // A request body either yields the two decoded parts or a reason; never a panic.
    match parse_request(data) {
        Ok(request) => {
            let key = request.reader_key.as_ref().map_or(0, String::len);
            assert!(request.license.len() + request.signature.len() + key <= data.len());
        }
        Err(reason) => assert!(!reason.is_empty()),
    }
});

//! Fuzz target: TLSA records (RFC 6698 presentation format) and the DANE check of a presented
//! chain against them (RFC 7672 §3): any bytes as a record's text, and as a record's fields with
//! the rest of the input as a "certificate chain".
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustls_pki_types::{CertificateDer, UnixTime};
use sealpost::tls::dane::{verify, Tlsa};

fuzz_target!(|data: &[u8]| {
    // A record that parses writes itself back in the canonical form, which parses the same.
    if let Ok(record) = Tlsa::parse(&String::from_utf8_lossy(data)) {
        let again = Tlsa::parse(&record.to_string()).expect("canonical form parses");
        assert_eq!(again, record);
    }
    // Three bytes of fields, 32 of data, the rest split into "certificates" at 0xff bytes:
    // verification answers or refuses, never panics, and an unusable set never fails a chain
    // for a reason other than the chain itself.
    if data.len() < 35 {
        return;
    }
    let record = Tlsa {
        usage: data[0],
        selector: data[1],
        matching: data[2],
        data: data[3..35].to_vec(),
    };
    let chain: Vec<CertificateDer<'_>> = data[35..]
        .split(|b| *b == 0xff)
        .filter(|c| !c.is_empty())
        .map(|c| CertificateDer::from(c.to_vec()))
        .collect();
    let names = ["mx.example.test".to_string()];
    let _ = verify(&[record], &names, &chain, UnixTime::now());
});

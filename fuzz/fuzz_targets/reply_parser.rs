//! Fuzz target: the outbound client's reply parser and EHLO capability reader.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealpost::smtp::client::wire::{parse_reply, Capabilities};

fuzz_target!(|data: &[u8]| {
    let Ok(Some((reply, used))) = parse_reply(data) else {
        return;
    };
    assert!(used > 0 && used <= data.len());
    assert!((200..600).contains(&reply.code));
    // The reply needs nothing after `used`, and what it used is one whole reply.
    let again = parse_reply(&data[..used]);
    assert!(
        matches!(&again, Ok(Some((r, n))) if *r == reply && *n == used),
        "{again:?}"
    );
    let _ = Capabilities::from_ehlo(&reply);
    // What we would write for it parses back to the same code and enhanced code.
    let written = reply.to_bytes();
    match parse_reply(&written) {
        Ok(Some((back, n))) => {
            assert_eq!(
                (back.code, back.enhanced, n),
                (reply.code, reply.enhanced, written.len())
            );
        }
        other => panic!("{reply:?} wrote {written:?}, read back {other:?}"),
    }
});

//! Fuzz target: the DATA receiver in both bare-newline modes, and the outbound dot-stuffer
//! against it (whatever the message, the stuffed form ends exactly at its end).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealpost::smtp::client::wire::dot_stuff;
use sealpost::smtp::proto::{BareNewline, DataError, DataReceiver, MAX_TEXT_LINE};

type Outcome = Option<(Result<Vec<u8>, DataError>, usize)>;

fuzz_target!(|data: &[u8]| {
    let Some((&control, body)) = data.split_first() else {
        return;
    };
    let mode = if control & 1 == 0 {
        BareNewline::Reject
    } else {
        BareNewline::Normalize
    };
    let max = if control & 2 == 0 {
        usize::MAX
    } else {
        usize::from(control) * 4
    };
    let split = usize::from(control >> 2) % (body.len() + 1);
    let whole = receive(body, max, mode, body.len());
    assert_eq!(
        whole,
        receive(body, max, mode, split),
        "chunking changed the outcome"
    );
    if let Some((Ok(message), left)) = &whole {
        let used = &body[..body.len() - left];
        assert!(used.ends_with(b"\r\n.\r\n") || used == b".\r\n");
        assert!(message.len() <= max);
        assert_clean(message);
    }
    if let (BareNewline::Normalize, Some((Err(DataError::BareCr | DataError::BareLf), _))) =
        (mode, &whole)
    {
        panic!("normalize mode refused a bare newline");
    }

    let wire = dot_stuff(body);
    let mut rx = DataReceiver::new(usize::MAX);
    assert_eq!(
        rx.ingest(&wire),
        Some(wire.len()),
        "stuffed data ended early"
    );
    let expected = normalized(body);
    match rx.finish() {
        Ok(message) => assert_eq!(message, expected),
        Err(DataError::LineTooLong) => {
            assert!(expected
                .split(|&b| b == b'\n')
                .any(|l| l.len() + 1 > MAX_TEXT_LINE));
        }
        Err(e) => panic!("stuffed data refused: {e:?}"),
    }
});

fn receive(input: &[u8], max: usize, mode: BareNewline, split: usize) -> Outcome {
    let (a, b) = input.split_at(split);
    let mut rx = DataReceiver::with_bare_newline(max, mode);
    let left = match rx.ingest(a) {
        Some(used) => Some(a.len() - used + b.len()),
        None => rx.ingest(b).map(|used| b.len() - used),
    };
    left.map(|left| (rx.finish(), left))
}

/// Every CR is followed by LF, every LF preceded by CR, and lines fit in 1000 octets.
fn assert_clean(message: &[u8]) {
    for (i, &b) in message.iter().enumerate() {
        match b {
            b'\r' => assert_eq!(message.get(i + 1), Some(&b'\n'), "bare CR kept"),
            b'\n' => assert!(i > 0 && message[i - 1] == b'\r', "bare LF kept"),
            _ => {}
        }
    }
    for line in message.split(|&b| b == b'\n') {
        assert!(line.len() + 1 <= MAX_TEXT_LINE, "line too long kept");
    }
}

/// Bare CR and LF as CRLF, with a CRLF after a last unterminated line.
fn normalized(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&b) = data.get(i) {
        match b {
            b'\r' if data.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            _ => out.push(b),
        }
        i += 1;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

//! Queue file format tests: round trips, every truncation and flipped bit, specific defects.

use super::*;

const MESSAGE: &[u8] = b"Subject: hi\r\n\r\nbody line\r\n";

fn envelope() -> Envelope {
    Envelope::new(
        "0000000000000A000001",
        "bob@fabrikam.test",
        vec!["alice@contoso.test".into()],
        "mx.fabrikam.test",
        "127.0.0.1:40000",
        1_700_000_000,
    )
}

fn file() -> Vec<u8> {
    encode(&envelope(), MESSAGE, None).unwrap()
}

/// The index of the first byte of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> usize {
    find_opt(hay, needle).unwrap()
}

fn find_opt(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn round_trip_and_layout() {
    let bytes = file();
    assert!(bytes.starts_with(MAGIC_V1));
    let json = serde_json::to_vec(&envelope()).unwrap();
    let header = format!("E {}\n", json.len());
    assert_eq!(
        &bytes[MAGIC_V1.len()..MAGIC_V1.len() + header.len()],
        header.as_bytes()
    );
    let tail = &bytes[bytes.len() - END_LINE_LEN as usize..];
    assert!(tail.starts_with(b"END ") && tail.ends_with(b"\n"));
    let expected = hex::encode(Sha256::digest(
        &bytes[..bytes.len() - END_LINE_LEN as usize],
    ));
    assert_eq!(&tail[4..68], expected.as_bytes());
    let (env, msg) = decode(bytes, None).unwrap();
    assert_eq!(env, envelope());
    assert_eq!(msg, MESSAGE);
}

#[test]
fn empty_message_and_binary_message_round_trip() {
    for message in [&b""[..], &[0u8, 10, 255, 13, 10, b'E', b'N', b'D'][..]] {
        let (_, msg) = decode(encode(&envelope(), message, None).unwrap(), None).unwrap();
        assert_eq!(msg, message);
    }
}

#[test]
fn header_reads_envelope_and_size_without_message() {
    let bytes = file();
    let header = read_header(bytes.as_slice(), bytes.len() as u64).unwrap();
    assert_eq!(header.envelope, envelope());
    assert_eq!(header.message_len, MESSAGE.len() as u64);
    let short = read_header(bytes.as_slice(), bytes.len() as u64 - 1);
    assert!(matches!(
        short,
        Err(HeaderError::Format(FormatError::Truncated { .. }))
    ));
}

#[test]
fn every_truncation_is_rejected() {
    let bytes = file();
    for cut in 0..bytes.len() {
        let result = decode(bytes[..cut].to_vec(), None);
        assert!(result.is_err(), "accepted a file cut at {cut}");
    }
    let cut = bytes.len() - END_LINE_LEN as usize;
    assert_eq!(
        decode(bytes[..cut].to_vec(), None).unwrap_err(),
        FormatError::MissingEndMarker
    );
}

#[test]
fn every_flipped_bit_is_rejected() {
    let bytes = file();
    for i in 0..bytes.len() {
        for bit in [0x01u8, 0x80] {
            let mut bad = bytes.clone();
            bad[i] ^= bit;
            assert!(
                decode(bad, None).is_err(),
                "accepted a flip of bit {bit:#x} at {i}"
            );
        }
    }
}

#[test]
fn specific_defects_have_specific_reasons() {
    let bytes = file();
    let mut magic = bytes.clone();
    magic[0] = b'X';
    assert_eq!(decode(magic, None).unwrap_err(), FormatError::BadMagic);

    let mut body = bytes.clone();
    let at = find(&body, b"body line");
    body[at] = b'B';
    assert_eq!(
        decode(body, None).unwrap_err(),
        FormatError::ChecksumMismatch
    );

    let mut trailing = bytes.clone();
    trailing.push(b'x');
    assert!(matches!(
        decode(trailing, None).unwrap_err(),
        FormatError::TrailingData { .. }
    ));

    let mut marker = bytes.clone();
    let at = marker.len() - END_LINE_LEN as usize;
    marker[at] = b'F';
    assert_eq!(
        decode(marker, None).unwrap_err(),
        FormatError::MissingEndMarker
    );

    let mut leading_zero = bytes.clone();
    leading_zero.splice(MAGIC_V1.len() + 2..MAGIC_V1.len() + 2, *b"0");
    assert_eq!(
        decode(leading_zero, None).unwrap_err(),
        FormatError::BadLength { field: "envelope" }
    );
}

#[test]
fn huge_declared_lengths_are_refused_without_allocating() {
    let mut bytes = MAGIC_V1.to_vec();
    bytes.extend_from_slice(b"E 18446744073709551615\n{}");
    assert!(matches!(
        decode(bytes, None).unwrap_err(),
        FormatError::EnvelopeTooLarge { .. }
    ));
    let mut bytes = MAGIC_V1.to_vec();
    bytes.extend_from_slice(b"E 99999999999999999999\n");
    assert_eq!(
        decode(bytes, None).unwrap_err(),
        FormatError::BadLength { field: "envelope" }
    );
}

#[test]
fn other_envelope_versions_are_refused_even_with_a_good_checksum() {
    let mut env = envelope();
    env.version = 2;
    let bytes = encode(&env, MESSAGE, None).unwrap();
    assert_eq!(
        decode(bytes, None).unwrap_err(),
        FormatError::UnsupportedVersion(2)
    );
}

// ---- version 2: encrypted ----

fn service() -> ServiceKey {
    let keystore = tempfile::tempdir().unwrap();
    ServiceKey::load_or_create(keystore.path()).unwrap()
}

/// Replace the END line with the right checksum for the (edited) bytes before it: what an
/// attacker with write access to the disk can do.
fn reseal_checksum(bytes: &mut Vec<u8>) {
    let cut = bytes.len() - END_LINE_LEN as usize;
    bytes.truncate(cut);
    let digest = hex::encode(Sha256::digest(&bytes[..]));
    bytes.extend_from_slice(format!("END {digest}\n").as_bytes());
}

#[test]
fn encrypted_round_trip_keeps_envelope_in_clear_and_message_sealed() {
    let key = service();
    let message = b"Subject: UNIQUE-MARKER-7f3a\r\n\r\nsecret body\r\n";
    let bytes = encode(&envelope(), message, Some(&key)).unwrap();
    assert!(bytes.starts_with(MAGIC));
    assert!(find_opt(&bytes, b"UNIQUE-MARKER").is_none());
    assert!(find_opt(&bytes, b"secret body").is_none());
    // The envelope stays readable; the K line names the service key.
    assert!(find_opt(&bytes, b"bob@fabrikam.test").is_some());
    assert!(find_opt(&bytes, format!("\nK {} ", key.id()).as_bytes()).is_some());
    let header = read_header(bytes.as_slice(), bytes.len() as u64).unwrap();
    assert_eq!(header.version, 2);
    assert_eq!(header.message_len, message.len() as u64);
    assert_eq!(header.envelope, envelope());
    let (env, msg) = decode(bytes.clone(), Some(&key)).unwrap();
    assert_eq!((env, msg.as_slice()), (envelope(), &message[..]));
    // A fresh content key per file: the same message encrypts differently each time.
    assert_ne!(bytes, encode(&envelope(), message, Some(&key)).unwrap());
}

#[test]
fn encrypted_sizes_round_trip_across_chunk_boundaries() {
    let key = service();
    for len in [0, 1, sealing::CHUNK_SIZE, sealing::CHUNK_SIZE + 1, 200_000] {
        let message: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        let bytes = encode(&envelope(), &message, Some(&key)).unwrap();
        let header = read_header(bytes.as_slice(), bytes.len() as u64).unwrap();
        assert_eq!(header.message_len, len as u64, "{len}");
        assert_eq!(decode(bytes, Some(&key)).unwrap().1, message, "{len}");
    }
}

#[test]
fn every_truncation_and_flipped_bit_of_an_encrypted_file_is_rejected() {
    let key = service();
    let bytes = encode(&envelope(), MESSAGE, Some(&key)).unwrap();
    for cut in 0..bytes.len() {
        assert!(
            decode(bytes[..cut].to_vec(), Some(&key)).is_err(),
            "cut {cut}"
        );
    }
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 0x04;
        assert!(decode(bad, Some(&key)).is_err(), "flip at {i}");
    }
}

#[test]
fn tampering_with_a_valid_checksum_fails_authentication() {
    let key = service();
    let bytes = encode(&envelope(), MESSAGE, Some(&key)).unwrap();
    let sealed_at = find(&bytes, b"\nM ") + 1;
    let sealed_at = sealed_at + find(&bytes[sealed_at..], b"\n") + 1;

    // One byte of ciphertext.
    let mut body = bytes.clone();
    body[sealed_at + 3] ^= 0x01;
    reseal_checksum(&mut body);
    assert_eq!(
        decode(body, Some(&key)).unwrap_err(),
        FormatError::Decrypt(CryptoError::Chunk(0))
    );

    // A recipient edited in the clear envelope (same length).
    let mut redirected = bytes.clone();
    let at = find(&redirected, b"alice@contoso");
    redirected[at..at + 5].copy_from_slice(b"mallo");
    reseal_checksum(&mut redirected);
    assert!(matches!(
        decode(redirected, Some(&key)).unwrap_err(),
        FormatError::Decrypt(_)
    ));

    // The wrapped content key.
    let mut wrap = bytes.clone();
    let at = find(&wrap, b"\nK ") + 3 + KEY_ID_HEX + 1;
    wrap[at] = if wrap[at] == b'0' { b'1' } else { b'0' };
    reseal_checksum(&mut wrap);
    assert_eq!(
        decode(wrap, Some(&key)).unwrap_err(),
        FormatError::KeyUnwrap
    );

    // Upper-case hex in the key line is not the canonical form.
    let mut upper = bytes.clone();
    let at = find(&upper, b"\nK ") + 3;
    upper[at..at + KEY_ID_HEX].make_ascii_uppercase();
    upper[at] = b'A';
    reseal_checksum(&mut upper);
    assert_eq!(
        decode(upper, Some(&key)).unwrap_err(),
        FormatError::BadKeyLine
    );
}

#[test]
fn encrypted_file_needs_the_service_key_that_sealed_it() {
    let key = service();
    let bytes = encode(&envelope(), MESSAGE, Some(&key)).unwrap();
    assert_eq!(
        decode(bytes.clone(), None).unwrap_err(),
        FormatError::NoServiceKey
    );
    let other = service();
    assert_eq!(
        decode(bytes, Some(&other)).unwrap_err(),
        FormatError::WrongServiceKey {
            expected: other.id(),
            found: key.id()
        }
    );
}

#[test]
fn a_version_1_file_is_read_with_or_without_a_key() {
    let key = service();
    let plain = encode(&envelope(), MESSAGE, None).unwrap();
    let header = read_header(plain.as_slice(), plain.len() as u64).unwrap();
    assert_eq!(header.version, 1);
    assert_eq!(decode(plain, Some(&key)).unwrap().1, MESSAGE);
}

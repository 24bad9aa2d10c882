//! Round trips through encrypt_message and decrypt_message with the fixture keys, the error
//! kinds, certificate choice, and mangled input that must fail cleanly.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;

fn smime_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pki/smime")
}

fn cert(address: &str) -> RecipientCert {
    RecipientCert::from_pem_file(&smime_dir().join(format!("{address}.crt"))).unwrap()
}

fn key(address: &str, with_cert: bool) -> DecryptKey {
    let dir = smime_dir();
    let crt = dir.join(format!("{address}.crt"));
    DecryptKey::from_pem(
        &dir.join(format!("{address}.key")),
        with_cert.then_some(crt.as_path()),
    )
    .unwrap()
}

/// 2030-06-01, inside the fixtures' validity.
fn in_2030() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_906_502_400)
}

const MESSAGE: &[u8] =
    b"Received: from mx.contoso.test\r\n\tby mx.fabrikam.test; Sun, 22 Nov 2026 11:41:37 +0000\r\n\
From: Alice <alice@contoso.test>\r\nTo: bob@fabrikam.test\r\nSubject: [secure] numbers\r\n\
Date: Sun, 22 Nov 2026 11:41:37 +0000\r\nMessage-ID: <1@contoso.test>\r\nMIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
Caf\xc3\xa9 numbers: 42\r\n.\r\nend\r\n";

const OPTIONS: [SmimeOptions; 4] = [
    SmimeOptions {
        algorithm: ContentAlgorithm::Aes256Cbc,
        key_transport: KeyTransport::RsaOaep,
    },
    SmimeOptions {
        algorithm: ContentAlgorithm::Aes256Cbc,
        key_transport: KeyTransport::RsaPkcs1,
    },
    SmimeOptions {
        algorithm: ContentAlgorithm::Aes256Gcm,
        key_transport: KeyTransport::RsaOaep,
    },
    SmimeOptions {
        algorithm: ContentAlgorithm::Aes256Gcm,
        key_transport: KeyTransport::RsaPkcs1,
    },
];

fn encrypt(opts: &SmimeOptions) -> Vec<u8> {
    let recipients = [cert("bob@fabrikam.test"), cert("dave@fabrikam.test")];
    encrypt_message(MESSAGE, &recipients, opts).unwrap()
}

/// The base64 payload of an encrypted message, decoded.
fn payload(message: &[u8]) -> Vec<u8> {
    let (_, der) = mime::extract_cms(message).unwrap();
    der
}

/// Rebuilds a message around a changed CMS payload.
fn with_payload(message: &[u8], der: &[u8]) -> Vec<u8> {
    let text = String::from_utf8(message.to_vec()).unwrap();
    let head = text.split("\r\n\r\n").next().unwrap();
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, der);
    format!("{head}\r\n\r\n{b64}\r\n").into_bytes()
}

#[test]
fn every_option_round_trips_for_every_recipient() {
    for opts in &OPTIONS {
        let sealed = encrypt(opts);
        assert!(is_encrypted(&sealed));
        for who in ["bob@fabrikam.test", "dave@fabrikam.test"] {
            for with_cert in [true, false] {
                let opened = decrypt_message(&sealed, &key(who, with_cert))
                    .unwrap_or_else(|e| panic!("{opts:?} {who} cert={with_cert}: {e}"));
                // The Content-* fields were last, so the round trip is byte-exact.
                assert_eq!(opened, MESSAGE, "{opts:?} {who}");
            }
        }
    }
}

#[test]
fn routing_fields_stay_outside_and_content_goes_inside() {
    let sealed = encrypt(&SmimeOptions::default());
    let text = String::from_utf8(sealed.clone()).unwrap();
    let head = text.split("\r\n\r\n").next().unwrap();
    for kept in [
        "Received: from mx.contoso.test\r\n\tby mx.fabrikam.test;",
        "\r\nFrom: Alice <alice@contoso.test>\r\n",
        "\r\nSubject: [secure] numbers\r\n",
        "\r\nMessage-ID: <1@contoso.test>\r\n",
        "\r\nMIME-Version: 1.0\r\n",
        "Content-Type: application/pkcs7-mime; smime-type=enveloped-data;\r\n\tname=smime.p7m\r\n",
        "Content-Disposition: attachment; filename=smime.p7m\r\n",
        "Content-Transfer-Encoding: base64",
    ] {
        assert!(head.contains(kept), "missing {kept:?} in {head}");
    }
    assert!(!text.contains("text/plain"));
    assert!(!text.contains("8bit"));
    let gcm = String::from_utf8(encrypt(&OPTIONS[2])).unwrap();
    assert!(gcm.contains("smime-type=authEnveloped-data;"));
}

#[test]
fn already_encrypted_and_empty_recipients_are_refused() {
    let sealed = encrypt(&SmimeOptions::default());
    let again = encrypt_message(
        &sealed,
        &[cert("bob@fabrikam.test")],
        &SmimeOptions::default(),
    );
    assert!(matches!(again, Err(SmimeError::AlreadyEncrypted)));
    let pgp = b"Subject: x\r\n\r\n-----BEGIN PGP MESSAGE-----\r\nhQEMA\r\n";
    assert!(matches!(
        encrypt_message(pgp, &[cert("bob@fabrikam.test")], &SmimeOptions::default()),
        Err(SmimeError::AlreadyEncrypted)
    ));
    assert!(matches!(
        encrypt_message::<RecipientCert>(MESSAGE, &[], &SmimeOptions::default()),
        Err(SmimeError::NoRecipients)
    ));
}

/// What opens as S/MIME is also seen as encrypted, so rules never encrypt it a second time;
/// here for the `application/octet-stream` + `.p7m` labelling of RFC 8551 §3.2.2 (the fuzz
/// target's property).
#[test]
fn an_octet_stream_p7m_that_opens_is_seen_as_encrypted() {
    let sealed = String::from_utf8(encrypt(&SmimeOptions::default())).unwrap();
    let labelled = sealed.replace(
        "application/pkcs7-mime; smime-type=enveloped-data;",
        "application/octet-stream;",
    );
    assert_ne!(labelled, sealed);
    let labelled = labelled.into_bytes();
    let opened = decrypt_message(&labelled, &key("bob@fabrikam.test", true)).unwrap();
    assert_eq!(opened, MESSAGE);
    assert!(is_encrypted(&labelled));
    let again = encrypt_message(
        &labelled,
        &[cert("bob@fabrikam.test")],
        &SmimeOptions::default(),
    );
    assert!(matches!(again, Err(SmimeError::AlreadyEncrypted)));
    // An octet-stream .p7m that is not enveloped data is an ordinary attachment.
    let other = b"Content-Type: application/octet-stream; name=x.p7m\r\n\r\nMA==\r\n";
    assert!(!is_encrypted(other));
}

#[test]
fn the_wrong_key_and_other_recipients_are_told_apart() {
    let sealed = encrypt(&SmimeOptions::default());
    match decrypt_message(&sealed, &key("alice@contoso.test", true)) {
        Err(DecryptError::NotForYou { recipients }) => {
            assert_eq!(recipients.len(), 2);
            assert!(
                recipients[0].contains("CN=sealpost test CA"),
                "{recipients:?}"
            );
            assert!(recipients[0].contains("serial"), "{recipients:?}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        decrypt_message(&sealed, &key("alice@contoso.test", false)),
        Err(DecryptError::WrongKey)
    ));
    assert!(matches!(
        decrypt_message(MESSAGE, &key("bob@fabrikam.test", false)),
        Err(DecryptError::NotEncrypted)
    ));
}

#[test]
fn altered_content_is_never_returned() {
    for opts in &OPTIONS {
        let sealed = encrypt(opts);
        let der = payload(&sealed);
        // Flip a byte in the last ciphertext block (GCM: anywhere would do; CBC: its padding).
        let ct_end = match opts.algorithm {
            ContentAlgorithm::Aes256Cbc => der.len() - 1,
            // AuthEnvelopedData ends with the 16-byte MAC (plus its 2-byte header).
            ContentAlgorithm::Aes256Gcm => der.len() - 19,
        };
        let mut flipped = der.clone();
        flipped[ct_end - 16] ^= 0x80;
        let msg = with_payload(&sealed, &flipped);
        assert!(
            matches!(
                decrypt_message(&msg, &key("bob@fabrikam.test", true)),
                Err(DecryptError::Tampered)
            ),
            "{opts:?}"
        );
        assert!(
            matches!(
                decrypt_message(&msg, &key("bob@fabrikam.test", false)),
                Err(DecryptError::WrongKey)
            ),
            "{opts:?}"
        );
    }
}

#[test]
fn a_damaged_content_key_looks_like_damaged_content() {
    // RFC 3218: a bad RSA block must give the same answer as bad content.
    let sealed = encrypt(&OPTIONS[1]);
    let der = payload(&sealed);
    let bob = cert("bob@fabrikam.test");
    let serial = bob.issuer_serial().serial_number.as_bytes().to_vec();
    let at = der
        .windows(serial.len())
        .position(|w| w == serial.as_slice())
        .unwrap();
    // The encrypted key follows the rid and the algorithm identifier; change a byte inside it.
    let mut damaged = der.clone();
    damaged[at + serial.len() + 40] ^= 0x01;
    let msg = with_payload(&sealed, &damaged);
    assert!(matches!(
        decrypt_message(&msg, &key("bob@fabrikam.test", true)),
        Err(DecryptError::Tampered)
    ));
}

#[test]
fn truncated_and_garbled_input_is_corrupted() {
    let sealed = encrypt(&SmimeOptions::default());
    let der = payload(&sealed);
    let bob = key("bob@fabrikam.test", true);
    for cut in [1, 10, 100, der.len() / 2, der.len() - 1] {
        let msg = with_payload(&sealed, &der[..cut]);
        assert!(
            matches!(decrypt_message(&msg, &bob), Err(DecryptError::Corrupted(_))),
            "cut at {cut}"
        );
    }
    let half = &sealed[..sealed.len() / 2 + 1];
    assert!(matches!(
        decrypt_message(half, &bob),
        Err(DecryptError::Corrupted(_))
    ));
}

#[test]
fn mangled_input_never_panics_nor_decrypts() {
    // A cheap deterministic fuzz: byte changes all over the structure of a GCM message. A
    // change in the other recipient's info is harmless; any other must fail.
    let sealed = encrypt(&OPTIONS[2]);
    let der = payload(&sealed);
    let bob = key("bob@fabrikam.test", true);
    let inner = open::open(&der, &bob).unwrap();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut refused = 0;
    for _ in 0..400 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let mut m = der.clone();
        let i = (state as usize) % m.len();
        m[i] ^= (state >> 32) as u8 | 1;
        let r =
            mime::extract_cms(&with_payload(&sealed, &m)).and_then(|(_, d)| open::open(&d, &bob));
        match r {
            Ok(plain) => assert_eq!(plain, inner, "changed byte {i} decrypted to something else"),
            Err(_) => refused += 1,
        }
    }
    // Only the other recipient's info (about a third of the bytes) may change harmlessly.
    assert!(refused > 200, "only {refused} of 400 changes were refused");
}

#[test]
fn bare_p7m_files_open_to_the_inner_entity() {
    let sealed = encrypt(&SmimeOptions::default());
    let der = payload(&sealed);
    let inner = decrypt_message(&der, &key("dave@fabrikam.test", false)).unwrap();
    assert!(inner.starts_with(b"Content-Type: text/plain; charset=utf-8\r\n"));
    assert!(!inner.windows(8).any(|w| w == b"Subject:"));
}

#[test]
fn certificates_are_found_by_name_or_email() {
    let dir = smime_dir();
    let found = find_certificate(&dir, "bob@fabrikam.test", in_2030()).unwrap();
    assert_eq!(found.unwrap().emails(), ["bob@fabrikam.test".to_string()]);
    let found = find_certificate(&dir, "Dave@Fabrikam.TEST", in_2030()).unwrap();
    assert!(found.unwrap().has_email("dave@fabrikam.test"));
    assert!(find_certificate(&dir, "eve@fabrikam.test", in_2030())
        .unwrap()
        .is_none());
    // Before 2026 the fixtures are not yet valid, after 2036 expired.
    let early = find_certificate_explained(&dir, "bob@fabrikam.test", UNIX_EPOCH).unwrap();
    assert!(early.found.is_none());
    assert!(early.skipped[0].1.contains("not valid before 2026-01-01"));
    let late = UNIX_EPOCH + Duration::from_secs(2_145_916_800); // 2038
    let late = find_certificate_explained(&dir, "bob@fabrikam.test", late).unwrap();
    assert!(late.skipped[0].1.contains("expired on 2036-01-01"));
}

#[test]
fn exit_codes_are_distinct() {
    let all = [
        DecryptError::NotEncrypted,
        DecryptError::NotForYou { recipients: vec![] },
        DecryptError::WrongKey,
        DecryptError::Tampered,
        DecryptError::Corrupted(String::new()),
        DecryptError::Unsupported(String::new()),
        DecryptError::Key(String::new()),
    ];
    let mut codes: Vec<u8> = all.iter().map(DecryptError::exit_code).collect();
    assert!(codes.iter().all(|&c| c > 2));
    codes.sort();
    codes.dedup();
    assert_eq!(codes.len(), all.len());
}

//! S/MIME interop with the real `openssl cms`, both ways: what we encrypt opens in OpenSSL
//! (OAEP and PKCS#1 v1.5, CBC and GCM), and what OpenSSL encrypts (PKCS#1, OAEP SHA-1 and
//! SHA-256, AES-CBC and AES-GCM, DER and indefinite-length `-stream` BER) opens in sealpost,
//! byte-exact. Also certificate selection against certificates OpenSSL and rcgen make.

use crate::support::smime_files;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sealpost::crypto::smime::{
    decrypt_message, encrypt_message, find_certificate, find_certificate_explained,
    ContentAlgorithm, DecryptKey, KeyTransport, RecipientCert, SmimeOptions,
};
use sealpost::crypto::smime_pki::{load_ca, smime_params};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pki")
}

fn smime(file: &str) -> String {
    fixtures().join("smime").join(file).display().to_string()
}

fn cert(address: &str) -> RecipientCert {
    RecipientCert::from_pem_file(Path::new(&smime(&format!("{address}.crt")))).unwrap()
}

fn key(address: &str) -> DecryptKey {
    let k = smime(&format!("{address}.key"));
    DecryptKey::from_pem(Path::new(&k), None).unwrap()
}

/// Runs openssl with `args`, feeding `stdin`; returns stdout, panicking with stderr on failure.
fn openssl(args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let (ok, stdout, stderr) = smime_files::openssl(args, stdin);
    assert!(ok, "openssl {args:?} failed: {stderr}");
    stdout
}

const INNER: &[u8] = b"Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: 8bit\r\n\r\nGr\xc3\xbc\xc3\x9fe aus Contoso.\r\n\r\n-- \r\nAlice\r\n";

fn message() -> Vec<u8> {
    let mut m =
        b"Received: from mx.contoso.test by mx.fabrikam.test; Sun, 22 Nov 2026 11:41:37 +0000\r\n\
From: alice@contoso.test\r\nTo: bob@fabrikam.test, dave@fabrikam.test\r\nCc: carol@contoso.test\r\n\
Subject: [secure] quarterly numbers\r\nDate: Sun, 22 Nov 2026 11:41:37 +0000\r\n\
Message-ID: <q3@contoso.test>\r\nMIME-Version: 1.0\r\n"
            .to_vec();
    m.extend_from_slice(INNER);
    m
}

#[test]
fn openssl_opens_what_we_encrypt() {
    let dir = tempfile::tempdir().unwrap();
    let recipients = [cert("bob@fabrikam.test"), cert("dave@fabrikam.test")];
    for algorithm in [ContentAlgorithm::Aes256Cbc, ContentAlgorithm::Aes256Gcm] {
        for key_transport in [KeyTransport::RsaOaep, KeyTransport::RsaPkcs1] {
            let opts = SmimeOptions {
                algorithm,
                key_transport,
            };
            let sealed = encrypt_message(&message(), &recipients, &opts).unwrap();
            let path = dir.path().join("sealed.eml");
            std::fs::write(&path, &sealed).unwrap();
            for who in ["bob@fabrikam.test", "dave@fabrikam.test"] {
                let plain = openssl(
                    &[
                        "cms",
                        "-decrypt",
                        "-in",
                        path.to_str().unwrap(),
                        "-recip",
                        &smime(&format!("{who}.crt")),
                        "-inkey",
                        &smime(&format!("{who}.key")),
                    ],
                    b"",
                );
                assert_eq!(
                    String::from_utf8_lossy(&plain),
                    String::from_utf8_lossy(INNER),
                    "{opts:?} for {who}"
                );
            }
            // What OpenSSL sees in the structure.
            let info = openssl(
                &["cms", "-cmsout", "-print", "-in", path.to_str().unwrap()],
                b"",
            );
            let info = String::from_utf8_lossy(&info);
            match key_transport {
                KeyTransport::RsaOaep => {
                    assert!(info.contains("rsaesOaep"), "{info}");
                    assert!(info.contains("sha256"), "{info}");
                }
                KeyTransport::RsaPkcs1 => assert!(info.contains("rsaEncryption"), "{info}"),
            }
            match algorithm {
                ContentAlgorithm::Aes256Cbc => assert!(info.contains("aes-256-cbc"), "{info}"),
                ContentAlgorithm::Aes256Gcm => assert!(info.contains("aes-256-gcm"), "{info}"),
            }
        }
    }
}

/// Encrypts `INNER` for bob with `openssl cms -encrypt` and extra arguments.
fn openssl_encrypt(extra: &[&str]) -> Vec<u8> {
    // -keyopt applies to the -recip before it.
    let bob = smime("bob@fabrikam.test.crt");
    let mut args = vec!["cms", "-encrypt", "-binary", "-recip", &bob];
    args.extend_from_slice(extra);
    openssl(&args, INNER)
}

#[test]
fn we_open_what_openssl_encrypts() {
    let cases: &[(&str, &[&str])] = &[
        ("pkcs1 aes256", &["-aes256"]),
        (
            "oaep sha1",
            &["-aes256", "-keyopt", "rsa_padding_mode:oaep"],
        ),
        (
            "oaep sha256",
            &[
                "-aes256",
                "-keyopt",
                "rsa_padding_mode:oaep",
                "-keyopt",
                "rsa_oaep_md:sha256",
            ],
        ),
        ("stream pkcs1", &["-aes256", "-stream"]),
        (
            "stream oaep",
            &["-aes256", "-stream", "-keyopt", "rsa_padding_mode:oaep"],
        ),
        ("aes128", &["-aes128"]),
        ("gcm", &["-aes-256-gcm"]),
        ("gcm stream", &["-aes-256-gcm", "-stream"]),
    ];
    let bob = key("bob@fabrikam.test");
    for (name, extra) in cases {
        let mut args = extra.to_vec();
        args.extend_from_slice(&[
            "-from",
            "alice@contoso.test",
            "-to",
            "bob@fabrikam.test",
            "-subject",
            "[secure] from openssl",
        ]);
        let sealed = openssl_encrypt(&args);
        let opened = decrypt_message(&sealed, &bob).unwrap_or_else(|e| panic!("{name}: {e}"));
        let text = String::from_utf8_lossy(&opened);
        assert!(opened.ends_with(INNER), "{name}: {text}");
        assert!(text.starts_with("To: bob@fabrikam.test"), "{name}: {text}");
        assert!(
            text.contains("\nSubject: [secure] from openssl"),
            "{name}: {text}"
        );
        assert!(!text.contains("pkcs7-mime"), "{name}: {text}");

        // The same as a bare .p7m (DER or, with -stream, BER) gives the entity alone.
        let mut der_args = extra.to_vec();
        der_args.extend_from_slice(&["-outform", "DER"]);
        let p7m = openssl_encrypt(&der_args);
        let inner = decrypt_message(&p7m, &bob).unwrap_or_else(|e| panic!("{name} DER: {e}"));
        assert_eq!(inner, INNER, "{name} DER");
    }
}

#[test]
fn stream_output_is_really_indefinite_length() {
    let p7m = openssl_encrypt(&["-aes256", "-stream", "-outform", "DER"]);
    // SEQUENCE with indefinite length: 0x30 0x80.
    assert_eq!(&p7m[..2], &[0x30, 0x80]);
    let inner = decrypt_message(&p7m, &key("bob@fabrikam.test")).unwrap();
    assert_eq!(inner, INNER);
}

#[test]
fn openssl_messages_for_others_are_not_opened() {
    let sealed = openssl_encrypt(&["-aes256"]);
    let alice_key = smime("alice@contoso.test.key");
    let alice_crt = smime("alice@contoso.test.crt");
    let alice = DecryptKey::from_pem(Path::new(&alice_key), Some(Path::new(&alice_crt))).unwrap();
    let e = decrypt_message(&sealed, &alice).unwrap_err();
    let serial = openssl(
        &[
            "x509",
            "-noout",
            "-serial",
            "-in",
            &smime("bob@fabrikam.test.crt"),
        ],
        b"",
    );
    let serial = String::from_utf8_lossy(&serial)
        .trim()
        .trim_start_matches("serial=")
        .to_ascii_lowercase();
    let listed = e.to_string().replace(':', "");
    assert!(listed.contains(&serial), "{e} should name serial {serial}");
}

/// Writes a certificate for `address` issued by the fixture CA with changed parameters.
fn issue(
    dir: &Path,
    file: &str,
    address: &str,
    change: impl FnOnce(&mut rcgen::CertificateParams),
) {
    let ca = load_ca(&fixtures().join("ca.crt"), &fixtures().join("ca.key")).unwrap();
    let mut params = smime_params(address).unwrap();
    change(&mut params);
    let key = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    std::fs::write(dir.join(file), cert.pem()).unwrap();
}

fn in_2030() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_906_502_400)
}

#[test]
fn certificate_selection_skips_unusable_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let who = "erin@fabrikam.test";
    // The file named after the address has expired.
    issue(d, &format!("{who}.crt"), who, |p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    // A signing-only certificate.
    issue(d, "a-signing.crt", who, |p| {
        p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    });
    // A 1024-bit RSA certificate, made by OpenSSL.
    let weak_key = d.join("weak.key");
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:1024",
            "-nodes",
            "-keyout",
            weak_key.to_str().unwrap(),
            "-out",
            d.join("b-weak.crt").to_str().unwrap(),
            "-days",
            "7300",
            "-subj",
            &format!("/CN={who}"),
            "-addext",
            &format!("subjectAltName=email:{who}"),
            "-addext",
            "keyUsage=keyEncipherment",
        ],
        b"",
    );
    // A TLS server certificate for someone else is not even considered.
    std::fs::copy(
        fixtures().join("mx.fabrikam.test.crt"),
        d.join("c-server.crt"),
    )
    .unwrap();

    let lookup = find_certificate_explained(d, who, in_2030()).unwrap();
    assert!(lookup.found.is_none());
    let reasons: Vec<String> = lookup
        .skipped
        .iter()
        .map(|(p, r)| format!("{}: {r}", p.file_name().unwrap().to_string_lossy()))
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons[0].starts_with(&format!("{who}.crt: expired on 2021-01-01")),
        "{reasons:?}"
    );
    assert!(
        reasons[1].starts_with("a-signing.crt: keyUsage does not allow keyEncipherment"),
        "{reasons:?}"
    );
    assert!(
        reasons[2].starts_with("b-weak.crt: RSA key of 1024 bits is below"),
        "{reasons:?}"
    );

    // A good certificate under any name is found; between two, the one valid longest.
    issue(d, "d-good.crt", who, |_| {});
    issue(d, "e-longer.crt", who, |p| {
        p.not_after = rcgen::date_time_ymd(2040, 1, 1)
    });
    let found = find_certificate(d, who, in_2030()).unwrap().unwrap();
    let longest = RecipientCert::from_pem_file(&d.join("e-longer.crt")).unwrap();
    assert_eq!(found.subject(), longest.subject());
    let sealed = encrypt_message(&message(), &[found], &SmimeOptions::default()).unwrap();
    assert!(String::from_utf8_lossy(&sealed).contains("smime-type=enveloped-data"));
    // A certificate issued for another address is never chosen.
    assert!(find_certificate(d, "frank@fabrikam.test", in_2030())
        .unwrap()
        .is_none());
}

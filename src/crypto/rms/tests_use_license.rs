//! Tests of publishing license version 2 and of use licenses: encoding, strict decoding,
//! signatures, key wrapping.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::*;
use crate::crypto::keys::DecryptKey;
use crate::rules::RmsProtect;

const MSG: &[u8] =
    b"From: alice@contoso.test\r\nTo: bob@fabrikam.test\r\nSubject: s\r\n\r\nbody\r\n";
const URL: &str = "https://licensing.contoso.test/rms";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn keys() -> TenantKeys {
    TenantKeys::load_dir(&fixtures().join("keys/tenant")).unwrap()
}

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000)
}

fn request(url: Option<&str>) -> LicenseRequest {
    let action = RmsProtect {
        template: "encrypt-only".into(),
        rights: Default::default(),
        expires_after: None,
    };
    license_for(
        &action,
        "alice@contoso.test",
        &["bob@fabrikam.test".into()],
        Some("<m1@contoso.test>"),
        now(),
    )
    .with_licensing_url(url.map(str::to_string))
}

fn bob_key() -> DecryptKey {
    DecryptKey::from_pem(&fixtures().join("pki/smime/bob@fabrikam.test.key"), None).unwrap()
}

fn use_license(keys: &TenantKeys) -> UseLicense {
    let bob = std::fs::read(fixtures().join("pki/smime/bob@fabrikam.test.crt")).unwrap();
    let grant = Grant {
        license_sha256: [7; 32],
        principal: "bob@fabrikam.test".into(),
        rights: Rights::VIEW.union(Rights::REPLY),
        issued: now(),
        valid_until: now() + Duration::from_secs(3600),
        licensing_url: URL.into(),
    };
    let reader = ReaderKey::from_certificate(&bob, now()).unwrap();
    UseLicense::issue(&grant, &[0x42; 32], &reader, keys.active().unwrap()).unwrap()
}

#[test]
fn version_1_containers_written_before_version_2_still_open() {
    let seed = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/rms_container/container.bin"),
    )
    .unwrap();
    assert_eq!(seed[8], VERSION);
    let framed = parse_container(&seed).unwrap();
    let license = License::decode(framed.license).unwrap();
    assert_eq!(
        (license.version(), license.licensing_url.as_deref()),
        (1, None)
    );
    assert_eq!(license.encode(), framed.license);
    let (opened, _) = unprotect(&seed, &keys(), now(), true).unwrap();
    assert_eq!(opened, license);
    // Without a URL, today's writer still writes version 1.
    let outer = protect(MSG, keys().active().unwrap(), request(None)).unwrap();
    assert!(String::from_utf8_lossy(&outer).contains("rms; version=1;"));
}

#[test]
fn a_licensing_url_makes_a_signed_version_2_license() {
    let keys = keys();
    let c = seal_container(MSG, keys.active().unwrap(), &request(Some(URL))).unwrap();
    assert_eq!(c[8], VERSION_2);
    let framed = parse_container(&c).unwrap();
    assert!(framed
        .license
        .windows(URL.len())
        .any(|w| w == URL.as_bytes()));
    let (license, plain) = unprotect(&c, &keys, now(), false).unwrap();
    assert_eq!((license.version(), plain.as_slice()), (2, MSG));
    assert_eq!(license.licensing_url.as_deref(), Some(URL));
    assert!(license
        .summary()
        .contains(&format!("licensing service {URL}")));
    let outer = protect(MSG, keys.active().unwrap(), request(Some(URL))).unwrap();
    assert!(String::from_utf8_lossy(&outer).contains("rms; version=2;"));
    // The version byte is outside the signature: changing it is refused as unsupported.
    let mut v1 = c.clone();
    v1[8] = VERSION;
    assert!(matches!(
        unprotect(&v1, &keys, now(), false),
        Err(RmsError::Unsupported(_))
    ));
    // Every byte of the URL is signed.
    let at = c
        .windows(URL.len())
        .position(|w| w == URL.as_bytes())
        .unwrap();
    for i in at..at + URL.len() {
        let mut bad = c.clone();
        bad[i] ^= 0x20;
        assert!(matches!(
            unprotect(&bad, &keys, now(), false),
            Err(RmsError::Integrity)
        ));
    }
}

#[test]
fn licensing_urls_must_be_https_with_a_host_and_bounded() {
    for good in [URL, "https://127.0.0.1:8443", "https://[::1]:8443/x?y"] {
        assert_eq!(licensing_url_problem(good), None, "{good}");
    }
    let long = format!("https://a.test/{}", "x".repeat(MAX_URL));
    for bad in [
        "http://a.test",
        "https://",
        "https:///x",
        "https://:80",
        "ftp://a",
        &long,
    ] {
        assert!(licensing_url_problem(bad).is_some(), "{bad}");
    }
    assert!(seal_container(
        MSG,
        keys().active().unwrap(),
        &request(Some("http://a.test"))
    )
    .is_err());
    // A decoder refuses a signed license whose URL is not https.
    let c = seal_container(MSG, keys().active().unwrap(), &request(Some(URL))).unwrap();
    let mut l = License::decode(parse_container(&c).unwrap().license).unwrap();
    l.licensing_url = Some("http://licensing.contoso.test/rms".into());
    assert!(matches!(
        License::decode(&l.encode()),
        Err(RmsError::Corrupted(_))
    ));
}

#[test]
fn use_licenses_round_trip_and_verify() {
    let keys = keys();
    let ul = use_license(&keys);
    let bytes = ul.encode();
    assert!(bytes.starts_with(USE_LICENSE_MAGIC));
    let back = UseLicense::decode(&bytes).unwrap();
    assert_eq!(back, ul);
    assert_eq!(back.encode(), bytes);
    back.verify_with(&keys).unwrap();
    back.verify(&keys.active().unwrap().public()).unwrap();
    assert_eq!(back.unwrap_key(&bob_key()).unwrap().as_slice(), &[0x42; 32]);
    assert_eq!(
        back.signed().len() + 2 + back.signature().len(),
        bytes.len()
    );
}

#[test]
fn any_changed_signed_byte_fails_verification() {
    let keys = keys();
    let bytes = use_license(&keys).encode();
    let signed_len = use_license(&keys).signed().len();
    for i in 13..signed_len {
        let mut bad = bytes.clone();
        bad[i] ^= 0x01;
        match UseLicense::decode(&bad) {
            Ok(ul) => assert!(
                matches!(
                    ul.verify_with(&keys),
                    Err(RmsError::Integrity | RmsError::WrongTenantKey { .. })
                ),
                "byte {i}"
            ),
            Err(e) => assert!(matches!(e, RmsError::Corrupted(_)), "byte {i}: {e}"),
        }
    }
    let mut bad = bytes.clone();
    *bad.last_mut().unwrap() ^= 1;
    let ul = UseLicense::decode(&bad).unwrap();
    assert!(matches!(ul.verify_with(&keys), Err(RmsError::Integrity)));
}

#[test]
fn use_license_decoding_is_strict_and_never_panics() {
    let bytes = use_license(&keys()).encode();
    for cut in 0..bytes.len() {
        assert!(UseLicense::decode(&bytes[..cut]).is_err(), "cut {cut}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(
        UseLicense::decode(&longer),
        Err(RmsError::Corrupted(_))
    ));
    let mut v2 = bytes.clone();
    v2[8] = 2;
    assert!(matches!(
        UseLicense::decode(&v2),
        Err(RmsError::Unsupported(_))
    ));
    let mut magic = bytes.clone();
    magic[0] = b'X';
    assert!(matches!(
        UseLicense::decode(&magic),
        Err(RmsError::Corrupted(_))
    ));
    // A fields length pointing past the end, or short of it.
    for delta in [1u32, u32::MAX - 100] {
        let mut bad = bytes.clone();
        let n = u32::from_be_bytes(bad[9..13].try_into().unwrap()).wrapping_add(delta);
        bad[9..13].copy_from_slice(&n.to_be_bytes());
        assert!(UseLicense::decode(&bad).is_err());
    }
    // Every byte of the framing and field headers, changed, never panics.
    for i in 0..bytes.len() {
        for x in [0x01u8, 0x80, 0xff] {
            let mut bad = bytes.clone();
            bad[i] ^= x;
            let _ = UseLicense::decode(&bad);
        }
    }
}

#[test]
fn wrong_reader_keys_fail_whole() {
    let keys = keys();
    let ul = use_license(&keys);
    let dave =
        DecryptKey::from_pem(&fixtures().join("pki/smime/dave@fabrikam.test.key"), None).unwrap();
    assert!(matches!(ul.unwrap_key(&dave), Err(RmsError::ReaderKey(_))));
    let mut altered = ul.clone();
    altered.wrapped_key[10] ^= 1;
    assert!(matches!(
        altered.unwrap_key(&bob_key()),
        Err(RmsError::ReaderKey(_))
    ));
}

#[test]
fn tenant_public_keys_round_trip_through_pem() {
    let keys = keys();
    let public = keys.active().unwrap().public();
    assert_eq!(public.id(), keys.active().unwrap().id());
    let pem = public.to_pem();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
    assert_eq!(TenantPublicKey::from_pem(&pem).unwrap(), public);
    let other = TenantPublicKey::from_pem(&pem.replace("PUBLIC KEY", "CERTIFICATE"));
    assert!(other.is_err());
}

//! Tests of protected messages: round trips, tampering, wrong keys, expiry, rotation, templates.

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use super::*;
use crate::rules::{Right, RmsProtect};

const MSG: &[u8] = b"Received: from a.test\r\n\tby b.test\r\nFrom: alice@contoso.test\r\n\
To: bob@fabrikam.test\r\nCc: carol@contoso.test\r\nSubject: [protect] figures\r\n\
Date: Sun, 22 Nov 2026 11:41:37 +0000\r\nMessage-ID: <q3@contoso.test>\r\nMIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\nX-Secret: header stays inside\r\n\r\n\
Q3 numbers: \xe2\x82\xac 1.2m\r\n.\r\nend\r\n";

fn fixture_keys() -> TenantKeys {
    TenantKeys::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/keys/tenant"))
        .expect("fixture tenant keys")
}

/// A second, unrelated key (generated once per test run).
fn other_key() -> &'static [u8] {
    static KEY: OnceLock<Vec<u8>> = OnceLock::new();
    KEY.get_or_init(|| {
        use aws_lc_rs::encoding::AsDer;
        let k = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        k.as_der().unwrap().as_ref().to_vec()
    })
}

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000)
}

fn action(template: &str, expires: Option<Duration>) -> RmsProtect {
    RmsProtect {
        template: template.into(),
        rights: Default::default(),
        expires_after: expires,
    }
}

fn request(expires: Option<Duration>) -> LicenseRequest {
    license_for(
        &action("do-not-forward", expires),
        "alice@contoso.test",
        &["bob@fabrikam.test".into(), "carol@contoso.test".into()],
        Some("<q3@contoso.test>"),
        now(),
    )
}

#[test]
fn round_trip_is_byte_exact_and_outer_keeps_routing_fields() {
    let keys = fixture_keys();
    let tenant = keys.active().unwrap();
    let outer = protect(MSG, tenant, request(None)).unwrap();
    let text = String::from_utf8(outer.clone()).unwrap();
    for f in [
        "From: alice@contoso.test\r\n",
        "To: bob@fabrikam.test\r\n",
        "Cc: carol",
        "Subject: [protect] figures\r\n",
        "Message-ID: <q3@contoso.test>\r\n",
        "Date: Sun",
        "Received: from a.test\r\n\tby b.test\r\n",
        "filename=\"message.sealed\"",
    ] {
        assert!(text.contains(f), "{f} missing in\n{text}");
    }
    assert!(!text.contains("X-Secret"));
    assert!(!text.contains("Q3 numbers"));
    // The notice tells any recipient, inside or outside, who sent it and how it opens.
    for line in [
        "alice@contoso.test sent you a protected message (template \"do-not-forward\").\r\n",
        "tenant key of the sender's organisation (contoso.test). To read it, ask alice@contoso.test\r\n",
        "  sealpost decrypt --tenant-key <tenant key directory> <this message>\r\n",
    ] {
        assert!(text.contains(line), "{line} missing in\n{text}");
    }
    assert!(!text.contains("your organisation"));
    assert!(is_protected(&outer));
    let (license, plain) = unprotect(&outer, &keys, now(), false).unwrap();
    assert_eq!(plain, MSG);
    assert_eq!(license.template, "do-not-forward");
    assert_eq!(license.issuer, "alice@contoso.test");
    assert_eq!(license.message_id.as_deref(), Some("<q3@contoso.test>"));
    assert_eq!(license.tenant_key_hex(), tenant.id_hex());
    assert!(matches!(
        protect(&outer, tenant, request(None)),
        Err(RmsError::AlreadyProtected)
    ));
}

#[test]
fn aes128_and_lf_messages_round_trip() {
    let keys = fixture_keys();
    let mut req = request(None);
    req.algorithm = RmsAlgorithm::Aes128Cbc;
    let msg = b"From: a@b.test\nSubject: lf\n\nbody\n";
    let outer = protect(msg, keys.active().unwrap(), req).unwrap();
    assert!(!outer.windows(2).any(|w| w == b"\r\n"));
    let (license, plain) = unprotect(&outer, &keys, now(), false).unwrap();
    assert_eq!(license.algorithm, RmsAlgorithm::Aes128Cbc);
    assert_eq!(plain, msg);
    // Fresh content key and IV each time.
    let a = seal_container(msg, keys.active().unwrap(), &request(None)).unwrap();
    let b = seal_container(msg, keys.active().unwrap(), &request(None)).unwrap();
    assert_ne!(a, b);
}

#[test]
fn every_flipped_bit_is_an_integrity_failure() {
    let keys = fixture_keys();
    let container = seal_container(MSG, keys.active().unwrap(), &request(None)).unwrap();
    let f = parse_container(&container).unwrap();
    let lic_start = 8 + 1 + 32 + 4;
    let sig_start = lic_start + f.license.len() + 2;
    let ct_start = sig_start + f.signature.len() + 8;
    assert_eq!(container.len(), ct_start + f.ciphertext.len());
    let license = License::decode(f.license).unwrap();
    assert_eq!(license.encode(), f.license);
    // Every bit of the key id and license, a sample of the signature and ciphertext.
    let mut positions: Vec<usize> = (9..41)
        .chain(lic_start..lic_start + f.license.len())
        .collect();
    positions.extend((sig_start..sig_start + f.signature.len()).step_by(7));
    positions.extend((ct_start..container.len()).step_by(5));
    positions.push(container.len() - 1);
    let mut count = 0;
    for &pos in &positions {
        let bits: &[u8] = if pos < 41 || pos % 11 == 0 {
            &[0, 3, 7]
        } else {
            &[pos as u8 % 8]
        };
        for &bit in bits {
            let mut bad = container.clone();
            bad[pos] ^= 1 << bit;
            match unprotect(&bad, &keys, now(), false) {
                Err(RmsError::Integrity) => count += 1,
                other => panic!("bit {bit} of byte {pos}: {:?}", other.map(|(l, _)| l)),
            }
        }
    }
    assert!(count > 700, "{count}");
}

#[test]
fn framing_damage_is_reported_not_panicking() {
    let keys = fixture_keys();
    let container = seal_container(MSG, keys.active().unwrap(), &request(None)).unwrap();
    for cut in [0, 5, 9, 40, 44, 100, container.len() - 1] {
        let r = unprotect(&container[..cut], &keys, now(), false);
        assert!(
            matches!(r, Err(RmsError::Corrupted(_) | RmsError::NotProtected)),
            "cut {cut}: {:?}",
            r.map(|(l, _)| l)
        );
    }
    let mut v2 = container.clone();
    v2[8] = 2;
    assert!(matches!(
        unprotect(&v2, &keys, now(), false),
        Err(RmsError::Unsupported(_))
    ));
    let mut longer = container.clone();
    longer.push(0);
    assert!(matches!(
        unprotect(&longer, &keys, now(), false),
        Err(RmsError::Corrupted(_))
    ));
    assert!(matches!(
        unprotect(MSG, &keys, now(), false),
        Err(RmsError::NotProtected)
    ));
}

#[test]
fn wrong_tenant_key_names_both_ids() {
    let keys = fixture_keys();
    let other = TenantKeys::single(TenantKey::from_pkcs8(other_key()).unwrap());
    let outer = protect(MSG, keys.active().unwrap(), request(None)).unwrap();
    let e = unprotect(&outer, &other, now(), false).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains(&keys.ids()[0]) && text.contains(&other.ids()[0]),
        "{text}"
    );
    assert!(text.starts_with("protected with tenant key "), "{text}");
    assert_eq!(e.exit_code(), 11);
}

#[test]
fn expired_licenses_are_refused_unless_ignored() {
    let keys = fixture_keys();
    let outer = protect(
        MSG,
        keys.active().unwrap(),
        request(Some(Duration::from_secs(86400))),
    )
    .unwrap();
    assert!(unprotect(&outer, &keys, now() + Duration::from_secs(86399), false).is_ok());
    let later = now() + Duration::from_secs(86400 * 2);
    let e = unprotect(&outer, &keys, later, false).unwrap_err();
    assert!(
        e.to_string().contains("2026-11-17T") || e.to_string().contains("expired on"),
        "{e}"
    );
    match e {
        RmsError::Expired { at } => assert_eq!(at, now() + Duration::from_secs(86400)),
        other => panic!("{other:?}"),
    }
    let (_, plain) = unprotect(&outer, &keys, later, true).unwrap();
    assert_eq!(plain, MSG);
}

#[test]
fn rotation_keeps_old_messages_readable() {
    let dir = tempfile::tempdir().unwrap();
    let first = generate_tenant_key(dir.path(), 2048, now()).unwrap();
    let keys = TenantKeys::load_dir(dir.path()).unwrap();
    let before = protect_active(MSG, &keys, request(None)).unwrap();
    let second = generate_tenant_key(dir.path(), 2048, now()).unwrap();
    // A new key does not take over until activated.
    assert_eq!(
        TenantKeys::load_dir(dir.path())
            .unwrap()
            .active()
            .unwrap()
            .id_hex(),
        first
    );
    assert_eq!(
        activate_tenant_key(dir.path(), &second[..12]).unwrap(),
        second
    );
    let keys = TenantKeys::load_dir(dir.path()).unwrap();
    assert_eq!(keys.active().unwrap().id_hex(), second);
    let after = protect_active(MSG, &keys, request(None)).unwrap();
    let (l1, p1) = unprotect(&before, &keys, now(), false).unwrap();
    let (l2, p2) = unprotect(&after, &keys, now(), false).unwrap();
    assert_eq!((p1.as_slice(), p2.as_slice()), (MSG, MSG));
    assert_eq!(
        (l1.tenant_key_hex(), l2.tenant_key_hex()),
        (first.clone(), second.clone())
    );
    let list = list_tenant_keys(dir.path()).unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list.iter().filter(|k| k.active).count(), 1);
    assert!(list.iter().all(|k| k.bits == 2048 && k.created.is_some()));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join(format!("{first}.pem")))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(activate_tenant_key(dir.path(), "0000000000").is_err());
    assert!(generate_tenant_key(dir.path(), 1024, now()).is_err());
}

#[test]
fn templates_and_rule_rights() {
    let recipients = vec!["Bob@Fabrikam.test".to_string()];
    let r = license_for(
        &action("encrypt-only", None),
        "alice@contoso.test",
        &recipients,
        None,
        now(),
    );
    assert_eq!(
        r.rights["bob@fabrikam.test"].names(),
        ["VIEW", "REPLY", "REPLYALL", "FORWARD", "PRINT", "EXTRACT"]
    );
    assert_eq!(r.rights["alice@contoso.test"], Rights::OWNER);
    assert_eq!(r.expires, None);
    let mut a = action("do-not-forward", Some(Duration::from_secs(30 * 86400)));
    a.rights
        .insert("*@fabrikam.test".into(), vec![Right::View, Right::Print]);
    a.rights
        .insert("bob@fabrikam.test".into(), vec![Right::View]);
    a.rights.insert("*".into(), vec![Right::View]);
    let r = license_for(&a, "alice@contoso.test", &recipients, Some("<m@x>"), now());
    assert_eq!(r.rights["bob@fabrikam.test"], Rights::VIEW);
    assert_eq!(r.rights[ANYONE], Rights::VIEW);
    assert_eq!(r.expires, Some(now() + Duration::from_secs(30 * 86400)));
    let keys = fixture_keys();
    let outer = protect(MSG, keys.active().unwrap(), r).unwrap();
    let (l, _) = unprotect(&outer, &keys, now(), false).unwrap();
    assert_eq!(l.rights_of("BOB@fabrikam.test").names(), ["VIEW", "PRINT"]);
    assert_eq!(l.rights_of("alice@contoso.test").names().len(), 7);
    assert_eq!(l.rights_of("eve@evil.test"), Rights::VIEW);
    let summary = l.summary();
    assert!(
        summary.contains("*@fabrikam.test: VIEW, PRINT") && summary.contains("expires 20"),
        "{summary}"
    );
}

#[test]
fn license_decoding_is_strict() {
    let keys = fixture_keys();
    let container = seal_container(MSG, keys.active().unwrap(), &request(None)).unwrap();
    let lic = parse_container(&container).unwrap().license.to_vec();
    let mut trailing = lic.clone();
    trailing.push(0x0c);
    assert!(License::decode(&trailing).is_err());
    assert!(License::decode(&lic[..lic.len() - 1]).is_err());
    assert!(License::decode(&[]).is_err());
    assert!(matches!(
        License::decode(&[0x20, 0, 0, 0, 0]),
        Err(RmsError::Unsupported(_))
    ));
}

#[test]
fn a_forged_marker_does_not_avoid_protection() {
    let keys = fixture_keys();
    let forged = b"X-Sealpost-Protected: rms; version=1\r\nFrom: a@b.test\r\n\r\nsecret\r\n";
    assert!(!is_protected(forged));
    let outer = protect(forged, keys.active().unwrap(), request(None)).unwrap();
    assert!(!outer.windows(6).any(|w| w == b"secret"));
    assert!(is_protected(&outer));
    let (_, plain) = unprotect(&outer, &keys, now(), false).unwrap();
    assert_eq!(plain, forged);
}

#[test]
fn times_beyond_year_9999_are_refused_not_panicking() {
    // Found by the rms_container fuzz target: a huge issue time panicked in the summary.
    let keys = fixture_keys();
    let container = seal_container(MSG, keys.active().unwrap(), &request(None)).unwrap();
    let mut l = License::decode(parse_container(&container).unwrap().license).unwrap();
    l.issued = u64::MAX;
    assert!(matches!(
        License::decode(&l.encode()),
        Err(RmsError::Corrupted(_))
    ));
    l.issued = 0;
    l.expires = Some(253_402_300_800);
    assert!(matches!(
        License::decode(&l.encode()),
        Err(RmsError::Corrupted(_))
    ));
    l.expires = Some(253_402_300_799);
    let ok = License::decode(&l.encode()).unwrap();
    assert!(
        ok.summary().contains("expires 9999-12-31T23:59:59Z"),
        "{}",
        ok.summary()
    );
    let far = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(u32::MAX) * 100);
    assert!(format_time(far).contains("after 1970") || format_time(far).starts_with("99"));
}
